"""Which opencode this sidecar started, kept in the state directory: the next sidecar stops one that
outlived its parent, and never a process that merely got its pid since.

A process is the same one when its pid, its start time (/proc/<pid>/stat, clock ticks since boot)
and the boot all match: pids are reused (pid_max is 32768 on many hosts), the triple is not.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sidecar.opencode.config import write_atomically
from sidecar.statedir import PRIVATE_FILE

RECORD_NAME = "opencode-child.json"
PROC = Path("/proc")


@dataclass(frozen=True)
class ProcessStat:
    state: str  # R, S, D, Z, ... (proc(5))
    threads: int
    start_time: int  # clock ticks after boot

    @property
    def alive(self) -> bool:
        # A zombie whose threads have all gone is dead: its files (the port) are closed, only its
        # exit status waits for a parent. Killed, opencode's main thread shows Z first while its
        # other threads are still exiting and holding the listening socket (measured: a Z state
        # with the port still answering).
        return self.state not in ("Z", "X") or self.threads > 1


def parse_stat(text: str) -> ProcessStat:
    # The command name (field 2) may hold spaces and parentheses: fields 3 on follow the last ')'.
    fields = text[text.rindex(")") + 1 :].split()
    return ProcessStat(state=fields[0], threads=int(fields[17]), start_time=int(fields[19]))  # 3, 20, 22


def read_stat(pid: int, proc: Path = PROC) -> ProcessStat | None:
    """The process `pid` as /proc shows it now, or None when there is none."""
    try:
        return parse_stat((proc / str(pid) / "stat").read_text())
    except (OSError, ValueError, IndexError):
        return None


def read_boot_id(proc: Path = PROC) -> str | None:
    try:
        return (proc / "sys" / "kernel" / "random" / "boot_id").read_text().strip() or None
    except OSError:
        return None


@dataclass(frozen=True)
class ChildRecord:
    pid: int
    start_time: int
    boot_id: str | None

    def to_json(self) -> str:
        return json.dumps({"pid": self.pid, "start_time": self.start_time, "boot_id": self.boot_id}) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ChildRecord | None:
        try:
            data = json.loads(text)
            pid, start_time, boot_id = data["pid"], data["start_time"], data.get("boot_id")
        except (ValueError, TypeError, KeyError):
            return None
        if not (isinstance(pid, int) and pid > 1 and isinstance(start_time, int)):
            return None
        return cls(pid, start_time, boot_id if isinstance(boot_id, str) else None)


def identify(record: ChildRecord, now: ProcessStat | None, boot_id: str | None) -> str:
    """What the pid of `record` is now: "ours" (the recorded process, alive), "exited" (it is dead,
    as a zombie or gone), "reused" (another process has the pid) or "other_boot"."""
    if record.boot_id != boot_id:
        return "other_boot"
    if now is None:
        return "exited"
    if now.start_time != record.start_time:
        return "reused"
    return "ours" if now.alive else "exited"


def load_record(path: Path) -> ChildRecord | None:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return None
    return ChildRecord.from_json(text)


def save_record(path: Path, record: ChildRecord) -> None:
    write_atomically(path, record.to_json(), mode=PRIVATE_FILE)
