"""The sidecar's MCP server in opencode's config (issue 18): named by default as a remote server
that opencode reaches with the internal token, left out with SIDECAR_MCP=false, beside the
operator's own MCP servers. tests/integration/test_mcp.py checks the real opencode connects."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sidecar.catalog import Catalog, ModelInfo
from sidecar.opencode.config import dump_config, render_config
from sidecar.opencode.spawn import child_environment
from sidecar.settings import Settings

TOKEN = "t" * 32
CATALOG = Catalog([ModelInfo(id="claude-sonnet-4-5", display_name="Claude Sonnet 4.5")])
OURS = {
    "type": "remote",
    "url": "http://127.0.0.1:4097/mcp",
    "headers": {"Authorization": "Bearer {env:OPENCODE_SIDECAR_TOKEN}"},
    "oauth": False,
    "enabled": True,
}


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SIDECAR_") or name == "OPENCODE_SIDECAR_TOKEN":
            monkeypatch.delenv(name)


def settings_of(tmp_path: Path, **overrides: object) -> Settings:
    settings = Settings(gateway_url="http://gw:4000", gateway_api_key="sk-secret-1", state_dir=tmp_path, **overrides)  # type: ignore[arg-type]
    return settings.with_password().with_gateway_token()


def rendered(settings: Settings, base: dict | None = None) -> tuple[str, dict]:
    text = dump_config(render_config({"litellm": CATALOG}, settings, base or {}))
    return text, json.loads(text)


def test_the_mcp_server_is_named_by_default_with_the_token_as_a_reference(tmp_path: Path) -> None:
    settings = settings_of(tmp_path)
    assert settings.mcp is True
    text, config = rendered(settings)
    assert config["mcp"] == {"sidecar": OURS}
    assert settings.gateway_token is not None and settings.gateway_token.get_secret_value() not in text


def test_sidecar_mcp_false_leaves_it_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDECAR_MCP", "false")
    _, config = rendered(settings_of(tmp_path))
    assert "mcp" not in config


def test_the_operators_mcp_servers_are_kept(tmp_path: Path) -> None:
    theirs = {"type": "local", "command": ["their-server"], "enabled": True}
    base = {"mcp": {"theirs": theirs}}
    _, config = rendered(settings_of(tmp_path), base)
    assert config["mcp"] == {"theirs": theirs, "sidecar": OURS}
    _, without = rendered(settings_of(tmp_path, mcp=False), base)
    assert without["mcp"] == {"theirs": theirs}


def test_without_custody_a_started_opencode_still_gets_the_token_for_the_mcp_server(tmp_path: Path) -> None:
    settings = settings_of(tmp_path, key_custody=False)
    _, config = rendered(settings)
    assert config["mcp"] == {"sidecar": OURS}
    # The providers reach the gateway themselves, as before: the token opens only /mcp for them.
    assert config["provider"]["litellm"]["options"]["baseURL"] == "http://gw:4000/v1"
    env = child_environment(settings, tmp_path / "opencode.json")
    assert settings.gateway_token is not None
    assert env["OPENCODE_SIDECAR_TOKEN"] == settings.gateway_token.get_secret_value()


def test_without_custody_an_attached_opencode_gets_no_entry(tmp_path: Path) -> None:
    # The other container's opencode has no way to learn a token the operator didn't give both.
    settings = settings_of(
        tmp_path, key_custody=False, opencode_url="http://127.0.0.1:4096", opencode_config=tmp_path / "shared.json"
    )
    _, config = rendered(settings)
    assert "mcp" not in config
    with_custody = settings_of(
        tmp_path, opencode_url="http://127.0.0.1:4096", opencode_config=tmp_path / "shared.json", gateway_token=TOKEN
    )
    assert rendered(with_custody)[1]["mcp"] == {"sidecar": OURS}
