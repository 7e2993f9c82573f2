"""Key custody (issue 15): opencode's config points each provider at the sidecar with a token, and
opencode's environment holds the token and its password, never a gateway key; with
SIDECAR_KEY_CUSTODY=false both are as before. tests/integration/test_key_custody.py checks the same
against the real opencode."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sidecar.catalog import Catalog, ModelInfo
from sidecar.http.exposure import reachable_origin
from sidecar.opencode.config import dump_config, render_config
from sidecar.opencode.spawn import child_environment
from sidecar.settings import Settings, SettingsError, load_settings

TOKEN = "t" * 32
GATEWAYS = """
[[gateways]]
id = "litellm"
url = "http://127.0.0.1:4000"
api_key_env = "LITELLM_KEY"

[[gateways]]
id = "claude"
url = "http://127.0.0.1:4000/v1"
npm = "@ai-sdk/anthropic"
format = "anthropic"
api_key_env = "CLAUDE_KEY"

[[gateways]]
id = "portkey"
url = "https://api.portkey.ai/v1"
format = "portkey"
api_key_env = "PORTKEY_KEY"
headers = { "x-title" = "opencode", "x-portkey-virtual-key" = "{env:PORTKEY_VK}" }
"""
SECRETS = {"LITELLM_KEY": "sk-litellm-1", "CLAUDE_KEY": "sk-claude-1", "PORTKEY_KEY": "pk-1", "PORTKEY_VK": "vk-1"}
CATALOG = Catalog([ModelInfo(id="claude-sonnet-4-5", display_name="Claude Sonnet 4.5")])


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SIDECAR_") or name == "OPENCODE_SIDECAR_TOKEN":
            monkeypatch.delenv(name)
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)


def three_gateways(tmp_path: Path, **overrides: object) -> Settings:
    path = tmp_path / "sidecar.toml"
    path.write_text(GATEWAYS)
    return Settings(config=path, state_dir=tmp_path / "state", **overrides).with_password().with_gateway_token()  # type: ignore[arg-type]


def rendered(settings: Settings) -> tuple[str, dict]:
    text = dump_config(render_config({gateway.id: CATALOG for gateway in settings.gateways}, settings, {}))
    return text, json.loads(text)


# --- settings -------------------------------------------------------------------------------------


def test_custody_is_the_default_with_a_fresh_token_per_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDECAR_GATEWAY_URL", "http://gw:4000")
    settings = load_settings()
    assert settings.key_custody is True and settings.gateway_token is None
    first, second = settings.with_password().with_gateway_token(), settings.with_password().with_gateway_token()
    assert first.gateway_token is not None and second.gateway_token is not None
    assert len(first.gateway_token.get_secret_value()) >= 32
    assert first.gateway_token.get_secret_value() != second.gateway_token.get_secret_value()
    # Held for others: answers and logs never show it.
    assert first.gateway_token.get_secret_value() in first.held_secrets()
    assert first.gateway_token.get_secret_value() in first.secrets()


def test_a_given_token_is_kept_and_held(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDECAR_GATEWAY_URL", "http://gw:4000")
    monkeypatch.setenv("SIDECAR_GATEWAY_TOKEN", TOKEN)
    settings = load_settings().with_password().with_gateway_token()
    assert settings.gateway_token is not None and settings.gateway_token.get_secret_value() == TOKEN
    assert TOKEN in settings.held_secrets()


@pytest.mark.parametrize("token", ["short", " " * 40, "x" * 31])
def test_a_short_token_names_the_variable_and_not_the_value(monkeypatch: pytest.MonkeyPatch, token: str) -> None:
    monkeypatch.setenv("SIDECAR_GATEWAY_URL", "http://gw:4000")
    monkeypatch.setenv("SIDECAR_GATEWAY_TOKEN", token)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith("SIDECAR_GATEWAY_TOKEN: must be at least 32 characters")
    assert "\n" not in message and (token.strip() == "" or token not in message)


def attach(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SIDECAR_GATEWAY_URL", "http://gw:4000")
    monkeypatch.setenv("SIDECAR_OPENCODE_URL", "http://127.0.0.1:4096")
    monkeypatch.setenv("SIDECAR_OPENCODE_CONFIG", str(tmp_path / "shared" / "opencode.json"))


def test_attach_mode_with_custody_requires_the_shared_token(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    attach(monkeypatch, tmp_path)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith("SIDECAR_GATEWAY_TOKEN: is required in attach mode with key custody")
    assert "OPENCODE_SIDECAR_TOKEN" in message and "SIDECAR_KEY_CUSTODY=false" in message
    assert "\n" not in message

    monkeypatch.setenv("SIDECAR_GATEWAY_TOKEN", TOKEN)
    settings = load_settings().with_password().with_gateway_token()
    # The operator's token, not a made-up one: opencode in the other container has that one.
    assert settings.gateway_token is not None and settings.gateway_token.get_secret_value() == TOKEN
    assert settings.opencode_password is None

    monkeypatch.delenv("SIDECAR_GATEWAY_TOKEN")
    monkeypatch.setenv("SIDECAR_KEY_CUSTODY", "false")
    assert load_settings().key_custody is False


@pytest.mark.parametrize(
    ("host", "origin"),
    [
        ("127.0.0.1", "http://127.0.0.1:4097"),
        ("0.0.0.0", "http://127.0.0.1:4097"),
        ("localhost", "http://127.0.0.1:4097"),
        ("127.0.0.2", "http://127.0.0.2:4097"),
        ("::", "http://[::1]:4097"),
        ("::1", "http://[::1]:4097"),
        ("10.1.2.3", "http://10.1.2.3:4097"),
        ("fd00::5", "http://[fd00::5]:4097"),
    ],
)
def test_opencode_reaches_the_sidecar_where_it_listens(host: str, origin: str) -> None:
    assert reachable_origin(host, 4097) == origin


def test_the_origin_is_the_listen_port_on_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDECAR_GATEWAY_URL", "http://gw:4000")
    monkeypatch.setenv("SIDECAR_LISTEN", "0.0.0.0:5123")
    monkeypatch.setenv("SIDECAR_API_KEY", "k" * 32)
    assert load_settings().sidecar_origin == "http://127.0.0.1:5123"


# --- opencode's config ----------------------------------------------------------------------------


def test_with_custody_every_provider_points_at_the_sidecar_with_the_token_alone(tmp_path: Path) -> None:
    settings = three_gateways(tmp_path, listen="127.0.0.1:4097")
    text, config = rendered(settings)
    for gateway in ("litellm", "claude", "portkey"):
        # No key, no header: the sidecar adds the key and every configured header itself.
        assert config["provider"][gateway]["options"] == {
            "baseURL": f"http://127.0.0.1:4097/gateway/{gateway}/v1",
            "apiKey": "{env:OPENCODE_SIDECAR_TOKEN}",
        }
    assert config["provider"]["claude"]["npm"] == "@ai-sdk/anthropic"
    # The only variable opencode is asked to expand is the token's (three providers and the MCP
    # server); no value of any secret is written.
    assert text.count("{env:") == 4 and text.count("{env:OPENCODE_SIDECAR_TOKEN}") == 4
    for secret in [*SECRETS.values(), *settings.held_secrets()]:
        assert secret not in text


def test_the_shorthand_gateway_points_at_the_sidecar_too(tmp_path: Path) -> None:
    settings = Settings(gateway_url="http://gw:4000", gateway_api_key="sk-secret-1", state_dir=tmp_path)  # type: ignore[arg-type]
    _, config = rendered(settings)
    assert config["provider"]["litellm"]["options"] == {
        "baseURL": "http://127.0.0.1:4097/gateway/litellm/v1",
        "apiKey": "{env:OPENCODE_SIDECAR_TOKEN}",
    }


def test_attach_mode_names_the_sidecars_loopback_address(tmp_path: Path) -> None:
    settings = Settings(
        gateway_url="http://litellm:4000", gateway_api_key="sk-secret-1", state_dir=tmp_path, listen="0.0.0.0:4097",
        api_key="k" * 32, opencode_url="http://127.0.0.1:4096", opencode_config=tmp_path / "shared.json",
        gateway_token=TOKEN,
    )  # type: ignore[arg-type]
    text, config = rendered(settings.with_password().with_gateway_token())
    assert config["provider"]["litellm"]["options"]["baseURL"] == "http://127.0.0.1:4097/gateway/litellm/v1"
    assert TOKEN not in text and "sk-secret-1" not in text


def test_without_custody_the_config_is_as_before(tmp_path: Path) -> None:
    # SIDECAR_MCP=false: the MCP server's entry is the token's one use without custody (test_mcp_config.py).
    settings = three_gateways(tmp_path, key_custody=False, mcp=False)
    text, config = rendered(settings)
    assert config["provider"]["litellm"]["options"] == {"baseURL": "http://127.0.0.1:4000/v1", "apiKey": "{env:LITELLM_KEY}"}
    assert config["provider"]["claude"]["options"] == {"baseURL": "http://127.0.0.1:4000/v1", "apiKey": "{env:CLAUDE_KEY}"}
    assert config["provider"]["portkey"]["options"] == {
        "baseURL": "https://api.portkey.ai/v1",
        "apiKey": "{env:PORTKEY_KEY}",
        "headers": {
            "x-title": "opencode",
            "x-portkey-virtual-key": "{env:PORTKEY_VK}",
            "x-portkey-api-key": "{env:PORTKEY_KEY}",
        },
    }
    assert "OPENCODE_SIDECAR_TOKEN" not in text
    for secret in SECRETS.values():
        assert secret not in text


# --- opencode's environment -----------------------------------------------------------------------


def test_with_custody_the_child_gets_the_token_and_its_password_and_no_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIDECAR_SOMETHING", "sidecar-only")
    settings = three_gateways(tmp_path)
    env = child_environment(settings, tmp_path / "opencode.json")
    assert settings.gateway_token is not None and settings.opencode_password is not None
    assert env["OPENCODE_SIDECAR_TOKEN"] == settings.gateway_token.get_secret_value()
    assert env["OPENCODE_SERVER_PASSWORD"] == settings.opencode_password.get_secret_value()
    # Not even under the names the operator gave them, which the sidecar itself was started with.
    assert not SECRETS.keys() & env.keys()
    assert not [name for name in env if name.startswith("SIDECAR_")]
    held = set(settings.held_secrets()) - {env["OPENCODE_SIDECAR_TOKEN"], env["OPENCODE_SERVER_PASSWORD"]}
    assert held and not held & set(env.values())
    assert not any(secret in value for secret in SECRETS.values() for value in env.values())


def test_with_custody_the_shorthand_key_stays_out_of_the_child(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDECAR_GATEWAY_API_KEY", "sk-shorthand-1")
    settings = Settings(gateway_url="http://gw:4000", state_dir=tmp_path).with_password().with_gateway_token()  # type: ignore[call-arg]
    env = child_environment(settings, tmp_path / "opencode.json")
    assert "sk-shorthand-1" not in env.values() and "SIDECAR_GATEWAY_API_KEY" not in env
    assert "OPENCODE_SIDECAR_TOKEN" in env


def test_without_custody_the_child_environment_is_as_before(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A token in the sidecar's own environment is not opencode's business in direct mode: the one
    # it gets is the sidecar's own, which the instance plugin announces with.
    monkeypatch.setenv("OPENCODE_SIDECAR_TOKEN", TOKEN)
    settings = three_gateways(tmp_path, key_custody=False, mcp=False)
    env = child_environment(settings, tmp_path / "opencode.json")
    assert {name: env[name] for name in SECRETS} == SECRETS
    # The sidecar's own token, for the instance plugin (issue 16), never one it inherited.
    assert settings.gateway_token is not None
    assert env["OPENCODE_SIDECAR_TOKEN"] == settings.gateway_token.get_secret_value() != TOKEN

    monkeypatch.setenv("SIDECAR_GATEWAY_API_KEY", "sk-shorthand-1")
    shorthand = Settings(gateway_url="http://gw:4000", state_dir=tmp_path, key_custody=False, mcp=False).with_password().with_gateway_token()  # type: ignore[call-arg]
    assert child_environment(shorthand, tmp_path / "opencode.json")["SIDECAR_GATEWAY_API_KEY"] == "sk-shorthand-1"
