"""The README's demo command works as a person uses it: `scripts/demo` runs its steps, prints how to
use opencode's own client against the sidecar, and those printed commands work while it runs;
Ctrl-C stops it."""

from __future__ import annotations

import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import httpx
import pytest

from tests.support.sidecar_process import ROOT

pytestmark = pytest.mark.integration

ADDED_ANSWER = "Hello from gpt-5.5, added to the gateway a moment ago (a mock)."


def read_until(process: subprocess.Popen[str], lines: queue.Queue[str], marker: str, timeout: float) -> list[str]:
    """The demo's lines up to the one containing `marker` (read by a thread: a pipe read through
    Python's buffer can hold lines a select() no longer sees)."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while not any(marker in line for line in seen):
        try:
            seen.append(lines.get(timeout=max(0.0, deadline - time.monotonic())))
        except queue.Empty:
            raise AssertionError(f"no {marker!r} in time (exit {process.poll()}):\n" + "".join(seen)) from None
    return seen


def pump(stream: IO[str], lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line)


@pytest.mark.timeout(420)
def test_the_demo_runs_its_steps_and_its_printed_client_commands_work(tmp_path: Path) -> None:
    demo = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "demo.py"), "--state", str(tmp_path / "demo")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
    )
    lines_read: queue.Queue[str] = queue.Queue()
    assert demo.stdout is not None
    reader = threading.Thread(target=pump, args=(demo.stdout, lines_read), daemon=True)
    reader.start()
    try:
        lines = read_until(demo, lines_read, "Ctrl-C stops the demo.", timeout=300)
        output = "".join(lines)
        assert "fails" in output and "added to the gateway a moment ago" in output, output
        attach = next(line.strip() for line in lines if " attach http" in line)
        run = next(line.strip() for line in lines if " run --attach " in line)
        assert "no key" in output, output

        # The attach line names the pinned binary this checkout installed, and the sidecar's address.
        binary, verb, url, dir_flag, directory = shlex.split(attach)
        assert Path(binary) == ROOT / "tools" / "opencode" / "node_modules" / ".bin" / "opencode"
        assert (verb, dir_flag) == ("attach", "--dir") and Path(directory).is_dir()
        assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200

        # The run line, pasted as printed: its prompt is answered by the model added during the demo.
        before = {s["id"] for s in httpx.get(f"{url}/session", params={"directory": directory}, timeout=10).json()}
        env = {**os.environ, "HOME": str(tmp_path / "home"), "OPENCODE_DISABLE_MODELS_FETCH": "1"}
        pasted = subprocess.run(
            shlex.split(run), env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
        )
        assert pasted.returncode == 0, pasted.stdout[-2000:] + pasted.stderr[-2000:]
        with httpx.Client(base_url=url, timeout=10) as client:
            (session,) = {s["id"] for s in client.get("/session", params={"directory": directory}).json()} - before
            messages = client.get(f"/session/{session}/message", params={"directory": directory}).json()
        replies = [
            "".join(part.get("text", "") for part in message["parts"] if part["type"] == "text")
            for message in messages
            if message["info"]["role"] == "assistant"
        ]
        assert replies == [ADDED_ANSWER], messages
    finally:
        demo.send_signal(signal.SIGINT)
        demo.wait(60)
        reader.join(10)
        demo.stdout.close()
    rest = "".join(lines_read.queue)
    assert demo.returncode == 0, rest
    assert "Stopped." in rest
