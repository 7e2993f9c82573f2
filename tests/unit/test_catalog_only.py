"""Catalog-only mode's parts without a process: the settings it refuses beside it, readiness once
every gateway has a good list, opencode's routes answered 404, and no opencode config written."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from sidecar.catalog import Catalog, ModelInfo
from sidecar.catalog_only import NoDirectories, NoOpencode, OpencodeRoutes
from sidecar.http.routes import create_app
from sidecar.naming import ModelRef
from sidecar.reconcile import Reconciler
from sidecar.settings import Settings, SettingsError, load_settings
from sidecar.statefiles import StatePaths
from tests.support.api_view import view_of

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SIDECAR_"):
            monkeypatch.delenv(name)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SIDECAR_OPENCODE_URL", "http://127.0.0.1:4096"),
        ("SIDECAR_RELOAD", "restart"),
        ("SIDECAR_BASE_CONFIG", "{base}"),
        ("SIDECAR_OPENCODE_DIRECTORY", "{dir}"),
    ],
)
def test_settings_for_an_opencode_are_refused_in_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, value: str
) -> None:
    (tmp_path / "base.json").write_text("{}")
    monkeypatch.setenv("SIDECAR_GATEWAY_URL", "http://gw:4000")
    monkeypatch.setenv("SIDECAR_CATALOG_ONLY", "true")
    monkeypatch.setenv(name, value.format(base=tmp_path / "base.json", dir=tmp_path))
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "\n" not in message and name in message and "SIDECAR_CATALOG_ONLY" in message


def test_catalog_only_is_off_by_default_and_reads_true(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDECAR_GATEWAY_URL", "http://gw:4000")
    assert load_settings().catalog_only is False
    monkeypatch.setenv("SIDECAR_CATALOG_ONLY", "true")
    assert load_settings().catalog_only is True


class Gateway:
    routes = ("openai/*",)

    async def fetch_catalog(self) -> Catalog:
        return Catalog([ModelInfo(id="a", display_name="A")])


class Listener:
    def __init__(self) -> None:
        self.written = 0

    def config_written(self, expected: dict[str, set[str]]) -> None:
        self.written += 1


async def test_a_catalog_only_reconciler_saves_its_lists_and_writes_no_opencode_config(tmp_path: Path) -> None:
    settings = Settings(gateway_url="http://gw", state_dir=tmp_path, catalog_only=True)  # type: ignore[call-arg]
    listener = Listener()
    reconciler = Reconciler(settings, {"litellm": Gateway()}, listener, StatePaths(tmp_path), {})
    assert not reconciler.config_on_disk
    await reconciler.poll_once()
    await reconciler.publish()
    assert reconciler.config_on_disk  # /startupz: the lists are saved
    assert not (tmp_path / "opencode.json").exists() and listener.written == 0
    assert (tmp_path / "catalog-litellm.json").exists()
    assert reconciler.catalog.ids == ["a"]
    assert reconciler.served.gateways["litellm"].current is not None


async def test_with_no_opencode_a_matched_model_is_usable_at_once() -> None:
    assert await NoDirectories("/work").wait_usable("/work", ModelRef("litellm", "a"), 1.0) is True
    handle = NoOpencode()
    assert handle.healthy is False and set(handle.report()) >= {"state", "pid", "healthy", "uptime", "restarts"}


async def test_opencode_routes_answer_404_naming_the_mode() -> None:
    routes = OpencodeRoutes("token")
    app = create_app(view_of(passthrough=routes, websockets=routes))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sidecar") as client:
        for method, path in [("GET", "/session"), ("POST", "/session/x/message"), ("GET", "/event"),
                             ("GET", "/mcp"), ("DELETE", "/anything")]:
            answer = await client.request(method, path)
            assert answer.status_code == 404, (method, path)
            error = answer.json()["error"]
            assert error["type"] == "not_found_error" and "catalog-only" in error["message"]
