"""Attach mode: an opencode the sidecar did not start, watched but never started or stopped."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from sidecar.opencode.attached import AttachedOpencode
from sidecar.settings import Settings, SettingsError, load_settings

pytestmark = pytest.mark.anyio


class FakeOpencode:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.up = False
        self.checks = 0

    async def healthy(self) -> bool:
        self.checks += 1
        return self.up


def attached(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "gateway_url": "http://gw",
        "opencode_url": "http://127.0.0.1:4096",
        "opencode_config": tmp_path / "shared" / "opencode.json",
        "health_interval": 0.01,
        "health_failures": 2,
        # Key custody: the token both containers get from one Secret.
        "gateway_token": "t" * 32,
    }
    values.update(overrides)
    return load_settings(**values)


async def test_it_starts_at_once_and_counts_each_return_of_opencode_as_a_generation(tmp_path: Path) -> None:
    settings = attached(tmp_path)
    opencode = FakeOpencode(settings.opencode_base)
    watcher = AttachedOpencode(
        opencode, health_interval=settings.health_interval, health_failures=settings.health_failures  # type: ignore[arg-type]
    )
    async with anyio.create_task_group() as group:
        await group.start(watcher.run)  # does not wait for opencode: in a pod it starts after us
        assert not watcher.healthy and watcher.report()["state"] == "waiting"
        opencode.up = True
        with anyio.fail_after(5):
            await watcher.wait_healthy()
        assert watcher.generation == 1 and watcher.restarts == 0
        opencode.up = False  # restarted by its own supervisor
        with anyio.fail_after(5):
            while watcher.healthy:
                await anyio.sleep(0.005)
        assert watcher.report()["state"] == "down"
        opencode.up = True
        with anyio.fail_after(5):
            await watcher.wait_healthy()
        # The new process read the config file as it started: a new generation, nothing to reload.
        assert watcher.generation == 2 and watcher.restarts == 1
        report = watcher.report()
        assert report["attached"] == "http://127.0.0.1:4096" and report["pid"] is None
        group.cancel_scope.cancel()
    await watcher.stop()  # nothing to stop: it was never ours


def test_attach_settings(tmp_path: Path) -> None:
    settings = attached(tmp_path)
    assert settings.attached and settings.opencode_base == "http://127.0.0.1:4096"
    assert settings.with_password().opencode_password is None  # no password invented for someone else's opencode
    assert load_settings(gateway_url="http://gw").with_password().opencode_password is not None
    with pytest.raises(SettingsError, match="SIDECAR_OPENCODE_CONFIG: is required with SIDECAR_OPENCODE_URL"):
        load_settings(gateway_url="http://gw", opencode_url="http://127.0.0.1:4096")
    with pytest.raises(SettingsError, match="SIDECAR_OPENCODE_CONFIG: is for attach mode"):
        load_settings(gateway_url="http://gw", opencode_config=tmp_path / "x.json")
    with pytest.raises(SettingsError, match="SIDECAR_RELOAD: restart needs the sidecar to run opencode"):
        attached(tmp_path, reload="restart")
    with pytest.raises(SettingsError, match="SIDECAR_OPENCODE_PASSWORD, not in the URL"):
        attached(tmp_path, opencode_url="http://opencode:pw@127.0.0.1:4096")
