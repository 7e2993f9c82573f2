"""The bench's own laboratory for list changes: a real LiteLLM proxy behind a front whose model list
changes at will, slow prompts, an availability probe, and the naive ways to apply a change.

Changing a real LiteLLM's list means restarting it (15 s or more), far too slow for 50 changes.
So the sidecar follows a `Front` instead: `GET /v1/models` answers the list the benchmark sets,
in the OpenAI shape, and every other request (`/model/info`, chat completions, streaming ones
too) goes to the real LiteLLM behind it, whose wildcard route `openai/*` answers any
`openai/<name>` and whose `slow` model streams from `fake_upstream` for as long as asked.
"""

from __future__ import annotations

import math
from collections import Counter
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from sidecar.catalog import Catalog, ModelInfo
from sidecar.opencode.config import dump_config, render_config, write_atomically
from sidecar.settings import Settings
from tests.support import fake_upstream
from tests.support import litellm_proxy as lp
from tests.support.opencode_api import create_session, prompt
from tests.support.opencode_process import OpencodeProcess, start_opencode

WILDCARD = lp.model_entry("openai/*", {"model": "openai/*", "api_key": "x", "mock_response": "ok"})
SLOW = "slow"
# Headers that belong to one hop, or that the front sets itself.
_HOP = {"host", "connection", "keep-alive", "transfer-encoding", "content-length", "te", "trailer", "upgrade",
        "proxy-connection", "proxy-authorization", "proxy-authenticate"}


# --- Figures --------------------------------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), on a non-empty list."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def distribution(values: list[float], unit: str = "s", scale: float = 1.0, digits: int = 3) -> dict[str, float | None]:
    """min, p50, p90, max and mean of `values` (times `scale`), each named with `unit`."""
    names = ("min", "p50", "p90", "max", "mean")
    if not values:
        return {f"{name}_{unit}": None for name in names}
    scaled = [value * scale for value in values]
    figures = (min(scaled), percentile(scaled, 0.5), percentile(scaled, 0.9), max(scaled), sum(scaled) / len(scaled))
    return {f"{name}_{unit}": round(figure, digits) for name, figure in zip(names, figures, strict=True)}


# --- The front ------------------------------------------------------------------------------------


class Front(ThreadingHTTPServer):
    """`GET /v1/models` from `models`; everything else forwarded to `target`, streamed as it comes."""

    daemon_threads = True

    def __init__(self, target: str, models: list[str]) -> None:
        super().__init__(("127.0.0.1", 0), _FrontHandler)
        self.target = target
        self._models = list(models)
        self._lock = threading.Lock()
        self.list_requests = 0
        self.forwarded: Counter[str] = Counter()  # requests passed to LiteLLM, by path
        # A read timeout above the longest stream's gap between chunks; no proxy from the environment.
        self.http = httpx.Client(timeout=httpx.Timeout(10.0, read=120.0), trust_env=False)
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    @property
    def models(self) -> list[str]:
        with self._lock:
            return list(self._models)

    def set_models(self, models: list[str]) -> float:
        """Answer `models` from now on; returns the monotonic time the change took effect."""
        with self._lock:
            self._models = list(models)
            return time.monotonic()

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(5)
        self.http.close()


class _FrontHandler(BaseHTTPRequestHandler):
    server: Front
    # HTTP/1.0: every answer ends by closing the connection, so a stream needs no chunked framing.
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.split("?")[0] == "/v1/models":
            self.server.list_requests += 1
            data = [{"id": model, "object": "model", "created": 1677610602, "owned_by": "openai"}
                    for model in self.server.models]
            body = httpx.Response(200, json={"object": "list", "data": data}).content
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self._forward()

    def do_POST(self) -> None:
        self._forward()

    def _forward(self) -> None:
        self.server.forwarded[self.path.split("?")[0]] += 1
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {name: value for name, value in self.headers.items() if name.lower() not in _HOP}
        request = self.server.http.build_request(self.command, self.server.target + self.path, headers=headers, content=body)
        try:
            response = self.server.http.send(request, stream=True)
        except httpx.HTTPError as exc:
            self.send_error(502, f"front: {type(exc).__name__}")
            return
        try:
            self.send_response(response.status_code)
            for name, value in response.headers.multi_items():
                if name.lower() not in _HOP:
                    self.send_header(name, value)
            self.send_header("Connection", "close")
            self.end_headers()
            for chunk in response.iter_raw():
                self.wfile.write(chunk)
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, httpx.HTTPError):
            pass  # either side gave up (an aborted prompt, a killed opencode)
        finally:
            response.close()


# --- The laboratory: upstream, LiteLLM, front ----------------------------------------------------


@dataclass
class Lab:
    upstream: fake_upstream.FakeUpstream
    proxy: lp.LiteLLMProxy
    front: Front
    # A static file server in a process of its own, probed beside opencode: when it too is slow to
    # answer, the machine stalled (two shared cores), not opencode.
    control_url: str

    def slow_stream(self, seconds: float, delay: float) -> None:
        """Make every `slow` answer from now on stream for about `seconds`, a chunk every `delay`."""
        self.upstream.delay = delay
        self.upstream.chunks = max(2, math.ceil(seconds / delay) + 1)


@contextmanager
def lab(workdir: Path, models: list[str], log: Callable[[str], None]) -> Iterator[Lab]:
    """A fake upstream, a real LiteLLM in front of it and a `Front` listing `models`; all stopped after."""
    upstream = fake_upstream.start_in_thread(delay=0.5, chunks=4)
    proxy = front = control = None
    try:
        control, control_url = _start_control(workdir / "control")
        started = time.monotonic()
        proxy = lp.start_proxy(workdir / "litellm", [WILDCARD, lp.slow_model(upstream.base_url, SLOW)])
        log(f"LiteLLM up in {time.monotonic() - started:.1f} s")
        front = Front(proxy.url, models)
        yield Lab(upstream, proxy, front, control_url)
    finally:
        if front is not None:
            front.close()
        if control is not None:
            _stop_group(control)
        if proxy is not None:
            lp.stop_proxy(proxy)
        upstream.shutdown()
        upstream.server_close()


def _start_control(directory: Path) -> tuple[subprocess.Popen, str]:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ok").write_text("ok\n")
    port = lp.free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(directory), str(port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/ok", timeout=1, trust_env=False).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            _stop_group(process)
            raise RuntimeError("the control server did not start")
        time.sleep(0.05)


def _stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to the group, a grace, then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, None)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(wait)
            break
        except subprocess.TimeoutExpired:
            continue
    process.wait()


# --- Prompts and probes --------------------------------------------------------------------------


@dataclass
class PromptRun:
    """One blocking prompt in a thread of its own, and how it ended."""

    client: httpx.Client
    session: str
    directory: str
    model: str
    outcome: str = "running"  # "ok", "error:<name>", "http:<status>", "failed:<exception>", "unfinished"
    seconds: float | None = None
    finished_at: float | None = None  # monotonic
    _thread: threading.Thread | None = None

    def start(self) -> PromptRun:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        started = time.monotonic()
        try:
            response = prompt(self.client, self.session, self.directory, self.model, "take your time")
        except httpx.HTTPError as exc:
            self.outcome = f"failed:{type(exc).__name__}"
        else:
            if response.status_code != 200:
                self.outcome = f"http:{response.status_code}"
            else:
                error = response.json().get("info", {}).get("error")
                self.outcome = f"error:{error.get('name', 'unknown')}" if error else "ok"
        self.finished_at = time.monotonic()
        self.seconds = self.finished_at - started

    def join(self, timeout: float) -> None:
        assert self._thread is not None
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.outcome = "unfinished"

    @property
    def aborted(self) -> bool:
        return self.outcome != "ok"


def answers(client: httpx.Client, directory: str, model: str) -> bool:
    """Whether a blocking prompt with `model` in a fresh session answers without an error."""
    try:
        session = create_session(client, directory)
        response = prompt(client, session, directory, model, "hi")
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and response.json().get("info", {}).get("error") is None


@dataclass(frozen=True)
class Check:
    path: str
    timeout: float
    params: dict[str, str] | None = None
    timed: bool = False  # keep the times of its good answers


class AvailabilityProbe:
    """Runs `checks` in order every `interval`; a round fails at the first check that fails (an
    error, a status other than 200, or no answer within its timeout). The server counts as
    unavailable from the start of a failed round to the start of the next good one."""

    def __init__(
        self, url: str, checks: list[Check], auth: tuple[str, str] | None = None, interval: float = 0.1
    ) -> None:
        self._client = httpx.Client(base_url=url, auth=auth, trust_env=False)
        self._checks = checks
        self.timed_seconds: list[float] = []
        self.failures: Counter[str] = Counter()  # why rounds failed: "/global/health ReadTimeout", ...
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._down_since: float | None = None
        self.unavailable_s = 0.0
        self.longest_s = 0.0
        self.rounds = 0
        self.failed_rounds = 0

    @classmethod
    def of_opencode(cls, url: str, password: str, directory: str) -> AvailabilityProbe:
        """`GET /global/health` within 1 s, then `GET /config/providers` for `directory` within 5 s:
        the first request after a reload rebuilds the directory's instance, which is slow, not down."""
        checks = [Check("/global/health", 1.0), Check("/config/providers", 5.0, {"directory": directory}, timed=True)]
        return cls(url, checks, ("opencode", password))

    def start(self) -> AvailabilityProbe:
        self._thread.start()
        return self

    def _ok(self) -> bool:
        for check in self._checks:
            started = time.monotonic()
            try:
                answer = self._client.get(check.path, params=check.params, timeout=check.timeout)
            except httpx.HTTPError as exc:
                self.failures[f"{check.path} {type(exc).__name__}"] += 1
                return False
            if answer.status_code != 200:
                self.failures[f"{check.path} HTTP {answer.status_code}"] += 1
                return False
            if check.timed:
                self.timed_seconds.append(time.monotonic() - started)
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            ok = self._ok()
            self.rounds += 1
            if ok and self._down_since is not None:
                self._close_outage(started)
            elif not ok:
                self.failed_rounds += 1
                if self._down_since is None:
                    self._down_since = started
            self._stop.wait(max(0.0, self._interval - (time.monotonic() - started)))

    def _close_outage(self, until: float) -> None:
        assert self._down_since is not None
        outage = until - self._down_since
        self.unavailable_s += outage
        self.longest_s = max(self.longest_s, outage)
        self._down_since = None

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        if self._down_since is not None:
            self._close_outage(time.monotonic())
        self._client.close()


# --- The naive ways to apply a list change -------------------------------------------------------


def render_for(front: Front, models: list[str]) -> str:
    """What the sidecar would write for `models` behind `front`: the same renderer, no base config,
    in direct mode (no sidecar to custody the key: the naive opencode talks to the gateway itself)."""
    settings = Settings(gateway_url=front.url, gateway_api_key=lp.MASTER_KEY, key_custody=False)
    catalog = Catalog([ModelInfo(id=model, display_name=model) for model in models])
    return dump_config(render_config({settings.gateways[0].id: catalog}, settings, {}))


@dataclass
class NaiveOpencode:
    """opencode started on its own, reading a config this controller writes; `apply` is what it
    does on every change it sees, at once, generating prompts or not."""

    workdir: Path
    front: Front
    strategy: str  # "restart" or "dispose"
    poll_interval: float = 1.0
    log: Callable[[str], None] = lambda message: None
    password: str = field(default_factory=lambda: "bench-" + os.urandom(8).hex())
    process: OpencodeProcess | None = None
    applied: int = 0
    apply_seconds: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _seen: list[str] | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def config_path(self) -> Path:
        return self.workdir / "opencode.json"

    @property
    def url(self) -> str:
        assert self.process is not None
        return self.process.url

    def start(self) -> NaiveOpencode:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._seen = self.front.models
        write_atomically(self.config_path, render_for(self.front, self._seen))
        self.process = self._spawn()
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()
        return self

    def _spawn(self, port: int | None = None) -> OpencodeProcess:
        env = {"SIDECAR_GATEWAY_API_KEY": lp.MASTER_KEY}
        return start_opencode(self.workdir, self.config_path, self.password, env, port=port)

    def _follow(self) -> None:
        """Poll the list like the sidecar does; on a change write the config and apply it at once."""
        while not self._stop.wait(self.poll_interval):
            models = self.front.models
            if sorted(models) == sorted(self._seen or []):
                continue
            self._seen = models
            write_atomically(self.config_path, render_for(self.front, models))
            started = time.monotonic()
            try:
                self._apply()
            except Exception as exc:  # noqa: BLE001 - a benchmark reports, it does not stop
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self.applied += 1
            self.apply_seconds.append(time.monotonic() - started)
            self.log(f"naive {self.strategy}: config {self.applied} applied in {time.monotonic() - started:.2f} s")

    def _apply(self) -> None:
        assert self.process is not None
        if self.strategy == "restart":
            port = int(self.process.url.rsplit(":", 1)[1])
            started = time.monotonic()
            self.process.stop()
            self.log(f"naive restart: opencode stopped in {time.monotonic() - started:.2f} s")
            self.process = self._spawn(port)
        else:
            with self.process.client(timeout=10) as client:
                client.post("/global/dispose").raise_for_status()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(90)
        if self.process is not None:
            self.process.stop()
