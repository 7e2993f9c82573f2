"""What the suite audits for leaked secrets: every secret a test hands the sidecar, every folder a
sidecar writes to, and every command line seen on the machine while the suite runs."""

from __future__ import annotations

import re
import threading
from pathlib import Path

SECRET_NAME = re.compile(r"KEY|SECRET|PASSWORD|TOKEN", re.IGNORECASE)

secrets: set[str] = set()
written_dirs: set[Path] = set()
command_lines: set[str] = set()


def register(*, secret_values: list[str | None] = (), directories: list[Path] = ()) -> None:  # type: ignore[assignment]
    secrets.update(value for value in secret_values if value)
    written_dirs.update(directories)


def secret_env_values(env: dict[str, str]) -> list[str]:
    """The values of variables whose names say they hold a secret."""
    return [value for name, value in env.items() if SECRET_NAME.search(name) and len(value) >= 8]


class CommandLineSampler:
    """Reads every process's argument list (what `ps` shows) a few times a second."""

    def __init__(self, interval: float = 0.25) -> None:
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cmdline-sampler", daemon=True)
        self.samples = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit():
                    continue
                try:
                    raw = (entry / "cmdline").read_bytes()
                except OSError:
                    continue
                if raw:
                    command_lines.add(raw.replace(b"\0", b" ").decode(errors="replace"))
            self.samples += 1


def leaks() -> list[str]:
    """Where a registered secret shows up: a file under a sidecar's folders, or a command line."""
    found = []
    needles = [(secret, secret.encode()) for secret in secrets]
    for directory in sorted(written_dirs):
        if not directory.exists():
            continue
        for path in directory.rglob("*"):
            if not path.is_file() or path.is_symlink():
                continue
            try:
                content = path.read_bytes()
            except OSError:
                continue
            for secret, needle in needles:
                if needle in content:
                    found.append(f"{path}: holds a secret ({secret[:6]}...)")
    for line in command_lines:
        for secret, _ in needles:
            if secret in line:
                found.append(f"command line {line[:120]!r}: holds a secret ({secret[:6]}...)")
    return found


def files_scanned() -> int:
    return sum(1 for d in written_dirs if d.exists() for p in d.rglob("*") if p.is_file())
