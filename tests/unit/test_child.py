"""The child supervisor with fake processes and a fake clock: restarts, backoff, stopping, and the
record that lets the next sidecar stop an opencode this one left behind."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from structlog.testing import capture_logs

from sidecar.opencode.activity import ReloadActivity
from sidecar.opencode.child import OpencodeChild
from sidecar.opencode.record import RECORD_NAME, ChildRecord, ProcessStat, identify, parse_stat
from sidecar.opencode.spawn import OpencodeStartError
from sidecar.settings import Settings

pytestmark = pytest.mark.anyio


HEALTH_INTERVAL = 7.0


class FakeProcess:
    def __init__(self, pid: int, *, exits_at_start: int | None = None) -> None:
        self.pid = pid
        self.returncode: int | None = exits_at_start
        self._exited = anyio.Event()
        if exits_at_start is not None:
            self._exited.set()

    def exit(self, code: int) -> None:
        self.returncode = code
        self._exited.set()

    async def wait(self) -> int:
        await self._exited.wait()
        assert self.returncode is not None
        return self.returncode


class Harness:
    """Fake processes, clock, sleep and signals: the supervisor's whole world."""

    def __init__(self, tmp_path: Path, activity: object = None, **settings: object) -> None:
        self.now = 0.0
        self.wall = 1_700_000_000.0  # what the report shows: wall-clock time
        self.health_tick = 0.0  # how far the clock moves with each health check's sleep
        self.answers: list[bool] = []  # the next health checks' answers, then `healthy_answers`
        self.slept: list[float] = []
        self.health_checked = 0
        self.signals: list[tuple[int, signal.Signals]] = []
        self.processes: list[FakeProcess] = []
        self.fail_next_start = False
        self.boot = "boot-1"
        # The process table as /proc shows it: pid -> (state, start time); a fake process is alive
        # until it exits, and started at 100 ticks plus its pid.
        self.table: dict[int, ProcessStat] = {}
        self.advance_clock_on_sleep = False
        self.stale_dies_on = {signal.SIGTERM, signal.SIGKILL}
        self.after_signal: Callable[[int, signal.Signals], None] | None = None
        self.healthy_answers = True
        self.health_checks = False  # when off, the health check's sleep never ends
        config = Settings(
            gateway_url="http://gw", opencode_password="pw", opencode_bin="sh", state_dir=tmp_path,
            restart_backoff_initial=10, restart_backoff_max=300, restart_backoff_reset=600,
            health_interval=HEALTH_INTERVAL, health_failures=3, **settings,
        ).with_gateway_token()  # type: ignore[arg-type]
        self.child = OpencodeChild(
            config, tmp_path / "opencode.json", self, spawn=self.spawn,  # type: ignore[arg-type]
            clock=lambda: self.now, sleep=self.sleep, wall=lambda: self.wall, signal_group=self.signal_group,
            process_stat=self.process_stat, boot_id=lambda: self.boot, activity=activity,  # type: ignore[arg-type]
        )

    async def spawn(self, command, *, env, cwd, output) -> FakeProcess:
        assert env["OPENCODE_SERVER_PASSWORD"] == "pw"
        assert "pw" not in " ".join(command)
        token = env["OPENCODE_SIDECAR_TOKEN"]
        assert len(token) >= 32 and token not in " ".join(command)
        process = FakeProcess(1000 + len(self.processes), exits_at_start=1 if self.fail_next_start else None)
        self.processes.append(process)
        return process

    async def healthy(self) -> bool:
        return self.answers.pop(0) if self.answers else self.healthy_answers

    async def sleep(self, delay: float) -> None:
        if delay == HEALTH_INTERVAL:
            if not self.health_checks:
                await anyio.sleep_forever()
            self.health_checked += 1
            self.now += self.health_tick
        else:
            self.slept.append(delay)
            if self.advance_clock_on_sleep:
                self.now += delay
        await anyio.sleep(0)

    def process_stat(self, pid: int) -> ProcessStat | None:
        if pid in self.table:
            return self.table[pid]
        for process in self.processes:
            if process.pid == pid:
                state = "S" if process.returncode is None else "Z"
                return ProcessStat(state=state, threads=1, start_time=100 + pid)
        return None

    def signal_group(self, pid: int, sig: signal.Signals) -> None:
        self.signals.append((pid, sig))
        stale = self.table.get(pid)
        if stale is not None and stale.state != "Z" and sig in self.stale_dies_on:
            self.table[pid] = ProcessStat("Z", 1, stale.start_time)
        if self.after_signal is not None:
            self.after_signal(pid, sig)
        for process in self.processes:
            if process.pid == pid and process.returncode is None:
                process.exit(-sig)

    async def wait_for_processes(self, count: int) -> None:
        with anyio.fail_after(5):
            while len(self.processes) < count or not self.child.healthy:
                await anyio.sleep(0.001)

    async def wait_killed_and_backing_off(self) -> None:
        """Until the first process has exited and the child sleeps out its restart delay: on a loaded
        machine the kill is seen before the restart is planned."""
        with anyio.fail_after(5):
            while self.processes[0].returncode is None or not self.slept:
                await anyio.sleep(0.001)


async def test_a_child_that_stops_answering_is_killed_and_restarted(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    async with anyio.create_task_group() as group:
        await group.start(h.child.run)
        await h.wait_for_processes(1)
        h.healthy_answers, h.health_checks = False, True  # e.g. SIGSTOP: the port accepts, nothing answers
        await h.wait_killed_and_backing_off()
        assert h.signals[-1] == (1000, signal.SIGKILL)  # a stopped process ignores SIGTERM
        assert h.health_checked == 3
        assert h.child.restarts == 1 and h.slept == [10]
        h.healthy_answers, h.health_checks = True, False
        await h.wait_for_processes(2)
        assert h.child.report()["state"] == "running" and h.child.report()["pid"] == 1001
        group.cancel_scope.cancel()


async def test_the_report_reads_uptime_and_backoff_from_the_wall_clock(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    async with anyio.create_task_group() as group:
        await group.start(h.child.run)
        h.wall += 42.5
        assert h.child.report()["uptime"] == 42.5
        h.processes[0].exit(1)
        await h.wait_killed_and_backing_off()
        assert h.child.backoff_until == h.wall + 10
        group.cancel_scope.cancel()


class Reloading:
    """The applier's word on whether opencode is reading a new config."""

    def __init__(self, in_flight: bool) -> None:
        self.now = in_flight

    def in_flight(self) -> bool:
        return self.now


async def test_failed_health_checks_during_a_reload_do_not_count(tmp_path: Path) -> None:
    # Issue 13: opencode reading an 18.6 MB config missed its 2 s health checks and was killed.
    h = Harness(tmp_path, activity=Reloading(True), opencode_start_timeout=60)
    h.health_tick = HEALTH_INTERVAL
    async with anyio.create_task_group() as group:
        await group.start(h.child.run)
        await h.wait_for_processes(1)
        h.answers = [False] * 6 + [True] + [False] * 2  # twice the limit in a row, 42 s: within the bound
        with capture_logs() as logs:
            h.health_checks = True
            with anyio.fail_after(5):
                while h.health_checked < 11:
                    await anyio.sleep(0.001)
        assert h.processes[0].returncode is None and h.child.restarts == 0 and not h.signals
        excused = events(logs, "child.health_check_excused")
        assert len(excused) == 8 and not events(logs, "child.health_check_failed")
        assert excused[5]["excused_for"] == 5 * HEALTH_INTERVAL and excused[6]["excused_for"] == 0  # reset by a success
        group.cancel_scope.cancel()


async def test_a_hung_opencode_is_killed_once_a_reload_has_excused_it_for_the_bound(tmp_path: Path) -> None:
    h = Harness(tmp_path, activity=Reloading(True), opencode_start_timeout=60)
    h.health_tick = HEALTH_INTERVAL
    async with anyio.create_task_group() as group:
        await group.start(h.child.run)
        await h.wait_for_processes(1)
        h.healthy_answers = False
        with capture_logs() as logs:
            h.health_checks = True
            await h.wait_killed_and_backing_off()
        # Checks at 7, 14, ... 63 s are within 60 s of the first: excused; 70, 77, 84 count.
        assert len(events(logs, "child.health_check_excused")) == 9
        assert [e["failures"] for e in events(logs, "child.health_check_failed")] == [1, 2, 3]
        assert h.health_checked == 12 and h.signals[-1] == (1000, signal.SIGKILL)
        assert events(logs, "child.unresponsive") and h.child.restarts == 1
        group.cancel_scope.cancel()


async def test_without_a_reload_in_flight_failures_count_at_once(tmp_path: Path) -> None:
    h = Harness(tmp_path, activity=Reloading(False), opencode_start_timeout=60)
    h.health_tick = HEALTH_INTERVAL
    async with anyio.create_task_group() as group:
        await group.start(h.child.run)
        await h.wait_for_processes(1)
        h.healthy_answers = False
        with capture_logs() as logs:
            h.health_checks = True
            await h.wait_killed_and_backing_off()
        assert h.health_checked == 3 and not events(logs, "child.health_check_excused")
        group.cancel_scope.cancel()


def test_a_reload_is_in_flight_while_it_runs_and_for_the_settle_time_after() -> None:
    clock = [100.0]
    activity = ReloadActivity(settle=5.0, clock=lambda: clock[0])
    assert not activity.in_flight()
    with activity.reloading():
        clock[0] += 120  # a reload that takes long is in flight all along
        assert activity.in_flight()
    clock[0] += 4.9
    assert activity.in_flight()
    clock[0] += 0.2
    assert not activity.in_flight()
    activity.config_written()
    assert activity.in_flight()
    clock[0] += 5.1
    assert not activity.in_flight()


async def test_crashes_back_off_like_kubelet_and_reset_after_healthy_time(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    async with anyio.create_task_group() as group:
        await group.start(h.child.run)
        for n in range(1, 5):
            await h.wait_for_processes(n)
            h.processes[-1].exit(1)
        await h.wait_for_processes(5)
        assert h.slept == [10, 20, 40, 80]
        h.now += 601  # healthy for more than the reset time: the next crash counts as the first
        h.processes[-1].exit(1)
        await h.wait_for_processes(6)
        assert h.slept[-1] == 10
        assert h.child.generation == 6
        group.cancel_scope.cancel()


async def test_first_start_failing_is_an_error(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.fail_next_start = True
    with pytest.raises(OpencodeStartError, match="exited with code 1 before it became healthy"):
        await h.child.run()


async def test_never_healthy_is_stopped_and_reported(tmp_path: Path) -> None:
    h = Harness(tmp_path, opencode_start_timeout=5)
    h.healthy_answers = False

    async def advance() -> None:
        while True:
            h.now += 1
            await anyio.sleep(0.001)

    async with anyio.create_task_group() as group:
        group.start_soon(advance)
        with pytest.raises(OpencodeStartError, match="did not become healthy within 5"):
            await h.child.run()
        group.cancel_scope.cancel()
    assert (1000, signal.SIGTERM) in h.signals


async def test_restart_request_restarts_without_backoff(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    async with anyio.create_task_group() as group:
        await group.start(h.child.run)
        h.child.request_restart()
        await h.wait_for_processes(2)
        assert h.processes[0].returncode == -signal.SIGTERM
        assert h.slept == []
        group.cancel_scope.cancel()


async def test_stop_sends_sigterm_then_sigkill_to_the_group(tmp_path: Path) -> None:
    h = Harness(tmp_path, stop_grace=0.05)
    async with anyio.create_task_group() as group:
        await group.start(h.child.run)
        group.cancel_scope.cancel()
    # Cancelling run() stops the process it owns.
    assert h.processes[0].returncode == -signal.SIGTERM
    # A process that ignores SIGTERM still goes, by SIGKILL after the grace period.
    stubborn = FakeProcess(2000)
    h.processes.append(stubborn)
    h.signals.clear()
    h.child._process = stubborn  # type: ignore[assignment]
    original = h.signal_group

    def ignore_term(pid: int, sig: signal.Signals) -> None:
        if sig == signal.SIGKILL:
            original(pid, sig)
        else:
            h.signals.append((pid, sig))

    h.child._signal_group = ignore_term  # type: ignore[method-assign]
    await h.child.stop()
    assert h.signals == [(2000, signal.SIGTERM), (2000, signal.SIGKILL)]
    assert stubborn.returncode == -signal.SIGKILL
    assert not h.child.healthy


# The record, and an opencode left behind by an earlier sidecar.

STALE_PID = 4242


def write_record(tmp_path: Path, pid: int = STALE_PID, start_time: int = 777, boot_id: str = "boot-1") -> Path:
    path = tmp_path / RECORD_NAME
    path.write_text(ChildRecord(pid, start_time, boot_id).to_json())
    return path


def events(logs: list[dict], name: str) -> list[dict]:
    return [entry for entry in logs if entry["event"] == name]


def test_parse_stat_reads_past_a_command_name_with_spaces_and_parentheses() -> None:
    text = "4242 (open (code) x) S 1 4242 4242 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 12 0 98765 1 2 3\n"
    assert parse_stat(text) == ProcessStat(state="S", threads=12, start_time=98765)


def test_a_process_is_the_recorded_one_only_when_pid_start_time_and_boot_match() -> None:
    record = ChildRecord(STALE_PID, 777, "boot-1")
    assert identify(record, ProcessStat("S", 3, 777), "boot-1") == "ours"
    assert identify(record, ProcessStat("S", 1, 778), "boot-1") == "reused"
    assert identify(record, ProcessStat("S", 3, 777), "boot-2") == "other_boot"
    assert identify(record, None, "boot-1") == "exited"
    assert identify(record, ProcessStat("Z", 1, 777), "boot-1") == "exited"
    # Its main thread is a zombie, its other threads still exit and hold its files (the port).
    assert identify(record, ProcessStat("Z", 5, 777), "boot-1") == "ours"


@pytest.mark.parametrize(
    "text", ["", "not json", "[]", '{"pid": "4242", "start_time": 1}', '{"pid": 1, "start_time": 1}', '{"pid": 42}']
)
def test_a_damaged_record_names_no_process(text: str) -> None:
    assert ChildRecord.from_json(text) is None


async def test_the_started_opencode_is_recorded_owner_only_and_forgotten_once_stopped(tmp_path: Path) -> None:
    h = Harness(tmp_path, stop_grace=0.05)
    record = tmp_path / RECORD_NAME
    async with anyio.create_task_group() as group:
        await group.start(h.child.run)
        assert json.loads(record.read_text()) == {"pid": 1000, "start_time": 1100, "boot_id": "boot-1"}
        assert record.stat().st_mode & 0o777 == 0o600
        h.child.request_restart()
        await h.wait_for_processes(2)
        assert json.loads(record.read_text())["pid"] == 1001
        group.cancel_scope.cancel()
    assert not record.exists()


async def test_a_recorded_opencode_that_still_runs_is_stopped_with_its_group(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.table[STALE_PID] = ProcessStat("S", 12, 777)
    record = write_record(tmp_path)
    with capture_logs() as logs:
        await h.child.stop_stale()
    # SIGKILL after its exit too: whatever it started in its group goes with it.
    assert h.signals == [(STALE_PID, signal.SIGTERM), (STALE_PID, signal.SIGKILL)]
    assert [(e["pid"], e["signal"]) for e in events(logs, "child.stale_stopped")] == [(STALE_PID, "SIGTERM")]
    assert not record.exists()


async def test_a_recorded_opencode_that_ignores_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    h = Harness(tmp_path, stop_grace=5)
    h.advance_clock_on_sleep, h.stale_dies_on = True, {signal.SIGKILL}
    h.table[STALE_PID] = ProcessStat("S", 12, 777)
    write_record(tmp_path)
    with capture_logs() as logs:
        await h.child.stop_stale()
    assert h.signals == [(STALE_PID, signal.SIGTERM), (STALE_PID, signal.SIGKILL)]
    assert 5 <= sum(h.slept) < 5.2
    assert [e["signal"] for e in events(logs, "child.stale_stopped")] == ["SIGKILL"]


@pytest.mark.parametrize(
    ("now", "boot_id", "reason"),
    [
        (ProcessStat("S", 1, 778), "boot-1", "reused"),  # the pid is another process's now
        (ProcessStat("S", 1, 777), "boot-0", "other_boot"),  # recorded before a reboot
        (None, "boot-1", "exited"),
        (ProcessStat("Z", 1, 777), "boot-1", "exited"),
    ],
)
async def test_a_record_that_names_no_running_opencode_of_ours_signals_nothing(
    tmp_path: Path, now: ProcessStat | None, boot_id: str, reason: str
) -> None:
    h = Harness(tmp_path)
    if now is not None:
        h.table[STALE_PID] = now
    record = write_record(tmp_path, boot_id=boot_id)
    with capture_logs() as logs:
        await h.child.stop_stale()
    assert h.signals == []
    assert [(e["pid"], e["reason"]) for e in events(logs, "child.stale_record_ignored")] == [(STALE_PID, reason)]
    assert not record.exists()


async def test_a_pid_taken_by_another_process_during_the_grace_gets_no_sigkill(tmp_path: Path) -> None:
    h = Harness(tmp_path, stop_grace=5)
    h.advance_clock_on_sleep, h.stale_dies_on = True, set()
    h.table[STALE_PID] = ProcessStat("S", 12, 777)
    write_record(tmp_path)

    def exit_and_reuse(pid: int, sig: signal.Signals) -> None:
        h.table[pid] = ProcessStat("R", 1, 900)  # it exited, and its pid went to a new process

    h.after_signal = exit_and_reuse
    await h.child.stop_stale()
    assert h.signals == [(STALE_PID, signal.SIGTERM)]


async def test_an_unstoppable_stale_opencode_is_reported(tmp_path: Path) -> None:
    h = Harness(tmp_path, stop_grace=1)
    h.advance_clock_on_sleep, h.stale_dies_on = True, set()  # state D: no signal lands
    h.table[STALE_PID] = ProcessStat("D", 12, 777)
    write_record(tmp_path)
    with capture_logs() as logs:
        await h.child.stop_stale()
    assert h.signals == [(STALE_PID, signal.SIGTERM), (STALE_PID, signal.SIGKILL)]
    assert [e["pid"] for e in events(logs, "child.stale_unstoppable")] == [STALE_PID]
    assert not events(logs, "child.stale_stopped")


async def test_a_stale_opencode_of_another_user_is_reported_not_fatal(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.table[STALE_PID] = ProcessStat("S", 12, 777)
    record = write_record(tmp_path)

    def not_permitted(pid: int, sig: signal.Signals) -> None:
        raise PermissionError(1, "Operation not permitted")

    h.after_signal = not_permitted
    with capture_logs() as logs:
        await h.child.stop_stale()
    assert [e["error"] for e in events(logs, "child.stale_unstoppable")] == ["not permitted"]
    assert not record.exists()


async def test_no_record_no_signal(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    with capture_logs() as logs:
        await h.child.stop_stale()
    assert h.signals == [] and logs == []

