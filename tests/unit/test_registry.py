"""The reconciler's registry: requested models are written once, kept, and dropped when listed."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

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
