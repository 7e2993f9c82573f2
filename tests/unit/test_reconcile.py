"""The reconciler against fake gateways: the shrink guard, saved lists, and a state dir that
stops taking writes."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from sidecar.catalog import Catalog, ModelInfo
from sidecar.gateway.client import GatewayError
from sidecar.opencode.config import write_atomically
from sidecar.reconcile import Reconciler
from sidecar.settings import Settings
from sidecar.statefiles import StatePaths

pytestmark = pytest.mark.anyio


class Gateway:
    def __init__(self, *ids: str) -> None:
        self.ids = list(ids)
        self.down = False

    async def fetch_catalog(self) -> Catalog:
        if self.down:
            raise GatewayError("request failed: ConnectError")
        return Catalog(ModelInfo(id=i, display_name=i) for i in self.ids)


class Listener:
    def __init__(self) -> None:
        self.written: list[set[str]] = []

    def config_written(self, expected: dict[str, set[str]]) -> None:
        self.written.append(expected["litellm"])


class Disk:
    """write_atomically, until the disk is "full"."""

    def __init__(self) -> None:
        self.full = False

    def write(self, path: Path, text: str) -> None:
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        write_atomically(path, text)


def make(tmp_path: Path, gateway: Gateway, disk: Disk | None = None, **settings: object):
    listener = Listener()
    config = Settings(gateway_url="http://gw", state_dir=tmp_path, **settings)  # type: ignore[arg-type]
    write = (disk or Disk()).write
    reconciler = Reconciler(config, {"litellm": gateway}, listener, StatePaths(tmp_path), {}, write=write)
    return reconciler, listener


MODELS = [f"m{i}" for i in range(10)]


async def test_a_list_that_drops_to_zero_is_held_until_seen_three_times(tmp_path: Path) -> None:
    gateway = Gateway(*MODELS)
    reconciler, listener = make(tmp_path, gateway)
    await reconciler.poll_once()
    gateway.ids = []
    with capture_logs() as logs:
        for _ in range(2):
            assert await reconciler.poll_once() is False
    assert [e["event"] for e in logs if e["event"].startswith("gateway.shrink")] == ["gateway.shrink_held"] * 2
    assert reconciler.catalog.ids == sorted(MODELS) and len(listener.written) == 1
    assert reconciler.gateways["litellm"].shrink_seen == 2
    gateway.ids = list(MODELS)  # it recovers: nothing was ever lost
    assert await reconciler.poll_once() is False
    assert reconciler.gateways["litellm"].shrink_seen == 0
    gateway.ids = []
    for _ in range(2):
        await reconciler.poll_once()
    with capture_logs() as logs:
        assert await reconciler.poll_once() is True  # the third poll in a row: applied
    assert "gateway.shrink_applied" in [e["event"] for e in logs]
    assert listener.written[-1] == set() and len(reconciler.catalog) == 0


async def test_a_large_loss_is_held_a_small_one_and_growth_apply_at_once(tmp_path: Path) -> None:
    gateway = Gateway(*MODELS)
    reconciler, listener = make(tmp_path, gateway, shrink_threshold=0.5, shrink_confirmations=2)
    await reconciler.poll_once()
    gateway.ids = MODELS[:6]  # lost 40%
    assert await reconciler.poll_once() is True
    gateway.ids = MODELS[:2]  # lost 4 of 6: more than half
    assert await reconciler.poll_once() is False
    assert len(reconciler.catalog) == 6
    assert await reconciler.poll_once() is True
    assert len(reconciler.catalog) == 2
    gateway.ids = MODELS  # growth: at once
    assert await reconciler.poll_once() is True and len(reconciler.catalog) == 10


async def test_freed_memory_is_given_back_after_a_changed_list_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    released: list[int] = []
    monkeypatch.setattr("sidecar.intake.release_free_memory", lambda: released.append(len(listener.written)))
    gateway = Gateway(*MODELS)
    reconciler, listener = make(tmp_path, gateway)
    assert await reconciler.poll_once() is True
    assert released == [1]  # after the config is written
    assert await reconciler.poll_once() is False  # unchanged: no per-change work, nothing to give back
    gateway.ids = MODELS + ["m10"]
    assert await reconciler.poll_once() is True
    assert released == [1, 2]


async def test_one_confirmation_turns_the_guard_off(tmp_path: Path) -> None:
    gateway = Gateway(*MODELS)
    reconciler, _ = make(tmp_path, gateway, shrink_confirmations=1)
    await reconciler.poll_once()
    gateway.ids = ["m0"]
    assert await reconciler.poll_once() is True and reconciler.catalog.ids == ["m0"]


async def test_a_saved_list_is_served_at_start_and_says_so(tmp_path: Path) -> None:
    gateway = Gateway("a", "b")
    first, _ = make(tmp_path, gateway)
    await first.poll_once()
    gateway.down = True
    with capture_logs() as logs:
        second, _ = make(tmp_path, gateway)
    (restored,) = [e for e in logs if e["event"] == "catalog.restored"]
    assert restored["models"] == 2 and restored["gateway"] == "litellm"
    state = second.gateways["litellm"]
    assert state.restored and second.catalog.ids == ["a", "b"]
    await second.poll_once()
    report = state.report(now=state.catalog_time + 5, poll_interval=30)  # type: ignore[operator]
    assert report["restored"] is True and report["stale"] is True and report["catalog_age"] == 5
    assert report["last_poll_ok"] is False and "ConnectError" in report["last_error"]
    gateway.down = False
    await second.poll_once()
    assert second.gateways["litellm"].report(now=state.last_success, poll_interval=30)["stale"] is False  # type: ignore[arg-type]


async def test_a_full_disk_keeps_the_old_files_whole_and_the_old_list_served(tmp_path: Path) -> None:
    gateway, disk = Gateway("a"), Disk()
    reconciler, listener = make(tmp_path, gateway, disk)
    await reconciler.poll_once()
    before = (tmp_path / "opencode.json").read_text()
    disk.full = True
    gateway.ids = ["a", "b"]
    with capture_logs() as logs:
        assert await reconciler.poll_once() is True
    (failed,) = [e for e in logs if e["event"] == "state.write_failed"]
    assert failed["error"] == "No space left on device"
    assert (tmp_path / "opencode.json").read_text() == before
    assert reconciler.catalog.ids == ["a"] and len(listener.written) == 1
    assert "No space left on device" in (reconciler.last_write_error or "")
    disk.full = False
    await reconciler.poll_once()  # the same list: written now that the disk takes it
    assert set(json.loads((tmp_path / "opencode.json").read_text())["provider"]["litellm"]["models"]) == {"a", "b"}
    assert reconciler.catalog.ids == ["a", "b"] and listener.written[-1] == {"a", "b"}
    assert reconciler.last_write_error is None


# --- SIDECAR_MAX_MODELS (issue 13) ------------------------------------------------------------


def capped_events(logs: list[dict]) -> list[dict]:
    return [e for e in logs if e["event"] in ("gateway.models_capped", "gateway.models_uncapped")]


async def test_a_list_over_the_cap_gives_opencode_the_cap_and_says_so_once_per_change(tmp_path: Path) -> None:
    gateway = Gateway(*MODELS)
    reconciler, listener = make(tmp_path, gateway, max_models=4)
    with capture_logs() as logs:
        for _ in range(3):  # three polls of the same list: one warning
            await reconciler.poll_once()
    (warned,) = capped_events(logs)
    assert warned["event"] == "gateway.models_capped" and warned["log_level"] == "warning"
    assert (warned["listed"], warned["kept"], warned["max_models"]) == (10, 4, 4)
    assert "include/exclude" in warned["hint"] and "SIDECAR_MAX_MODELS" in warned["hint"]
    assert listener.written == [{"m0", "m1", "m2", "m3"}]
    written = json.loads((tmp_path / "opencode.json").read_text())["provider"]["litellm"]["models"]
    assert len(written) == 4 and len(reconciler.catalog) == 4
    state = reconciler.gateways["litellm"]
    assert state.report(now=0, poll_interval=30)["capped"] == {"listed_models": 10, "kept_models": 4}

    gateway.ids.append("m99")  # listed, not kept: opencode needs no change, the status does
    with capture_logs() as logs:
        assert await reconciler.poll_once() is False
        await reconciler.poll_once()
    assert [(e["event"], e["listed"]) for e in capped_events(logs)] == [("gateway.models_capped", 11)]
    assert state.report(now=0, poll_interval=30)["capped"] == {"listed_models": 11, "kept_models": 4}
    assert len(listener.written) == 1

    gateway.ids = MODELS[:3]
    with capture_logs() as logs:
        await reconciler.poll_once()
        await reconciler.poll_once()
    assert [e["event"] for e in capped_events(logs)] == ["gateway.models_uncapped"]
    assert state.report(now=0, poll_interval=30)["capped"] is None


async def test_a_saved_list_over_the_cap_is_cut_before_opencode_reads_it(tmp_path: Path) -> None:
    gateway = Gateway(*MODELS)
    first, _ = make(tmp_path, gateway)
    await first.poll_once()
    gateway.down = True
    with capture_logs() as logs:
        second, _ = make(tmp_path, gateway, max_models=2)
    (warned,) = capped_events(logs)
    assert (warned["listed"], warned["kept"]) == (10, 2)
    assert second.catalog.ids == ["m0", "m1"]
    await second.publish()
    assert set(json.loads((tmp_path / "opencode.json").read_text())["provider"]["litellm"]["models"]) == {"m0", "m1"}
