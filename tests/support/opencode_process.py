"""opencode started on its own, as the main container of a pod runs it: `opencode serve` reading
its config from OPENCODE_CONFIG, which a sidecar in attach mode writes."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.litellm_proxy import free_port
from tests.support.sidecar_process import OPENCODE_BIN


@dataclass
class OpencodeProcess:
    process: subprocess.Popen
    url: str
    password: str
    log_path: Path

    def client(self, timeout: float = 60.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, auth=("opencode", self.password), timeout=timeout)

    def healthy(self) -> bool:
        try:
            with self.client(timeout=2) as client:
                return client.get("/global/health").status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()


def start_opencode(workdir: Path, config_path: Path, password: str, env: dict[str, str], port: int | None = None) -> OpencodeProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    project = workdir / "project"
    project.mkdir(exist_ok=True)
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
    child_env.update(
        {
            "HOME": str(workdir / "home"),
            **{f"XDG_{kind}_HOME": str(workdir / kind.lower()) for kind in ("DATA", "CONFIG", "CACHE", "STATE")},
            "OPENCODE_CONFIG": str(config_path),
            "OPENCODE_SERVER_PASSWORD": password,
            "OPENCODE_DISABLE_MODELS_FETCH": "1",
            **env,
        }
    )
    log_path = workdir / "opencode.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [str(OPENCODE_BIN), "serve", "--hostname", "127.0.0.1", "--port", str(port)],
            cwd=project,
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    opencode = OpencodeProcess(process, f"http://127.0.0.1:{port}", password, log_path)
    deadline = time.monotonic() + 60
    while not opencode.healthy():
        if process.poll() is not None or time.monotonic() > deadline:
            opencode.stop()
            raise RuntimeError(f"opencode did not start:\n{log_path.read_text(errors='replace')[-2000:]}")
        time.sleep(0.2)
    return opencode


def opencode_processes(leader: int) -> list[int]:
    """opencode and every process of its group (what it started)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == leader:
                    found.append(int(entry.name))
            except (ProcessLookupError, PermissionError):
                continue
    return found
