"""The applier against a fake opencode: who is reloaded when, and when the catalog counts as applied."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from structlog.testing import capture_logs

from sidecar.naming import ModelRef
from sidecar.opencode.apply import ABORT_WINDOW, IDLE_RECHECK, Applier, DirectoryUnusable
from sidecar.opencode.client import OpencodeError
from sidecar.opencode.confirm import CONFIRM_ATTEMPTS
from sidecar.opencode.events import event_directory_and_type
from sidecar.opencode.tracked import RELOAD_ATTEMPTS, RELOAD_RETRY_MAX, reload_retry_delay
from sidecar.settings import Settings

pytestmark = pytest.mark.anyio


class FakeClock:
    """The applier's monotonic time, and its only way to wait.

    Running (the default), time moves only when the applier sleeps, by as long as it sleeps: hours
    pass in milliseconds. Held, a sleep ends only once the test has moved the time past it.
    `sleeps` counts the waits begun: each one is a point where the applier had done all it could.
    """

    def __init__(self, *, held: bool = False) -> None:
        self.now = 1000.0
        self.held = held
        self.sleeps = 0
        self.asked: list[float] = []  # each wait's length
        self._moved = anyio.Event()

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.asked.append(seconds)
        if not self.held:
            self.now += seconds
            await anyio.lowlevel.checkpoint()
            return
        deadline = self.now + seconds
        while self.now < deadline:
            await self._moved.wait()

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self._moved.set()
        self._moved = anyio.Event()


class FakeOpencode:
    def __init__(self, clock: Callable[[], float] = lambda: 0.0) -> None:
        self.busy: dict[str, set[str]] = {}
        self.disposed: list[str] = []
        self.models: set[str] = set()
        self.loaded_models: dict[str, set[str]] = {}
        # Directories opencode answers HTTP 500 for (as it does for a file): how many more times.
        self.failing: dict[str, float] = {}
        self.asked: dict[str, list[float]] = {}  # when, by the injected clock
        self._clock = clock

    def _answer(self, directory: str, path: str) -> None:
        self.asked.setdefault(directory, []).append(self._clock())
        if self.failing.get(directory, 0) > 0:
            self.failing[directory] -= 1
            raise OpencodeError(f"{path} answered HTTP 500")

    async def busy_sessions(self, directory: str) -> set[str]:
        self._answer(directory, "/session/status")
        return set(self.busy.get(directory, set()))

    async def dispose(self, directory: str) -> None:
        self._answer(directory, "/instance/dispose")
        assert not self.busy.get(directory), f"disposed {directory} while it was generating"
        self.disposed.append(directory)
        self.loaded_models[directory] = set(self.models)

    async def provider_model_ids(self, directory: str) -> dict[str, set[str]]:
        self._answer(directory, "/config/providers")
        return {"litellm": self.loaded_models.get(directory, set())}

    async def global_events(self) -> AsyncIterator[dict[str, Any]]:
        await anyio.sleep_forever()
        yield {}


class FakeChild:
    def __init__(self) -> None:
        self.healthy = True
        self.generation = 1
        self.restarts_requested = 0

    async def wait_healthy(self) -> None:
        return None

    def request_restart(self) -> None:
        self.restarts_requested += 1
        self.generation += 1


def make(
    tmp_path: Path, clock: FakeClock | None = None, release: Callable[[], object] = lambda: None, **settings: Any
) -> tuple[Applier, FakeOpencode, FakeChild]:
    clock = clock or FakeClock()
    opencode, child = FakeOpencode(clock), FakeChild()
    config = Settings(gateway_url="http://gw", opencode_password="pw", **settings)  # type: ignore[arg-type]
    applier = Applier(
        opencode, child, tmp_path / "a",  # type: ignore[arg-type]
        max_directories=config.max_directories, reload=config.reload, reload_timeout=config.reload_timeout,
        recheck_interval=1.0, clock=clock, sleep=clock.sleep, release=release,
    )
    return applier, opencode, child


async def wait_until(predicate, timeout: float = 5.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.005)


async def passes(clock: FakeClock, count: int = 3) -> None:
    """Until the applier has gone round its loop `count` more times and waits again: whatever it
    was going to do by then, it has done (an assertion that it did not can fail)."""
    target = clock.sleeps + count
    await wait_until(lambda: clock.sleeps >= target)


async def start(group, applier: Applier, clock: FakeClock) -> None:
    """Run the applier until it has taken in the running process and waits, as at the sidecar's start."""
    group.start_soon(applier.run)
    await passes(clock, 1)


async def test_idle_directories_reload_at_once_and_busy_ones_when_idle(tmp_path: Path) -> None:
    clock = FakeClock()
    applier, opencode, _ = make(tmp_path, clock)
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    applier.note_event({"directory": b, "payload": {"type": "session.created"}})
    opencode.busy[a] = {"ses_1"}
    opencode.models = {"m1", "m2"}
    async with anyio.create_task_group() as group:
        await start(group, applier, clock)
        applier.config_written({"litellm": {"m1", "m2"}})
        await wait_until(lambda: b in opencode.disposed)
        assert applier.applied, "confirmed in the idle directory"
        asked = len(opencode.asked[a])
        await passes(clock)
        assert len(opencode.asked[a]) >= asked + 3, "asked again at each pass whether it is busy"
        assert a not in opencode.disposed
        opencode.busy[a] = set()
        applier.note_event({"directory": a, "payload": {"type": "session.idle"}})
        await wait_until(lambda: a in opencode.disposed)
        group.cancel_scope.cancel()
    assert opencode.disposed.count(a) == 1 and opencode.disposed.count(b) == 1


async def test_mismatch_is_not_applied(tmp_path: Path) -> None:
    clock = FakeClock()
    applier, opencode, _ = make(tmp_path, clock)
    opencode.models = {"m1"}  # opencode ends up without m2
    async with anyio.create_task_group() as group:
        await start(group, applier, clock)
        applier.config_written({"litellm": {"m1", "m2"}})
        await wait_until(lambda: len(opencode.disposed) >= CONFIRM_ATTEMPTS)
        await passes(clock, 2 * CONFIRM_ATTEMPTS)
        assert not applier.applied
        assert len(opencode.disposed) == CONFIRM_ATTEMPTS, "retries are bounded"
        group.cancel_scope.cancel()


async def test_new_process_is_confirmed_without_reload(tmp_path: Path) -> None:
    clock = FakeClock()
    applier, opencode, child = make(tmp_path, clock)
    opencode.models = {"m1"}
    async with anyio.create_task_group() as group:
        await start(group, applier, clock)
        applier.config_written({"litellm": {"m1"}})
        await wait_until(lambda: applier.applied)
        reloads = len(opencode.disposed)
        child.generation += 1  # opencode crashed and came back, reading the file as it started
        opencode.loaded_models = {str(tmp_path / "a"): {"m1"}}
        assert not applier.applied
        await wait_until(lambda: applier.applied)
        assert len(opencode.disposed) == reloads
        group.cancel_scope.cancel()


async def test_idle_the_applier_waits_long_and_a_new_process_stream_wakes_it(tmp_path: Path) -> None:
    clock = FakeClock(held=True)  # time moves only when said: it never does here
    applier, opencode, child = make(tmp_path, clock)
    opencode.models = {"m1"}
    async with anyio.create_task_group() as group:
        await start(group, applier, clock)
        applier.config_written({"litellm": {"m1"}})
        await wait_until(lambda: applier.applied)
        # Nothing outstanding: not a look every second (RECHECK_INTERVAL) but the safety net's.
        await wait_until(lambda: clock.asked[-1] == IDLE_RECHECK)
        child.generation += 1  # opencode crashed and came back, reading the file as it started
        opencode.loaded_models = {str(tmp_path / "a"): {"m1"}}
        assert not applier.applied
        applier.note_event({"directory": "global", "payload": {"type": "server.connected", "properties": {}}})
        await wait_until(lambda: applier.applied)
        group.cancel_scope.cancel()


async def test_freed_memory_is_given_back_once_per_config_applied(tmp_path: Path) -> None:
    clock = FakeClock()
    released: list[bool] = []
    applier, opencode, _ = make(tmp_path, clock, release=lambda: released.append(applier.applied))
    opencode.models = {"m1"}
    async with anyio.create_task_group() as group:
        await start(group, applier, clock)
        assert released == []  # nothing applied yet: nothing read
        applier.config_written({"litellm": {"m1"}})
        await wait_until(lambda: released)
        await passes(clock)  # idle wake-ups give nothing back again
        assert released == [True]
        opencode.models = {"m1", "m2"}
        applier.config_written({"litellm": {"m1", "m2"}})
        await wait_until(lambda: len(released) == 2)
        await passes(clock)
        assert released == [True, True]
        group.cancel_scope.cancel()


async def test_restart_mode_waits_for_idle_then_restarts(tmp_path: Path) -> None:
    clock = FakeClock()
    applier, opencode, child = make(tmp_path, clock, reload="restart")
    a = str(tmp_path / "a")
    opencode.busy[a] = {"ses_1"}
    opencode.models = {"m1"}
    async with anyio.create_task_group() as group:
        await start(group, applier, clock)
        with capture_logs() as logs:
            applier.config_written({"litellm": {"m1"}})
            await wait_until(lambda: a in opencode.asked)
            await passes(clock)
        assert len([e for e in logs if e["event"] == "opencode.restart_deferred"]) >= 3
        assert child.restarts_requested == 0
        opencode.busy[a] = set()
        opencode.loaded_models = {a: {"m1"}}
        await wait_until(lambda: applier.applied)
        assert child.restarts_requested == 1 and opencode.disposed == []
        group.cancel_scope.cancel()


def test_event_directories_must_be_absolute() -> None:
    assert event_directory_and_type({"directory": "global", "payload": {"type": "x"}}) == (None, "x")
    assert event_directory_and_type({"directory": "/p", "payload": {"type": "session.idle"}}) == ("/p", "session.idle")
    assert event_directory_and_type({"payload": "junk"}) == (None, None)


async def test_directory_first_seen_with_an_older_config_is_reloaded(tmp_path: Path) -> None:
    clock = FakeClock()
    applier, opencode, _ = make(tmp_path, clock)
    late = str(tmp_path / "late")
    opencode.models = {"m1", "m2"}
    async with anyio.create_task_group() as group:
        await start(group, applier, clock)
        applier.config_written({"litellm": {"m1", "m2"}})
        await wait_until(lambda: applier.applied)
        # A directory loaded before the write, by requests that sent no event, shows up now.
        opencode.loaded_models[late] = {"m1"}
        applier.note_event({"directory": late, "payload": {"type": "session.created"}})
        await wait_until(lambda: late in opencode.disposed)
        # One that already reads the current file is left alone.
        fresh = str(tmp_path / "fresh")
        opencode.loaded_models[fresh] = {"m1", "m2"}
        applier.note_event({"directory": fresh, "payload": {"type": "session.created"}})
        await wait_until(lambda: fresh in opencode.asked)
        await passes(clock)
        assert fresh not in opencode.disposed and fresh not in applier.report()["pending_reloads"]
        group.cancel_scope.cancel()


async def test_a_failing_directory_does_not_hold_up_the_others(tmp_path: Path) -> None:
    clock = FakeClock()
    applier, opencode, _ = make(tmp_path, clock)
    broken, fine = str(tmp_path / "broken"), str(tmp_path / "fine")
    applier.note_directory(broken)
    applier.note_directory(fine)
    opencode.models = {"m1"}
    original = opencode.busy_sessions

    async def busy_sessions(directory: str) -> set[str]:
        if directory == broken:
            raise OpencodeError("/session/status answered HTTP 500")
        return await original(directory)

    opencode.busy_sessions = busy_sessions  # type: ignore[method-assign]
    async with anyio.create_task_group() as group:
        await start(group, applier, clock)
        applier.config_written({"litellm": {"m1"}})
        await wait_until(lambda: fine in opencode.disposed)
        group.cancel_scope.cancel()


async def test_an_abort_right_after_a_reload_of_its_directory_is_counted(tmp_path: Path) -> None:
    clock = FakeClock(held=True)  # the reload happens at 1000 s, and time moves only when said
    applier, opencode, _ = make(tmp_path, clock)
    a = str(tmp_path / "a")
    aborted = {"directory": a, "payload": {"type": "session.error", "properties": {
        "sessionID": "ses_1", "error": {"name": "MessageAbortedError", "data": {"message": "aborted"}}}}}
    applier.note_event(aborted)  # no reload before it: the user's own abort
    assert applier.prompts_aborted_by_reload == 0
    async with anyio.create_task_group() as group:
        await start(group, applier, clock)
        opencode.models = {"m1"}
        applier.config_written({"litellm": {"m1"}})
        await wait_until(lambda: a in opencode.disposed)
        group.cancel_scope.cancel()
    assert applier.reloads["reloaded"] == 1
    clock.advance(ABORT_WINDOW - 1)
    applier.note_event(aborted)
    other = {"directory": a, "payload": {"type": "session.error", "properties": {"error": {"name": "UnknownError"}}}}
    applier.note_event(other)
    assert applier.prompts_aborted_by_reload == 1
    clock.advance(2)  # past the window: the user's own again
    applier.note_event(aborted)
    assert applier.prompts_aborted_by_reload == 1


def gaps(times: list[float]) -> list[float]:
    return [later - earlier for earlier, later in zip(times, times[1:])]


@pytest.mark.parametrize("noted", ["before the config", "after it is applied"])
async def test_a_directory_opencode_keeps_failing_is_retried_with_growing_delays_then_dropped(
    tmp_path: Path, noted: str
) -> None:
    clock = FakeClock()
    applier, opencode, _ = make(tmp_path, clock)
    bad = "/etc/hostname"  # a file: opencode 1.18.33 answers HTTP 500 for it on every route
    opencode.failing[bad] = float("inf")
    opencode.models = {"m1"}
    with capture_logs() as logs:
        async with anyio.create_task_group() as group:
            if noted == "before the config":
                applier.note_directory(bad)
            group.start_soon(applier.run)
            applier.config_written({"litellm": {"m1"}})
            if noted == "after it is applied":
                await wait_until(lambda: applier.applied)
                applier.note_directory(bad)
            await wait_until(lambda: bad not in applier.directories and bad in opencode.asked)
            dropped_at = clock.now
            # An hour later (of the injected clock) nothing more was tried, whatever was written meanwhile.
            applier.config_written({"litellm": {"m1"}})
            await wait_until(lambda: clock.now > dropped_at + 3600)
            group.cancel_scope.cancel()
    assert len(opencode.asked[bad]) == RELOAD_ATTEMPTS
    assert gaps(opencode.asked[bad]) == [reload_retry_delay(n) for n in range(1, RELOAD_ATTEMPTS)]
    assert gaps(opencode.asked[bad]) == sorted(set(gaps(opencode.asked[bad]))), "each wait is longer"
    failed = [e for e in logs if e["event"] == "opencode.reload_failed" and e.get("directory") == bad]
    assert [e["attempt"] for e in failed] == list(range(1, RELOAD_ATTEMPTS))
    dropped = [e for e in logs if e["event"] == "opencode.directory_dropped"]
    assert [(e["directory"], e["reason"], e["attempts"]) for e in dropped] == [(bad, "reload_failed", RELOAD_ATTEMPTS)]
    report = applier.report()
    assert report["directories"] == 1 and bad not in report["pending_reloads"]
    assert applier.applied, "the other directories were not held up"


async def test_the_default_directory_is_retried_for_ever_but_never_faster_than_the_cap(tmp_path: Path) -> None:
    clock = FakeClock()
    applier, opencode, _ = make(tmp_path, clock)
    default = applier.default_directory
    opencode.failing[default] = float("inf")
    with capture_logs() as logs:
        async with anyio.create_task_group() as group:
            group.start_soon(applier.run)
            applier.config_written({"litellm": {"m1"}})
            await wait_until(lambda: clock.now > 1000 + 3600)
            group.cancel_scope.cancel()
    assert default in applier.directories
    assert not [e for e in logs if e["event"] == "opencode.directory_dropped"]
    waits = gaps(opencode.asked[default])
    ramp = [reload_retry_delay(n) for n in range(1, 7)]
    assert ramp[-1] < RELOAD_RETRY_MAX and len(waits) > len(ramp) + 50
    # After the ramp, a try (and a log line) a minute, not one a second.
    assert waits[: len(ramp)] == ramp and set(waits[len(ramp):]) == {RELOAD_RETRY_MAX}


async def test_a_directory_that_recovers_is_kept(tmp_path: Path) -> None:
    clock = FakeClock()
    applier, opencode, _ = make(tmp_path, clock)
    flaky = str(tmp_path / "flaky")
    opencode.failing[flaky] = RELOAD_ATTEMPTS - 1  # one short of the bound
    opencode.models = {"m1"}
    async with anyio.create_task_group() as group:
        group.start_soon(applier.run)
        applier.config_written({"litellm": {"m1"}})
        await wait_until(lambda: applier.applied)
        applier.note_directory(flaky)  # it lists nothing yet: stale, to be reloaded
        await wait_until(lambda: flaky in opencode.disposed)
        group.cancel_scope.cancel()
    assert flaky in applier.directories and flaky not in applier.report()["pending_reloads"]
    assert len(opencode.asked[flaky]) > RELOAD_ATTEMPTS, "and the count started again once it answered"


def test_the_least_recently_used_directory_is_dropped_at_the_bound_never_the_default(tmp_path: Path) -> None:
    applier, _, _ = make(tmp_path, max_directories=3)
    default = applier.default_directory
    d1, d2, d3, d4 = (str(tmp_path / f"d{i}") for i in range(1, 5))
    with capture_logs() as logs:
        for directory in (d1, d2, d3):
            applier.note_directory(directory)
        assert applier.directories == {default, d2, d3}, "the default is the oldest, and stays"
        applier.note_directory(d2)  # used again: d3 is now the least recently used
        applier.note_event({"directory": d4, "payload": {"type": "session.created"}})
    assert applier.directories == {default, d2, d4}
    assert applier.report()["directories"] == 3
    dropped = [(e["directory"], e["reason"]) for e in logs if e["event"] == "opencode.directory_dropped"]
    assert dropped == [(d1, "limit"), (d3, "limit")]


def test_a_bound_of_one_keeps_only_the_default_directory(tmp_path: Path) -> None:
    applier, _, _ = make(tmp_path, max_directories=1)
    applier.note_directory(str(tmp_path / "other"))
    assert applier.directories == {applier.default_directory}


def test_directories_are_checked_and_normalised_as_they_enter(tmp_path: Path) -> None:
    applier, _, _ = make(tmp_path)
    for bad in ("/x\x00y", "relative", "/a/../etc", "/a\nb", "", "/" + "n" * 256):
        applier.note_directory(bad)
        applier.note_event({"directory": bad, "payload": {"type": "session.created"}})
    assert applier.directories == {applier.default_directory}
    applier.note_directory("//p/./q/")
    applier.note_event({"directory": "/p/q", "payload": {"type": "session.idle"}})
    assert applier.directories == {applier.default_directory, "/p/q"}


async def test_a_resolve_in_a_directory_opencode_keeps_failing_gives_up_with_growing_waits(tmp_path: Path) -> None:
    clock = FakeClock()
    applier, opencode, _ = make(tmp_path, clock)
    bad = "/etc/hostname"
    opencode.failing[bad] = float("inf")
    applier.note_directory(bad)  # the pass-through saw it first
    with pytest.raises(DirectoryUnusable, match="HTTP 500"):
        await applier.wait_usable(bad, ModelRef("litellm", "m1"), timeout=600)
    assert len(opencode.asked[bad]) == RELOAD_ATTEMPTS
    assert gaps(opencode.asked[bad]) == [reload_retry_delay(n) for n in range(1, RELOAD_ATTEMPTS)]
    assert bad not in applier.directories
