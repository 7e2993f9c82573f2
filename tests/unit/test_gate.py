"""The reload gate (issue 16): no prompt through the sidecar starts between the applier's busy
check and its dispose. A fake clock and a fake opencode; nothing waits on the wall clock."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from structlog.testing import capture_logs

from sidecar.http.opencode_routes import prompt_session
from sidecar.opencode.gate import ReloadGate
from tests.unit.test_apply import FakeClock, FakeOpencode, make, passes, start, wait_until

pytestmark = pytest.mark.anyio

A, B = "/work/a", "/work/b"


def gate(clock: FakeClock, **kwargs: float) -> ReloadGate:
    return ReloadGate(lambda: A, clock=clock, sleep=clock.sleep, **kwargs)


async def test_a_prompt_waits_while_its_directory_is_held_and_goes_on_when_released() -> None:
    clock = FakeClock(held=True)
    reloads = gate(clock)
    assert reloads.try_hold(A)
    entered: list[str] = []
    async with anyio.create_task_group() as group:

        async def prompt(directory: str) -> None:
            await reloads.enter_prompt(directory)
            entered.append(directory)

        group.start_soon(prompt, A)
        group.start_soon(prompt, B)  # another directory is not held up
        await wait_until(lambda: entered == [B])
        await wait_until(lambda: clock.sleeps >= 1)  # A's prompt is waiting, its bound not yet passed
        assert entered == [B]
        reloads.release(A)
        await wait_until(lambda: entered == [B, A])
    assert clock.now == 1000.0 and reloads.waits_timed_out == 0


async def test_the_wait_is_bounded_and_a_prompt_past_it_goes_on_with_a_warning() -> None:
    clock = FakeClock(held=True)
    reloads = gate(clock, max_wait=5.0)
    assert reloads.try_hold(A)
    entered = anyio.Event()
    with capture_logs() as logs:
        async with anyio.create_task_group() as group:

            async def prompt() -> None:
                await reloads.enter_prompt(None)  # no directory: opencode's own, A
                entered.set()

            group.start_soon(prompt)
            await wait_until(lambda: clock.sleeps >= 1)
            clock.advance(4.9)
            await passes(clock, 0)
            assert not entered.is_set()
            clock.advance(0.2)
            with anyio.fail_after(5):
                await entered.wait()
    assert reloads.waits_timed_out == 1
    assert [e for e in logs if e["event"] == "passthrough.reload_wait_timed_out"] == [
        {"event": "passthrough.reload_wait_timed_out", "directory": A, "waited": 5.0, "log_level": "warning"}
    ]


async def test_a_prompt_being_started_keeps_the_applier_out_until_opencode_reports_its_session() -> None:
    clock = FakeClock(held=True)
    reloads = gate(clock, settle=10.0)
    leave = await reloads.enter_prompt(A, "ses_1")
    assert not reloads.try_hold(A), "a prompt is being forwarded"
    assert reloads.try_hold(B)
    leave()
    leave()  # once only
    clock.advance(5.0)
    assert not reloads.try_hold(A), "answered (prompt_async), but opencode has not said it started"
    reloads.session_reported("ses_other")
    assert not reloads.try_hold(A)
    reloads.session_reported("ses_1")
    assert reloads.try_hold(A), "opencode's own busy status covers it now"
    assert not reloads.try_hold(A), "held already"


async def test_a_report_before_the_answer_counts_and_an_unreported_start_expires() -> None:
    clock = FakeClock(held=True)
    reloads = gate(clock, settle=10.0)
    leave = await reloads.enter_prompt(A, "ses_1")
    reloads.session_reported("ses_1")  # a blocking /message: reported busy, then idle, then answered
    assert not reloads.try_hold(A)
    leave()
    assert reloads.try_hold(A)
    reloads.release(A)
    leave = await reloads.enter_prompt(A, "ses_2")
    leave()
    clock.advance(9.9)
    assert not reloads.try_hold(A)
    clock.advance(0.2)
    assert reloads.try_hold(A), "no report within the bound: opencode never started it"


async def test_the_applier_hands_session_reports_to_the_gate(tmp_path: Path) -> None:
    applier, _, _ = make(tmp_path)
    a = str(tmp_path / "a")
    leave = await applier.gate.enter_prompt(a, "ses_1")
    leave()
    assert applier.gate.starting(a)
    applier.note_event(
        {"directory": a, "payload": {"type": "session.status", "properties": {"sessionID": "ses_1", "status": {"type": "busy"}}}}
    )
    assert not applier.gate.starting(a)


class SlowDispose(FakeOpencode):
    """A dispose that returns only when the test lets it."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.disposing = anyio.Event()
        self.finish = anyio.Event()

    async def dispose(self, directory: str) -> None:
        self.disposing.set()
        await self.finish.wait()
        await super().dispose(directory)


async def test_a_prompt_sent_during_a_reload_starts_after_the_dispose(tmp_path: Path) -> None:
    clock = FakeClock(held=True)  # the prompt's bound never passes: only the release lets it on
    applier, _, child = make(tmp_path, clock)
    opencode = SlowDispose(clock)
    applier._client = opencode  # type: ignore[assignment]
    a = str(tmp_path / "a")
    opencode.models = {"m1"}
    started: list[list[str]] = []
    async with anyio.create_task_group() as group:
        await start(group, applier, clock)
        applier.config_written({"litellm": {"m1"}})
        with anyio.fail_after(5):
            await opencode.disposing.wait()

        async def prompt() -> None:
            await applier.gate.enter_prompt(a)
            started.append(list(opencode.disposed))

        group.start_soon(prompt)
        await anyio.sleep(0.05)  # real time: the prompt's task has run up to its wait
        assert started == [], "a prompt started while its directory was being disposed"
        opencode.finish.set()
        await wait_until(lambda: bool(started))
        group.cancel_scope.cancel()
    assert started == [[a]], "the prompt went on once the dispose had returned"
    assert child.generation == 1


async def test_the_applier_does_not_reload_a_directory_while_a_prompt_is_being_started(tmp_path: Path) -> None:
    clock = FakeClock()
    applier, opencode, _ = make(tmp_path, clock)
    a = str(tmp_path / "a")
    opencode.models = {"m1"}
    leave = await applier.gate.enter_prompt(a, "ses_1")
    async with anyio.create_task_group() as group:
        await start(group, applier, clock)
        applier.config_written({"litellm": {"m1"}})
        await passes(clock)
        # opencode says idle (the prompt has not reached it yet): only the gate knows better.
        assert opencode.disposed == [] and applier.report()["waiting_for_idle"] == [a]
        leave()
        applier.note_event({"directory": a, "payload": {"type": "session.status", "properties": {"sessionID": "ses_1"}}})
        await wait_until(lambda: a in opencode.disposed)
        group.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("method", "path", "session"),
    [
        ("POST", "/session/ses_1/message", "ses_1"),
        ("POST", "/session/ses_1/prompt_async", "ses_1"),
        ("POST", "/session/ses_1/command", "ses_1"),
        ("POST", "/session/ses_1/shell", "ses_1"),
        ("POST", "/session/ses_1/summarize", "ses_1"),
        ("POST", "/session/ses_1/init", "ses_1"),
        ("GET", "/session/ses_1/message", None),  # reads the messages
        ("POST", "/session", None),  # creating a session starts nothing
        ("POST", "/session/ses_1/abort", None),
        ("POST", "/session/ses_1/message/x", None),
    ],
)
def test_which_requests_start_a_prompt(method: str, path: str, session: str | None) -> None:
    assert prompt_session(method, path) == session
