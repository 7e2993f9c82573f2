"""The state directory: one sidecar at a time (a lock held for the process's life), readable by
its owner only (opencode's database there has held a gateway key in a stored shell output)."""

from __future__ import annotations

import fcntl
import os
import stat
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

import structlog

log = structlog.get_logger("sidecar.state_dir")

LOCK_NAME = "sidecar.lock"
PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
GROUP_AND_OTHER = 0o077


class StateDirError(Exception):
    """The state directory cannot be used; the message says why in one line."""


class StateDirBusy(StateDirError):
    """Another process holds the state directory's lock."""

    def __init__(self, state_dir: Path, holder: int | None) -> None:
        self.state_dir, self.holder = state_dir, holder
        who = f"pid {holder}" if holder is not None else "a process whose pid it has not written yet"
        super().__init__(f"{state_dir} is in use by another sidecar ({who})")


class StateDirLock:
    """An exclusive flock on the lock file. The kernel drops it when the descriptor's last copy
    closes, kill -9 included; the descriptor is close-on-exec, so opencode never holds it."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd, self.path = fd, path

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def claim_state_dir(state_dir: Path, *, shared: Collection[Path] = ()) -> StateDirLock:
    """Make the directory ours for this process's life: created owner-only, locked against a
    second sidecar, and what is under it closed to others (`shared` excepted), said in the log.

    The lock comes before any change: a second sidecar must leave the directory as it found it."""
    try:
        state_dir.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    except OSError as exc:
        raise StateDirError(f"cannot create {state_dir}: {exc.strerror}") from None
    try:
        lock = lock_state_dir(state_dir)
    except OSError as exc:
        raise StateDirError(f"cannot lock {state_dir}: {exc.strerror}") from None
    result = tighten_modes(state_dir, skip=shared)
    if result.changed:
        log.warning(
            "state_dir.modes_tightened",
            path=str(state_dir),
            count=len(result.changed),
            examples=[str(path) for path in result.changed[:5]],
        )
    if result.failed:
        # E.g. a volume's mount point owned by root: what we create in it is owner-only anyway.
        path, error = result.failed[0]
        log.warning(
            "state_dir.modes_not_tightened", path=str(state_dir), count=len(result.failed), first=str(path), error=error
        )
    return lock


def lock_state_dir(
    state_dir: Path, *, pid: int | None = None, sleep: Callable[[float], None] = time.sleep
) -> StateDirLock:
    """Take the lock or raise StateDirBusy naming the holder's pid, which the holder writes into it."""
    path = state_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_holder(fd, sleep)
        os.close(fd)
        raise StateDirBusy(state_dir, holder) from None
    except BaseException:
        os.close(fd)
        raise
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{pid if pid is not None else os.getpid()}\n".encode(), 0)
    except BaseException:
        os.close(fd)
        raise
    return StateDirLock(fd, path)


def parse_holder(text: bytes) -> int | None:
    try:
        pid = int(text.strip() or b"x")
    except ValueError:
        return None
    return pid if pid > 0 else None


def _read_holder(fd: int, sleep: Callable[[float], None]) -> int | None:
    # The holder writes its pid just after it takes the lock: a reader in between sees nothing yet.
    for _ in range(20):
        holder = parse_holder(os.pread(fd, 32, 0))
        if holder is not None:
            return holder
        sleep(0.05)
    return None


def private_mode(mode: int) -> int:
    """The mode without group and other bits: 0755 -> 0700, 0644 -> 0600, 0400 stays."""
    return stat.S_IMODE(mode) & ~GROUP_AND_OTHER


@dataclass
class Tightening:
    changed: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def tighten_modes(root: Path, *, skip: Collection[Path] = ()) -> Tightening:
    """Take group and other bits off `root` and everything under it; symlinks are never followed
    (chmod would change their target, which may be outside). `skip` keeps a file shared on purpose."""
    result = Tightening()
    skipped = {Path(os.path.abspath(path)) for path in skip}

    def tighten(path: Path) -> None:
        if Path(os.path.abspath(path)) in skipped:
            return
        try:
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode) or not st.st_mode & GROUP_AND_OTHER:
                return
            os.chmod(path, private_mode(st.st_mode))
        except OSError as exc:
            result.failed.append((path, exc.strerror or type(exc).__name__))
            return
        result.changed.append(path)

    def walk_error(exc: OSError) -> None:
        result.failed.append((Path(exc.filename or root), exc.strerror or type(exc).__name__))

    # Top down, so that a directory is closed to others before its contents are looked at.
    tighten(root)
    for directory, dirnames, filenames in os.walk(root, onerror=walk_error):
        for name in (*dirnames, *filenames):
            tighten(Path(directory) / name)
    return result
