"""Run the real `opencode-sidecar run` as a child process of a test, and talk to it."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support import secrets_audit
from tests.support.litellm_proxy import free_port

ROOT = Path(__file__).resolve().parents[2]
OPENCODE_BIN = Path(
    os.environ.get("SIDECAR_TEST_OPENCODE", ROOT / "tools" / "opencode" / "node_modules" / ".bin" / "opencode")
)


@dataclass
class SidecarProcess:
    process: subprocess.Popen
    workdir: Path
    env: dict[str, str]
    log_path: Path
    api_url: str
    opencode_url: str
    password: str
    state_dir: Path
    directory: Path
    _stopped: bool = field(default=False)

    def opencode(self, timeout: float = 60.0) -> httpx.Client:
        return httpx.Client(base_url=self.opencode_url, auth=("opencode", self.password), timeout=timeout)

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.api_url, timeout=10.0)

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """The sidecar's JSON log lines so far, or those with one event name."""
        lines = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and (name is None or entry.get("event") == name):
                lines.append(entry)
        return lines

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def opencode_log(self) -> str:
        """opencode's own log: it names each directory it builds an instance for and each request
        it refuses, so a test can tell that a hostile request never reached it."""
        logs = sorted((self.state_dir / "opencode" / "data" / "opencode" / "log").glob("*.log"))
        return "".join(path.read_text(errors="replace") for path in logs)

    def opencode_barrier(self, scratch: Path, headers: dict[str, str] | None = None) -> None:
        """A harmless request opencode logs, in a fresh directory under `scratch`: once its line is
        in opencode's log, so is anything sent before it (or it never came)."""
        marker = scratch / f"barrier-{uuid.uuid4().hex}"
        marker.mkdir()
        answer = httpx.get(f"{self.api_url}/session", params={"directory": str(marker)}, headers=headers, timeout=30)
        assert answer.status_code == 200, answer.text
        self.wait_for(lambda: f"directory={marker}" in self.opencode_log(), 30, "the barrier in opencode's log")

    def wait_for(self, predicate, timeout: float = 30.0, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = predicate()
            if result:
                return result
            if self.process.poll() is not None:
                raise AssertionError(f"sidecar exited with {self.process.returncode}:\n{self.log_text()[-3000:]}")
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}:\n{self.log_text()[-3000:]}")

    def wait_ready(self, timeout: float = 60.0) -> None:
        def ready() -> bool:
            try:
                return httpx.get(f"{self.api_url}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        self.wait_for(ready, timeout, "/readyz")

    def wait_started(self, timeout: float = 60.0) -> None:
        """/startupz 200: the config is written (what a pod's startup probe waits for)."""

        def started() -> bool:
            try:
                return httpx.get(f"{self.api_url}/startupz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        self.wait_for(started, timeout, "/startupz")

    def opencode_pid(self) -> int:
        started = self.events("child.started")
        assert started, "the sidecar never started opencode"
        return started[-1]["pid"]

    def stop(self, grace: float = 20.0) -> int:
        if self._stopped:
            return self.process.returncode
        self._stopped = True
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        # Whatever the sidecar failed to stop goes now, so no test leaves a process behind.
        for pid in [e["pid"] for e in self.events("child.started")]:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        return self.process.returncode


def start_sidecar(
    workdir: Path,
    gateway_url: str | None,
    gateway_key: str | None,
    *,
    wait: bool = True,
    extra_env: dict[str, str] | None = None,
    open_files: int | None = None,
    **settings: str | None,
) -> SidecarProcess:
    """`gateway_url=None` with a `config=` setting follows the gateways of that file instead;
    `open_files` sets the sidecar's RLIMIT_NOFILE (soft and hard)."""
    workdir.mkdir(parents=True, exist_ok=True)
    state_dir = workdir / "state"
    directory = workdir / "project"
    directory.mkdir(exist_ok=True)
    api_port, opencode_port = free_port(), free_port()
    password = "test-password-" + os.urandom(8).hex()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
    env.update(
        {
            "HOME": str(workdir / "home"),
            "OPENCODE_DISABLE_MODELS_FETCH": "1",
            "SIDECAR_LISTEN": f"127.0.0.1:{api_port}",
            "SIDECAR_OPENCODE_PORT": str(opencode_port),
            "SIDECAR_OPENCODE_PASSWORD": password,
            "SIDECAR_OPENCODE_BIN": str(OPENCODE_BIN),
            "SIDECAR_OPENCODE_DIRECTORY": str(directory),
            "SIDECAR_STATE_DIR": str(state_dir),
            "SIDECAR_POLL_INTERVAL": "1",
            "SIDECAR_GATEWAY_RETRIES": "1",
            "SIDECAR_GATEWAY_TIMEOUT": "3",
            "SIDECAR_RESTART_BACKOFF_INITIAL": "0.1",
            "SIDECAR_RESTART_BACKOFF_MAX": "0.5",
            "SIDECAR_STOP_GRACE": "5",
            "SIDECAR_LOG_LEVEL": "debug",
        }
    )
    if gateway_url is not None:
        env["SIDECAR_GATEWAY_URL"] = gateway_url
    if gateway_key is not None:
        env["SIDECAR_GATEWAY_API_KEY"] = gateway_key
    env.update(extra_env or {})
    for name, value in settings.items():  # None takes a default setting away
        if value is None:
            env.pop(f"SIDECAR_{name.upper()}", None)
        else:
            env[f"SIDECAR_{name.upper()}"] = value
    secrets_audit.register(
        secret_values=[
            password,
            gateway_key,
            *secrets_audit.secret_env_values({**(extra_env or {}), **{k: v for k, v in env.items() if k.startswith("SIDECAR_")}}),
        ],
        directories=[workdir, Path(env["SIDECAR_STATE_DIR"])],
    )
    log_path = workdir / "sidecar.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "sidecar", "run"],
            env=env,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=None if open_files is None else _limit_open_files(open_files),
        )
    sidecar = SidecarProcess(
        process=process,
        workdir=workdir,
        env=env,
        log_path=log_path,
        api_url=f"http://127.0.0.1:{api_port}",
        opencode_url=f"http://127.0.0.1:{opencode_port}",
        password=password,
        state_dir=state_dir,
        directory=directory,
    )
    if wait:
        try:
            sidecar.wait_ready()
        except BaseException:
            sidecar.stop()
            raise
    return sidecar


def _limit_open_files(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return apply
