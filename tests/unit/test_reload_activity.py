"""The applier marks what makes opencode read its config, for the child's health check (issue 13)."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from sidecar.opencode.activity import ReloadActivity
from sidecar.opencode.apply import Applier
from sidecar.settings import Settings
from tests.unit.test_apply import FakeChild, FakeClock, FakeOpencode, start

pytestmark = pytest.mark.anyio


class Watched(FakeOpencode):
    """Records, at each call that makes opencode read the config, whether a reload was in flight."""

    def __init__(self, activity: ReloadActivity, clock: FakeClock) -> None:
        super().__init__(clock)
        self.activity = activity
        self.seen: list[tuple[str, bool]] = []

    async def dispose(self, directory: str) -> None:
        self.seen.append(("dispose", self.activity.in_flight()))
        await super().dispose(directory)

    async def provider_model_ids(self, directory: str) -> dict[str, set[str]]:
        self.seen.append(("providers", self.activity.in_flight()))
        return await super().provider_model_ids(directory)


async def test_a_reload_is_in_flight_from_the_write_through_the_confirmation_then_settles(tmp_path: Path) -> None:
    clock = FakeClock()
    activity = ReloadActivity(clock=clock)  # the one the sidecar hands the child too
    opencode = Watched(activity, clock)
    config = Settings(gateway_url="http://gw", opencode_password="pw")  # type: ignore[arg-type]
    applier = Applier(
        opencode, FakeChild(), tmp_path / "a",  # type: ignore[arg-type]
        max_directories=config.max_directories, reload=config.reload, reload_timeout=config.reload_timeout,
        clock=clock, sleep=clock.sleep, activity=activity,
    )
    opencode.models = {"m1"}
    assert not activity.in_flight()
    async with anyio.create_task_group() as group:
        await start(group, applier, clock)
        applier.config_written({"litellm": {"m1"}})
        assert activity.in_flight()  # written: opencode is about to read it
        with anyio.fail_after(5):
            while not applier.applied:
                await anyio.sleep(0.005)
        group.cancel_scope.cancel()
    assert ("dispose", True) in opencode.seen and ("providers", True) in opencode.seen
    clock.now += 60  # long after the last call, opencode is no longer excused
    assert not activity.in_flight()
