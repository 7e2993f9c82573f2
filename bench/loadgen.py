"""A closed-loop HTTP load generator: wrk when it is on PATH, else an asyncio one of our own.

Both run `connections` keep-alive connections against one URL for a fixed time, each sending its
next request as soon as the last answer is read, and report requests per second and the 50th
and 99th percentile latencies. The Python one speaks HTTP/1.1 over raw asyncio streams (on uvloop
when it is installed) rather than through an HTTP client library: a client's own overhead would
otherwise be the ceiling of every figure measured with it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit


@dataclass
class LoadResult:
    tool: str  # "wrk" or "python-asyncio"
    connections: int
    seconds: float
    requests: int
    errors: int  # non-2xx answers and failed connections
    rps: float
    p50_ms: float
    p99_ms: float


def run_load(
    url: str,
    *,
    connections: int,
    seconds: float,
    headers: dict[str, str] | None = None,
    warmup: float = 0.5,
    tool: str | None = None,
) -> LoadResult:
    """Load `url` with GET requests; `tool` forces "wrk" or "python" (by default wrk if installed)."""
    tool = tool or ("wrk" if shutil.which("wrk") else "python")
    if tool == "wrk":
        if warmup:
            _wrk(url, connections, warmup, headers or {})
        return _wrk(url, connections, seconds, headers or {})
    return run_python_load(url, connections=connections, seconds=seconds, headers=headers, warmup=warmup)


# --- wrk ------------------------------------------------------------------------------------------


def _wrk(url: str, connections: int, seconds: float, headers: dict[str, str]) -> LoadResult:
    # One thread per core at most (a thread serves several connections), never more than connections.
    threads = max(1, min(connections, os.cpu_count() or 1))
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "--timeout", "10s"]
    # Headers go in a Lua script, not `-H`: a key on a command line shows in every `ps`.
    with tempfile.TemporaryDirectory(prefix="wrk-") as scratch:
        script = Path(scratch) / "headers.lua"
        script.write_text("".join(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}\n" for k, v in headers.items()))
        script.chmod(0o600)
        output = subprocess.run(
            [*command, "-s", str(script), url], capture_output=True, text=True, timeout=seconds + 60, check=True
        ).stdout
    return parse_wrk(output, connections)


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS[unit]


def parse_wrk(output: str, connections: int) -> LoadResult:
    """The figures of `wrk --latency`'s report."""
    percentiles = {
        int(p): _ms(value, unit) for p, value, unit in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.M)
    }
    totals = re.search(r"^\s+(\d+) requests in ([\d.]+)(us|ms|s|m),", output, re.M)
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    if not (totals and rps and 50 in percentiles and 99 in percentiles):
        raise ValueError(f"unexpected wrk output:\n{output}")
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", output))
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    return LoadResult(
        tool="wrk",
        connections=connections,
        seconds=_ms(totals.group(2), totals.group(3)) / 1000,
        requests=int(totals.group(1)),
        errors=errors,
        rps=float(rps.group(1)),
        p50_ms=percentiles[50],
        p99_ms=percentiles[99],
    )


# --- the asyncio generator ------------------------------------------------------------------------


def run_python_load(
    url: str, *, connections: int, seconds: float, headers: dict[str, str] | None = None, warmup: float = 0.5
) -> LoadResult:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_load(url, connections, seconds, headers or {}, warmup))
    return uvloop.run(_load(url, connections, seconds, headers or {}, warmup))


class _Tally:
    def __init__(self, measure_from: float, measure_until: float) -> None:
        self.measure_from, self.measure_until = measure_from, measure_until
        self.latencies: list[float] = []
        self.errors = 0

    def record(self, started: float, finished: float, ok: bool) -> None:
        # Only answers that complete inside the measured window count; the warm-up's don't.
        if self.measure_from <= finished <= self.measure_until:
            self.latencies.append(finished - started)
            if not ok:
                self.errors += 1


async def _load(url: str, connections: int, seconds: float, headers: dict[str, str], warmup: float) -> LoadResult:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"GET {target or '/'} HTTP/1.1", f"Host: {parts.netloc}", "Accept: */*"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    start = time.perf_counter()
    tally = _Tally(start + warmup, start + warmup + seconds)
    await asyncio.gather(*(_connection(host, port, request, tally) for _ in range(connections)))
    latencies = sorted(tally.latencies)
    return LoadResult(
        tool="python-asyncio",
        connections=connections,
        seconds=seconds,
        requests=len(latencies),
        errors=tally.errors,
        rps=len(latencies) / seconds,
        p50_ms=_percentile(latencies, 50) * 1000,
        p99_ms=_percentile(latencies, 99) * 1000,
    )


def _percentile(ordered: list[float], p: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


async def _connection(host: str, port: int, request: bytes, tally: _Tally) -> None:
    writer = None
    try:
        while time.perf_counter() < tally.measure_until:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            started = time.perf_counter()
            try:
                writer.write(request)
                status, keep_alive = await _read_response(reader)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                tally.record(started, time.perf_counter(), ok=False)
                writer.close()
                writer = None
                continue
            tally.record(started, time.perf_counter(), ok=200 <= status < 300)
            if not keep_alive:
                writer.close()
                writer = None
    finally:
        if writer is not None:
            writer.close()


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one whole answer; its status, and whether the connection stays open."""
    status_line = await reader.readuntil(b"\r\n")
    status = int(status_line.split(b" ", 2)[1])
    length, chunked, keep_alive = 0, False, True
    while True:
        line = await reader.readuntil(b"\r\n")
        if line == b"\r\n":
            break
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value:
            chunked = True
        elif name == b"connection" and value == b"close":
            keep_alive = False
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status, keep_alive
