"""The applier against a fake opencode: who is reloaded when, and when the catalog counts as applied."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from sidecar.opencode.apply import CONFIRM_ATTEMPTS, Applier, event_directory_and_type
from sidecar.opencode.client import OpencodeError
from sidecar.settings import Settings

pytestmark = pytest.mark.anyio


class FakeOpencode:
    def __init__(self) -> None:
        self.busy: dict[str, set[str]] = {}
        self.disposed: list[str] = []
        self.models: set[str] = set()
        self.loaded_models: dict[str, set[str]] = {}

    async def busy_sessions(self, directory: str) -> set[str]:
        return set(self.busy.get(directory, set()))

    async def dispose(self, directory: str) -> None:
        assert not self.busy.get(directory), f"disposed {directory} while it was generating"
        self.disposed.append(directory)
        self.loaded_models[directory] = set(self.models)

    async def provider_model_ids(self, directory: str) -> dict[str, set[str]]:
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


def make(tmp_path: Path, **settings: Any) -> tuple[Applier, FakeOpencode, FakeChild]:
    opencode, child = FakeOpencode(), FakeChild()
    config = Settings(gateway_url="http://gw", opencode_password="pw", **settings)  # type: ignore[arg-type]
    applier = Applier(config, opencode, child, tmp_path / "a", recheck_interval=0.01)  # type: ignore[arg-type]
    return applier, opencode, child


async def start(group, applier: Applier) -> None:
    """Run the applier and let it take in the running process, as the sidecar does at start."""
    group.start_soon(applier.run)
    await anyio.sleep(0.05)


async def wait_until(predicate, timeout: float = 5.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.005)


async def test_idle_directories_reload_at_once_and_busy_ones_when_idle(tmp_path: Path) -> None:
    applier, opencode, _ = make(tmp_path)
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    applier.note_event({"directory": b, "payload": {"type": "session.created"}})
    opencode.busy[a] = {"ses_1"}
    opencode.models = {"m1", "m2"}
    async with anyio.create_task_group() as group:
        await start(group, applier)
        applier.config_written({"litellm": {"m1", "m2"}})
        await wait_until(lambda: b in opencode.disposed)
        assert applier.applied, "confirmed in the idle directory"
        await anyio.sleep(0.1)
        assert a not in opencode.disposed
        opencode.busy[a] = set()
        applier.note_event({"directory": a, "payload": {"type": "session.idle"}})
        await wait_until(lambda: a in opencode.disposed)
        group.cancel_scope.cancel()
    assert opencode.disposed.count(a) == 1 and opencode.disposed.count(b) == 1


async def test_mismatch_is_not_applied(tmp_path: Path) -> None:
    applier, opencode, _ = make(tmp_path)
    opencode.models = {"m1"}  # opencode ends up without m2
    async with anyio.create_task_group() as group:
        await start(group, applier)
        applier.config_written({"litellm": {"m1", "m2"}})
        await wait_until(lambda: len(opencode.disposed) >= CONFIRM_ATTEMPTS)
        await anyio.sleep(0.2)
        assert not applier.applied
        assert len(opencode.disposed) == CONFIRM_ATTEMPTS, "retries are bounded"
        group.cancel_scope.cancel()


async def test_new_process_is_confirmed_without_reload(tmp_path: Path) -> None:
    applier, opencode, child = make(tmp_path)
    opencode.models = {"m1"}
    async with anyio.create_task_group() as group:
        await start(group, applier)
        applier.config_written({"litellm": {"m1"}})
        await wait_until(lambda: applier.applied)
        reloads = len(opencode.disposed)
        child.generation += 1  # opencode crashed and came back, reading the file as it started
        opencode.loaded_models = {str(tmp_path / "a"): {"m1"}}
        assert not applier.applied
        await wait_until(lambda: applier.applied)
        assert len(opencode.disposed) == reloads
        group.cancel_scope.cancel()


async def test_restart_mode_waits_for_idle_then_restarts(tmp_path: Path) -> None:
    applier, opencode, child = make(tmp_path, reload="restart")
    a = str(tmp_path / "a")
    opencode.busy[a] = {"ses_1"}
    opencode.models = {"m1"}
    async with anyio.create_task_group() as group:
        await start(group, applier)
        applier.config_written({"litellm": {"m1"}})
        await anyio.sleep(0.1)
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
    applier, opencode, _ = make(tmp_path)
    late = str(tmp_path / "late")
    opencode.models = {"m1", "m2"}
    async with anyio.create_task_group() as group:
        await start(group, applier)
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
        await anyio.sleep(0.1)
        assert fresh not in opencode.disposed
        group.cancel_scope.cancel()


async def test_a_failing_directory_does_not_hold_up_the_others(tmp_path: Path) -> None:
    applier, opencode, _ = make(tmp_path)
    broken, fine = str(tmp_path / "broken"), str(tmp_path / "fine")
    applier.directories |= {broken, fine}
    opencode.models = {"m1"}
    original = opencode.busy_sessions

    async def busy_sessions(directory: str) -> set[str]:
        if directory == broken:
            raise OpencodeError("/session/status answered HTTP 500")
        return await original(directory)

    opencode.busy_sessions = busy_sessions  # type: ignore[method-assign]
    async with anyio.create_task_group() as group:
        await start(group, applier)
        applier.config_written({"litellm": {"m1"}})
        await wait_until(lambda: fine in opencode.disposed)
        group.cancel_scope.cancel()


async def test_an_abort_right_after_a_reload_of_its_directory_is_counted(tmp_path: Path) -> None:
    applier, opencode, _ = make(tmp_path)
    a = str(tmp_path / "a")
    aborted = {"directory": a, "payload": {"type": "session.error", "properties": {
        "sessionID": "ses_1", "error": {"name": "MessageAbortedError", "data": {"message": "aborted"}}}}}
    applier.note_event(aborted)  # no reload before it: the user's own abort
    assert applier.prompts_aborted_by_reload == 0
    async with anyio.create_task_group() as group:
        await start(group, applier)
        opencode.models = {"m1"}
        applier.config_written({"litellm": {"m1"}})
        await wait_until(lambda: a in opencode.disposed)
        group.cancel_scope.cancel()
    assert applier.reloads["reloaded"] == 1
    applier.note_event(aborted)
    other = {"directory": a, "payload": {"type": "session.error", "properties": {"error": {"name": "UnknownError"}}}}
    applier.note_event(other)
    assert applier.prompts_aborted_by_reload == 1
