"""Which opencode is ours, kept on disk for the next sidecar: recorded at each start, forgotten at a
clean stop, and stopped by the next sidecar on this state directory if it outlived us (killed, or
no parent-death signal) and still holds our port."""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
import structlog

from sidecar.opencode.handle import Clock, Sleep
from sidecar.opencode.record import ChildRecord, ProcessStat, identify, load_record, save_record

log = structlog.get_logger("sidecar.child")

STALE_POLL = 0.05  # seconds between looks at a stale opencode that was asked to stop

SignalGroup = Callable[[int, signal.Signals], None]


@dataclass(frozen=True)
class RecordedChild:
    path: Path
    grace: float  # seconds a stale opencode gets between SIGTERM and SIGKILL
    signal_group: SignalGroup
    process_stat: Callable[[int], ProcessStat | None]
    boot_id: Callable[[], str | None]
    clock: Clock
    sleep: Sleep

    async def record(self, pid: int) -> None:
        now = self.process_stat(pid)
        if now is None:
            return  # gone already: the health wait reports it
        record = ChildRecord(pid, now.start_time, self.boot_id())
        try:
            await anyio.to_thread.run_sync(save_record, self.path, record)
        except OSError as exc:
            # Not fatal: the parent-death signal stops opencode with us; the record is the fallback.
            log.warning("child.record_failed", path=str(self.path), error=exc.strerror or type(exc).__name__)

    def forget(self) -> None:
        self.path.unlink(missing_ok=True)

    async def stop_stale(self) -> None:
        """Stop the opencode an earlier sidecar recorded and never stopped. Call it only while
        holding the state directory's lock: the recorded opencode is then nobody's."""
        record = load_record(self.path)
        if record is None:
            return
        verdict = self._identify(record)
        if verdict != "ours":
            log.info("child.stale_record_ignored", pid=record.pid, reason=verdict)
        else:
            log.warning("child.stale_found", pid=record.pid, start_time=record.start_time)
            try:
                with anyio.CancelScope(shield=True):
                    await self._stop(record)
            except PermissionError:
                # Another user's (a state directory reused across users): not ours to stop.
                log.error("child.stale_unstoppable", pid=record.pid, error="not permitted")
        self.forget()

    def _identify(self, record: ChildRecord) -> str:
        return identify(record, self.process_stat(record.pid), self.boot_id())

    async def _stop(self, record: ChildRecord) -> None:
        self.signal_group(record.pid, signal.SIGTERM)
        await self._wait_gone(record)
        by = "SIGTERM" if self._identify(record) != "ours" else "SIGKILL"
        # What it started in its group goes too, unless its pid has gone to another process since.
        if self._identify(record) in ("ours", "exited"):
            self.signal_group(record.pid, signal.SIGKILL)
            await self._wait_gone(record)
        if self._identify(record) == "ours":
            # Stuck in the kernel (state D): the start that follows reports the port it holds.
            log.error("child.stale_unstoppable", pid=record.pid)
            return
        log.warning("child.stale_stopped", pid=record.pid, signal=by)

    async def _wait_gone(self, record: ChildRecord) -> None:
        # Not our child: nothing to wait() on, so look at /proc until it is gone or the grace is over.
        deadline = self.clock() + self.grace
        while self._identify(record) == "ours" and self.clock() < deadline:
            await self.sleep(STALE_POLL)
