"""A terminal program driven as a person drives it: run in a detached tmux session, keys sent with
`send-keys`, the screen read with `capture-pane`."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest


def require_tmux() -> str:
    found = shutil.which("tmux")
    if found is None:
        pytest.skip("tmux is not installed: the real-client tests drive opencode's TUI in tmux (apt-get install tmux)")
    return found


class Tmux:
    """One program in a 200x50 session of a tmux server of its own; `kill()` (always, in a
    finally) ends both."""

    def __init__(self, command: Sequence[str], env: Mapping[str, str], cwd: Path) -> None:
        self.tmux = require_tmux()
        self.name = f"sidecar-test-{uuid.uuid4().hex[:10]}"
        # A server of its own (-L) starts with the environment it is given, which the program
        # inherits: a password passed so is on no command line.
        subprocess.run(
            [*self.command, "new-session", "-d", "-s", self.name, "-x", "200", "-y", "50", "-c", str(cwd),
             shlex.join(command)],
            env=dict(env), check=True, timeout=10,
        )

    @property
    def command(self) -> list[str]:
        return [self.tmux, "-L", self.name, "-f", "/dev/null"]

    def screen(self) -> str:
        return subprocess.run(
            [*self.command, "capture-pane", "-p", "-t", self.name], capture_output=True, text=True, timeout=10
        ).stdout

    def keys(self, *keys: str, literal: bool = False) -> None:
        subprocess.run([*self.command, "send-keys", "-t", self.name, *(["-l"] if literal else []), *keys], check=True, timeout=10)

    def type(self, text: str) -> None:
        self.keys(text, literal=True)

    def wait_for(self, shown: str | Callable[[str], bool], timeout: float = 30.0, what: str | None = None) -> str:
        """The screen once it shows `shown` (a text, or a test of the screen), polled until a deadline."""
        test = shown if callable(shown) else (lambda screen: shown in screen)
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if test(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"{what or shown!r} not shown in {timeout} s; the screen:\n{screen}")
            time.sleep(0.2)

    def kill(self) -> None:
        subprocess.run([*self.command, "kill-server"], capture_output=True, timeout=10)
