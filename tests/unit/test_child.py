"""The child supervisor with fake processes and a fake clock: restarts, backoff, stopping."""

from __future__ import annotations

import signal
from pathlib import Path

import anyio
import pytest

from sidecar.opencode.child import OpencodeChild, OpencodeStartError
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

    def __init__(self, tmp_path: Path, **settings: object) -> None:
        self.now = 0.0
        self.slept: list[float] = []
        self.health_checked = 0
        self.signals: list[tuple[int, signal.Signals]] = []
        self.processes: list[FakeProcess] = []
        self.fail_next_start = False
        self.healthy_answers = True
        self.health_checks = False  # when off, the health check's sleep never ends
        config = Settings(
            gateway_url="http://gw", opencode_password="pw", opencode_bin="sh", state_dir=tmp_path,
            restart_backoff_initial=10, restart_backoff_max=300, restart_backoff_reset=600,
            health_interval=HEALTH_INTERVAL, health_failures=3, **settings,
        )  # type: ignore[arg-type]
        self.child = OpencodeChild(
            config, tmp_path / "opencode.json", self, spawn=self.spawn,  # type: ignore[arg-type]
            clock=lambda: self.now, sleep=self.sleep, signal_group=self.signal_group,
        )

    async def spawn(self, command, *, env, cwd, output) -> FakeProcess:
        assert env["OPENCODE_SERVER_PASSWORD"] == "pw"
        assert "pw" not in " ".join(command)
        process = FakeProcess(1000 + len(self.processes), exits_at_start=1 if self.fail_next_start else None)
        self.processes.append(process)
        return process

    async def healthy(self) -> bool:
        return self.healthy_answers

    async def sleep(self, delay: float) -> None:
        if delay == HEALTH_INTERVAL:
            if not self.health_checks:
                await anyio.sleep_forever()
            self.health_checked += 1
        else:
            self.slept.append(delay)
        await anyio.sleep(0)

    def signal_group(self, pid: int, sig: signal.Signals) -> None:
        self.signals.append((pid, sig))
        for process in self.processes:
            if process.pid == pid and process.returncode is None:
                process.exit(-sig)

    async def wait_for_processes(self, count: int) -> None:
        with anyio.fail_after(5):
            while len(self.processes) < count or not self.child.healthy:
                await anyio.sleep(0.001)


async def test_a_child_that_stops_answering_is_killed_and_restarted(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    async with anyio.create_task_group() as group:
        await group.start(h.child.run)
        await h.wait_for_processes(1)
        h.healthy_answers, h.health_checks = False, True  # e.g. SIGSTOP: the port accepts, nothing answers
        with anyio.fail_after(5):
            while h.processes[0].returncode is None:
                await anyio.sleep(0.001)
        assert h.signals[-1] == (1000, signal.SIGKILL)  # a stopped process ignores SIGTERM
        assert h.health_checked == 3
        assert h.child.restarts == 1 and h.slept == [10]
        h.healthy_answers, h.health_checks = True, False
        await h.wait_for_processes(2)
        assert h.child.report()["state"] == "running" and h.child.report()["pid"] == 1001
        group.cancel_scope.cancel()


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
