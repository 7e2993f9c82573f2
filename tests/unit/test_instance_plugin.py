"""The instance plugin (issue 16): named in the rendered config beside the operator's own plugins,
its source free of secrets, opencode's config directory marked so that opencode loads it offline."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from sidecar.catalog import Catalog, ModelInfo
from sidecar.opencode.config import render_config
from sidecar.opencode.plugin import PLUGIN_NAME, mark_installed, plugin_path, plugin_source
from sidecar.settings import Settings, load_settings
from sidecar.settings_errors import SettingsError

CATALOG = Catalog([ModelInfo(id="m1", display_name="m1")])


def settings(**overrides: object) -> Settings:
    return Settings(gateway_url="http://gw:4000", **overrides)  # type: ignore[arg-type]


def test_the_plugin_is_named_after_the_operators_own_and_once() -> None:
    base = {"plugin": ["opencode-wakatime", f"./{PLUGIN_NAME}", "file:///opt/mine.js"]}
    config = render_config({"litellm": CATALOG}, settings(), base)
    assert config["plugin"] == ["opencode-wakatime", "file:///opt/mine.js", f"./{PLUGIN_NAME}"]
    assert render_config({"litellm": CATALOG}, settings(), {})["plugin"] == [f"./{PLUGIN_NAME}"]


def test_without_the_plugin_the_operators_list_is_left_as_it_is() -> None:
    config = render_config({"litellm": CATALOG}, settings(instance_plugin=False), {"plugin": ["mine"]})
    assert config["plugin"] == ["mine"]
    assert "plugin" not in render_config({"litellm": CATALOG}, settings(instance_plugin=False), {})


def test_the_source_names_the_route_and_the_variable_never_a_token() -> None:
    custody = settings(gateway_token="a-token-of-32-characters-or-more-0123456789")
    source = plugin_source(custody.sidecar_origin)
    assert f'"{custody.sidecar_origin}/sidecar/instances"' in source
    assert 'process.env["OPENCODE_SIDECAR_TOKEN"]' in source
    assert "a-token-of-32" not in source
    assert "import " not in source, "no package: opencode may not be able to install one"
    assert plugin_path(Path("/shared/opencode.json")) == Path("/shared") / PLUGIN_NAME


def test_opencodes_config_directory_is_marked_once_and_an_installed_one_left_alone(tmp_path: Path) -> None:
    config_dir = tmp_path / "config" / "opencode"
    assert mark_installed(config_dir)
    lock = json.loads((config_dir / "package-lock.json").read_text())
    assert "@opencode-ai/plugin" in lock["packages"][""]["dependencies"]
    assert stat.S_IMODE((config_dir / "node_modules").stat().st_mode) == 0o700
    assert stat.S_IMODE((config_dir / "package-lock.json").stat().st_mode) == 0o600
    assert not mark_installed(config_dir)
    installed = tmp_path / "installed"
    (installed / "node_modules").mkdir(parents=True)
    assert not mark_installed(installed)
    assert not (installed / "package-lock.json").exists()


@pytest.mark.parametrize(
    ("variable", "value"), [("SIDECAR_PROMPT_RELOAD_WAIT", "0"), ("SIDECAR_INSTANCE_PLUGIN", "maybe")]
)
def test_a_bad_value_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv("SIDECAR_GATEWAY_URL", "http://gw:4000")
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert str(caught.value).startswith(f"{variable}:") and "\n" not in str(caught.value)


def test_every_directory_made_for_the_mark_is_private(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    config_dir = state / "opencode" / "config" / "opencode"
    previous = os.umask(0o022)
    try:
        assert mark_installed(config_dir)
    finally:
        os.umask(previous)
    for directory in (state / "opencode", state / "opencode" / "config", config_dir, config_dir / "node_modules"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
