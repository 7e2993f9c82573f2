"""The reconciler's registry: requested models are written once, kept, and dropped when listed."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from structlog.testing import capture_logs

from sidecar.catalog import Catalog, ModelInfo
from sidecar.naming import ModelRef
from sidecar.reconcile import Reconciler, StatePaths
from sidecar.settings import Settings

pytestmark = pytest.mark.anyio


class Gateway:
    def __init__(self, *ids: str) -> None:
        self.ids = list(ids)

    async def fetch_catalog(self) -> Catalog:
        return Catalog(ModelInfo(id=i, display_name=i) for i in self.ids)


class Listener:
    def __init__(self) -> None:
        self.written: list[set[str]] = []

    def config_written(self, expected: dict[str, set[str]]) -> None:
        self.written.append(expected["litellm"])


def make(tmp_path: Path, gateway: Gateway) -> tuple[Reconciler, Listener]:
    listener = Listener()
    settings = Settings(gateway_url="http://gw", state_dir=tmp_path)  # type: ignore[arg-type]
    return Reconciler(settings, {"litellm": gateway}, listener, StatePaths(tmp_path), {}), listener


async def test_concurrent_registrations_write_once(tmp_path: Path) -> None:
    reconciler, listener = make(tmp_path, Gateway("listed"))
    await reconciler.poll_once()
    async with anyio.create_task_group() as group:
        for _ in range(20):
            group.start_soon(reconciler.register, ModelRef("litellm", "openai/new"))
    assert len(listener.written) == 2
    assert listener.written[-1] == {"listed", "openai/new"}
    model = reconciler.catalog.get("openai/new")
    assert model is not None and model.registered
    assert reconciler.catalog.get("listed").registered is False  # type: ignore[union-attr]


async def test_registry_survives_restart_until_the_gateway_lists_it(tmp_path: Path) -> None:
    gateway = Gateway("listed")
    first, _ = make(tmp_path, gateway)
    await first.poll_once()
    await first.register(ModelRef("litellm", "openai/new"))
    second, listener = make(tmp_path, gateway)
    assert "openai/new" in second.catalog and second.catalog.get("openai/new").registered  # type: ignore[union-attr]
    await second.poll_once()
    assert listener.written[-1] == {"listed", "openai/new"}
    gateway.ids.append("openai/new")
    await second.poll_once()
    assert not second.registered["litellm"]
    assert second.catalog.get("openai/new").registered is False  # type: ignore[union-attr]
    third, _ = make(tmp_path, gateway)
    assert third.registered == {}


async def test_unregister(tmp_path: Path) -> None:
    reconciler, listener = make(tmp_path, Gateway("listed"))
    await reconciler.poll_once()
    await reconciler.register(ModelRef("litellm", "x"))
    await reconciler.unregister("x")
    assert "x" not in reconciler.catalog
    assert listener.written[-1] == {"listed"}


def saved_models(*ids: str, registered: bool = False) -> list[dict]:
    """Records as this code saves them (`Catalog.to_json`), holding ids an older version accepted."""
    return json.loads(Catalog(ModelInfo(id=i, display_name=i, registered=registered) for i in ids).to_json())


def saved_state(tmp_path: Path, registered: object, listed: list[str]) -> None:
    (tmp_path / "registered.json").write_text(json.dumps(registered, indent=1))
    (tmp_path / "catalog-litellm.json").write_text(json.dumps(saved_models(*listed), indent=1))


async def test_saved_ids_opencode_cannot_hold_are_dropped_at_start_and_the_files_rewritten(tmp_path: Path) -> None:
    # An older version registered `constructor` on request and saved `toString` from a gateway's
    # list; each made opencode answer 500 at every start until someone deleted the files.
    registered = {"litellm": saved_models("constructor", "openai/new", registered=True)}
    saved_state(tmp_path, registered, ["listed", "toString"])
    with capture_logs() as logs:
        reconciler, listener = make(tmp_path, Gateway("listed"))
    assert sorted(reconciler.catalog.ids) == ["listed", "openai/new"]
    dropped = [e for e in logs if e["event"] == "state.model_dropped"]
    assert sorted((e["model"], Path(e["path"]).name) for e in dropped) == [
        ("constructor", "registered.json"),
        ("toString", "catalog-litellm.json"),
    ]
    assert all(e["log_level"] == "warning" and "Object.prototype" in e["reason"] for e in dropped)

    await reconciler.publish()  # what the supervisor does at start, before opencode starts
    assert listener.written == [{"listed", "openai/new"}]
    for name in ("registered.json", "catalog-litellm.json", "opencode.json"):
        text = (tmp_path / name).read_text()
        assert "constructor" not in text and "toString" not in text, name


async def test_a_registry_of_the_single_gateway_format_is_cleaned_too(tmp_path: Path) -> None:
    # Before several gateways, registered.json was one list, for the only gateway.
    saved_state(tmp_path, saved_models("valueOf", "x"), [])
    with capture_logs() as logs:
        reconciler, _ = make(tmp_path, Gateway())
    assert list(reconciler.registered["litellm"]) == ["x"]
    assert [e["model"] for e in logs if e["event"] == "state.model_dropped"] == ["valueOf"]
