"""The fleet benchmark's simulated pods: followers long-polling a hub's catalog, and pods polling a
gateway directly. Both speak HTTP/1.1 over raw asyncio streams (on uvloop when it is installed),
as bench/loadgen.py does, so that a thousand of them cost the bench little beside the servers.

A follower does what the sidecar's catalog client does: `GET /v1/catalogs/<id>?wait=<s>` with
`If-None-Match` of the version it holds, again as soon as each answer arrives, on a keep-alive
connection of its own. A direct poller does what a sidecar's poll of LiteLLM does, once: `GET
/v1/models`, then `GET /model/info`, on a new connection (at a 30 s interval LiteLLM's keep-alive
has closed the last one).
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

try:
    import uvloop
except ImportError:  # the benchmark still runs, on asyncio's own loop
    uvloop = None

# Connections opened at once: a thousand SYNs at one listen queue would measure the queue.
OPENING = 64
RETRY_AFTER_ERROR = 0.5


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[bytes, bytes]
    body: bytes
    keep_alive: bool


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    """One whole HTTP/1.1 answer (Content-Length or chunked; none for 1xx, 204 and 304)."""
    status = int((await reader.readuntil(b"\r\n")).split(b" ", 2)[1])
    headers: dict[bytes, bytes] = {}
    while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    body = b""
    if status >= 200 and status not in (204, 304):
        if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            chunks = []
            while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                chunks.append((await reader.readexactly(size + 2))[:-2])
            await reader.readuntil(b"\r\n")
            body = b"".join(chunks)
        else:
            body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
    return Answer(status, headers, body, headers.get(b"connection", b"").lower() != b"close")


def _request(url: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {urlsplit(url).netloc}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80


# --- followers of a hub ---------------------------------------------------------------------------


class Swarm:
    """`count` followers of one gateway's catalog at a hub, in a thread and event loop of their own.
    Each 200 is recorded as (version, arrival time on the monotonic clock, which every process
    shares), so that the bench can tell when the last follower knew a version."""

    def __init__(self, url: str, gateway: str, api_key: str, count: int, wait: float) -> None:
        self.url, self.count = url, count
        self._path = f"/v1/catalogs/{gateway}?wait={wait:g}"
        self._headers = {"x-api-key": api_key, "Accept": "application/json"}
        self._arrivals: dict[str, list[float]] = {}
        self._lock = threading.Lock()
        self.not_modified = 0
        self.errors: Counter[str] = Counter()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main: asyncio.Task[None] | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Swarm:
        self._thread.start()
        return self

    def arrivals(self, version: str) -> list[float]:
        with self._lock:
            return list(self._arrivals.get(version, []))

    def wait_all(self, version: str, timeout: float) -> bool:
        """Whether every follower has answered 200 with `version` within `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self._arrivals.get(version, ())) >= self.count:
                    return True
            time.sleep(0.002)
        return False

    def stop(self) -> None:
        if self._loop is not None and self._main is not None:
            self._loop.call_soon_threadsafe(self._main.cancel)
        self._thread.join(30)

    def _run(self) -> None:
        loop = uvloop.new_event_loop() if uvloop is not None else asyncio.new_event_loop()
        self._loop = loop
        try:
            self._main = loop.create_task(self._all())
            loop.run_until_complete(self._main)
        except asyncio.CancelledError:
            pass
        finally:
            loop.close()

    async def _all(self) -> None:
        opening = asyncio.Semaphore(OPENING)
        await asyncio.gather(*(self._follow(opening) for _ in range(self.count)))

    async def _follow(self, opening: asyncio.Semaphore) -> None:
        host, port = _address(self.url)
        etag: str | None = None
        writer: asyncio.StreamWriter | None = None
        try:
            while True:
                try:
                    if writer is None:
                        async with opening:
                            reader, writer = await asyncio.open_connection(host, port)
                    headers = self._headers if etag is None else {**self._headers, "If-None-Match": etag}
                    writer.write(_request(self.url, self._path, headers))
                    answer = await read_answer(reader)
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    self.errors[type(exc).__name__] += 1
                    if writer is not None:
                        writer.close()
                    writer = None
                    await asyncio.sleep(RETRY_AFTER_ERROR)
                    continue
                now = time.monotonic()
                if answer.status == 200:
                    etag = answer.headers[b"etag"].decode()
                    with self._lock:
                        self._arrivals.setdefault(etag.strip('"'), []).append(now)
                elif answer.status == 304:
                    self.not_modified += 1
                else:
                    self.errors[f"HTTP {answer.status}"] += 1
                    await asyncio.sleep(RETRY_AFTER_ERROR)
                if not answer.keep_alive:
                    writer.close()
                    writer = None
        finally:
            if writer is not None:
                writer.close()


# --- pods polling the gateway directly ------------------------------------------------------------


@dataclass
class DirectPolls:
    pollers: int
    window_s: float
    requests: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    # Every request's time, a failed one's too: a timeout counts as the timeout (a lower bound).
    seconds: list[float] = field(default_factory=list)


def poll_directly(url: str, api_key: str, pollers: int, window: float, timeout: float, seed: int = 19) -> DirectPolls:
    """`pollers` pods each polling `url` once at a random offset within `window` seconds: the
    steady state of pods polling every `window` seconds, compressed into one interval."""
    run = _poll_all(url, api_key, pollers, window, timeout, random.Random(seed))
    return uvloop.run(run) if uvloop is not None else asyncio.run(run)


async def _poll_all(url: str, api_key: str, pollers: int, window: float, timeout: float, rng: random.Random) -> DirectPolls:
    result = DirectPolls(pollers, window)
    started = time.monotonic()
    offsets = [rng.uniform(0, window) for _ in range(pollers)] if pollers > 1 else [0.0]
    await asyncio.gather(*(_poll_once(url, api_key, started + offset, timeout, result) for offset in offsets))
    return result


async def _poll_once(url: str, api_key: str, at: float, timeout: float, result: DirectPolls) -> None:
    await asyncio.sleep(max(0.0, at - time.monotonic()))
    headers = {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}
    host, port = _address(url)
    writer: asyncio.StreamWriter | None = None
    try:
        for index, path in enumerate(("/v1/models", "/model/info")):
            result.requests += 1
            started = time.monotonic()
            try:
                async with asyncio.timeout(timeout):
                    if index == 0:
                        reader, writer = await asyncio.open_connection(host, port)
                    assert writer is not None
                    writer.write(_request(url, path, headers))
                    answer = await read_answer(reader)
            except (OSError, asyncio.IncompleteReadError, ValueError, TimeoutError) as exc:
                result.seconds.append(time.monotonic() - started)
                result.errors[type(exc).__name__] += 1
                return  # the poll failed; a sidecar retries later
            result.seconds.append(time.monotonic() - started)
            if answer.status != 200:
                result.errors[f"HTTP {answer.status}"] += 1
                return
            if not answer.keep_alive and index == 0:
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
    finally:
        if writer is not None:
            writer.close()
