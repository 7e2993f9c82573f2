"""The `[[gateways]]` config file and the single-gateway shorthand."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar.gateway.config import GatewayConfigError, load_gateways_file
from sidecar.settings import SettingsError, load_settings

ENVIRON = {"OPENROUTER_KEY": "sk-or-secret", "PORTKEY_VK": "vk-secret", "PORTKEY_KEY": "pk-secret"}

TWO_GATEWAYS = """
[[gateways]]
id = "litellm"
url = "http://127.0.0.1:4000"

[[gateways]]
id = "openrouter"
name = "OpenRouter"
url = "https://openrouter.ai/api/v1"
api_key_env = "OPENROUTER_KEY"
format = "openrouter"
poll_interval = 300
include = ["anthropic/*", "openai/gpt-5*"]
exclude = ["*:free"]
aliases = { sonnet = "anthropic/claude-sonnet-4.5" }
headers = { "x-title" = "opencode", "x-portkey-virtual-key" = "{env:PORTKEY_VK}" }
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sidecar.toml"
    path.write_text(text)
    return path


def load(tmp_path: Path, text: str, environ: dict[str, str] | None = None):
    return load_gateways_file(write(tmp_path, text), default_poll_interval=30, environ=environ or ENVIRON)


def test_two_gateways_in_the_operators_order(tmp_path: Path) -> None:
    litellm, openrouter = load(tmp_path, TWO_GATEWAYS)
    assert (litellm.id, litellm.name, litellm.api_base, litellm.format) == (
        "litellm",
        "litellm",
        "http://127.0.0.1:4000/v1",
        "auto",
    )
    assert litellm.poll_interval == 30 and litellm.api_key is None
    assert openrouter.api_base == "https://openrouter.ai/api/v1"
    assert openrouter.root == "https://openrouter.ai/api"
    assert openrouter.poll_interval == 300
    assert openrouter.api_key is not None and openrouter.api_key.get_secret_value() == "sk-or-secret"
    # The sidecar sends the value; opencode's file keeps the reference.
    assert openrouter.request_headers["x-portkey-virtual-key"] == "vk-secret"
    assert openrouter.config_headers["x-portkey-virtual-key"] == "{env:PORTKEY_VK}"
    assert set(openrouter.env_names) == {"OPENROUTER_KEY", "PORTKEY_VK"}
    assert set(openrouter.secret_values) == {"sk-or-secret", "vk-secret"}
    assert "sk-or-secret" not in repr(openrouter)


def test_include_and_exclude_globs(tmp_path: Path) -> None:
    _, openrouter = load(tmp_path, TWO_GATEWAYS)
    assert openrouter.wants("anthropic/claude-sonnet-4.5")
    assert openrouter.wants("openai/gpt-5.5")
    assert not openrouter.wants("openai/gpt-4o")  # not included
    assert not openrouter.wants("anthropic/claude-haiku:free")  # excluded
    litellm, _ = load(tmp_path, TWO_GATEWAYS)
    assert litellm.wants("anything")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[[gateways]]\nid = 'LiteLLM'\nurl = 'http://gw'\n", "gateways[0] (LiteLLM): id: must be lowercase"),
        ("[[gateways]]\nid = 'gw'\n", "gateways[0] (gw): url: is required"),
        ("[[gateways]]\nid = 'gw'\nurl = 'not a url'\n", "gateways[0] (gw): url:"),
        ("[[gateways]]\nid = 'gw'\nurl = 'http://gw'\nformat = 'xml'\n", "gateways[0] (gw): format:"),
        ("[[gateways]]\nid = 'gw'\nurl = 'http://gw'\npoll_interval = 0\n", "gateways[0] (gw): poll_interval:"),
        ("[[gateways]]\nid = 'gw'\nurl = 'http://gw'\nprovider = 'x'\n", "gateways[0] (gw): provider: is not a known"),
        (
            "[[gateways]]\nid = 'gw'\nurl = 'http://gw'\napi_key_env = 'MISSING_KEY'\n",
            "gateways[0] (gw): api_key_env: the variable MISSING_KEY is not set",
        ),
        (
            "[[gateways]]\nid = 'gw'\nurl = 'http://gw'\nheaders = { x-a = '{env:NOPE}' }\n",
            "gateways[0] (gw): headers: 'x-a' names the variable NOPE, which is not set",
        ),
        ("[[gateways]]\nid = 'gw'\nurl = 'http://user:pw@gw'\n", "gateways[0] (gw): url: put the key"),
        (
            "[[gateways]]\nid = 'a'\nurl = 'http://a'\n[[gateways]]\nid = 'a'\nurl = 'http://b'\n",
            "gateways[1] (a): id: 'a' is the id of an earlier gateway",
        ),
        (
            "[[gateways]]\nid = 'a'\nurl = 'http://a'\naliases = { s = 'x' }\n"
            "[[gateways]]\nid = 'b'\nurl = 'http://b'\naliases = { s = 'y' }\n",
            "gateways[1] (b): aliases: 's' is an alias of gateway 'a' too",
        ),
        ("[[gateways]]\nid = 'gw'\nurl = 'http://gw'\naliases = { s = '{env:HOME}' }\n", "substitution pattern"),
        ("[[gateway]]\nid = 'gw'\n", "unknown key 'gateway'"),
        ("", "no [[gateways]] table"),
        ("[[gateways]\n", "is not valid TOML"),
    ],
)
def test_a_bad_file_is_one_error_naming_the_entry_and_field(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(GatewayConfigError) as caught:
        load(tmp_path, text)
    assert expected in str(caught.value)
    assert str(tmp_path) in str(caught.value)


def test_a_bad_file_never_echoes_a_secret(tmp_path: Path) -> None:
    text = "[[gateways]]\nid = 'gw'\nurl = 'http://gw'\napi_key_env = 'OPENROUTER_KEY'\nnpm = 'Not A Package'\n"
    with pytest.raises(GatewayConfigError) as caught:
        load(tmp_path, text)
    assert "npm" in str(caught.value) and "sk-or-secret" not in str(caught.value)


def test_settings_take_the_file_or_the_shorthand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENVIRON.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SIDECAR_GATEWAY_URL", raising=False)
    settings = load_settings(config=write(tmp_path, TWO_GATEWAYS))
    assert [g.id for g in settings.gateways] == ["litellm", "openrouter"]
    assert settings.default_provider == "litellm"
    assert "sk-or-secret" in settings.secrets() and "vk-secret" in settings.secrets()

    shorthand = load_settings(gateway_url="http://gw:4000", gateway_api_key="sk-gw", provider_id="gw")
    (only,) = shorthand.gateways
    assert (only.id, only.api_base, only.api_key_env) == ("gw", "http://gw:4000/v1", "SIDECAR_GATEWAY_API_KEY")

    with pytest.raises(SettingsError, match="SIDECAR_GATEWAY_URL or the gateways of SIDECAR_CONFIG"):
        load_settings(config=write(tmp_path, TWO_GATEWAYS), gateway_url="http://gw")
    with pytest.raises(SettingsError, match="SIDECAR_GATEWAY_URL: is required"):
        load_settings()
    with pytest.raises(SettingsError, match=r"^SIDECAR_CONFIG: .*gateways\[0\] \(litellm\): format"):
        load_settings(config=write(tmp_path, "[[gateways]]\nid = 'litellm'\nurl = 'http://a'\nformat = 'x'\n"))
    with pytest.raises(SettingsError, match="SIDECAR_CONFIG: no such file"):
        load_settings(config=tmp_path / "missing.toml")


def test_a_provider_id_opencode_cannot_hold_is_a_settings_error(tmp_path: Path) -> None:
    # `constructor` as a key of opencode's `provider` map made its /config/providers answer 500.
    with pytest.raises(GatewayConfigError, match=r"gateways\[0\] \(constructor\): id: is 'constructor', a JavaScript"):
        load(tmp_path, "[[gateways]]\nid = 'constructor'\nurl = 'http://gw'\n")
    with pytest.raises(SettingsError) as caught:
        load_settings(gateway_url="http://gw:4000", provider_id="constructor")
    assert str(caught.value).startswith("SIDECAR_PROVIDER_ID: is 'constructor', a JavaScript Object.prototype name")
    # Ids that merely look alike are fine (provider ids are lowercase: `tostring` is not `toString`).
    assert [g.id for g in load(tmp_path, "[[gateways]]\nid = 'tostring'\nurl = 'http://gw'\n")] == ["tostring"]


def test_an_alias_naming_a_reserved_id_is_a_settings_error(tmp_path: Path) -> None:
    with pytest.raises(GatewayConfigError, match="the target of 's' is 'valueOf'"):
        load(tmp_path, "[[gateways]]\nid = 'gw'\nurl = 'http://gw'\naliases = { s = 'valueOf' }\n")
    with pytest.raises(SettingsError, match="SIDECAR_MODEL_ALIASES: an alias is 'toString'"):
        load_settings(gateway_url="http://gw:4000", model_aliases={"toString": "gpt-5.5"})
