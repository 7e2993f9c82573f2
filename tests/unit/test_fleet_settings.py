"""Fleet mode's settings: `catalog_url`, `catalog_api_key_env` and `catalog_gateway` in a
`[[gateways]]` entry, the SIDECAR_CATALOG_* shorthand, and the hub's key kept from opencode."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sidecar.gateway.config import GatewayConfigError, load_gateways_file
from sidecar.opencode.config import dump_config, render_config
from sidecar.opencode.spawn import child_environment
from sidecar.catalog import Catalog, ModelInfo
from sidecar.settings import Settings, SettingsError, load_settings

HUB_KEY = "hub-secret-0123456789abcdef0123456789"
ENVIRON = {"HUB_KEY": HUB_KEY, "GW_KEY": "sk-gw-secret"}

FOLLOWER = """
[[gateways]]
id = "litellm"
url = "http://gw:4000"
api_key_env = "GW_KEY"
catalog_url = "http://hub:4097/"
catalog_api_key_env = "HUB_KEY"

[[gateways]]
id = "other"
url = "http://other:4000"
catalog_url = "https://hub.example"
catalog_gateway = "upstream-id"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sidecar.toml"
    path.write_text(text)
    return path


def test_a_follower_entry(tmp_path: Path) -> None:
    first, second = load_gateways_file(write(tmp_path, FOLLOWER), default_poll_interval=30, environ=ENVIRON)
    assert (first.catalog_url, first.catalog_gateway, first.catalog_api_key_env) == ("http://hub:4097", "litellm", "HUB_KEY")
    assert first.catalog_api_key is not None and first.catalog_api_key.get_secret_value() == HUB_KEY
    assert first.api_base == "http://gw:4000/v1"  # model traffic still goes to the gateway
    assert "HUB_KEY" not in first.env_names and HUB_KEY in first.secret_values  # never opencode's; always scrubbed
    assert HUB_KEY not in repr(first)
    assert (second.catalog_url, second.catalog_gateway, second.catalog_api_key) == ("https://hub.example", "upstream-id", None)


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("catalog_url = 'http://user:pw@hub:4097'", "catalog_url: put the hub's key in the variable"),
        ("catalog_url = 'http://hub:4097/?x=1'", "catalog_url: must not have a query"),
        ("catalog_url = 'http://hub:4097/#f'", "catalog_url: must not have a query or a fragment"),
        ("catalog_url = 'ftp://hub'", "catalog_url: URL scheme should be 'http' or 'https'"),
        ("catalog_url = 'http://hub'\ncatalog_api_key_env = 'UNSET_HUB_KEY'", "catalog_api_key_env: the variable UNSET_HUB_KEY is not set"),
        ("catalog_url = 'http://hub'\ncatalog_api_key_env = 'EMPTY'", "catalog_api_key_env: the variable EMPTY is not set"),
        ("catalog_url = 'http://hub'\ncatalog_api_key_env = 'not a name'", "catalog_api_key_env: must be the name"),
        ("catalog_url = 'http://hub'\ncatalog_gateway = 'Bad/Id'", "catalog_gateway: must be lowercase"),
        ("catalog_api_key_env = 'HUB_KEY'", "set catalog_url too"),
    ],
)
def test_a_bad_follower_entry_is_one_error(tmp_path: Path, entry: str, expected: str) -> None:
    text = f"[[gateways]]\nid = 'gw'\nurl = 'http://gw'\n{entry}\n"
    with pytest.raises(GatewayConfigError) as caught:
        load_gateways_file(write(tmp_path, text), default_poll_interval=30, environ={**ENVIRON, "EMPTY": " "})
    assert expected in str(caught.value) and "\n" not in str(caught.value)
    assert "pw" not in str(caught.value).replace("put", "") and HUB_KEY not in str(caught.value)


def test_the_shorthand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SIDECAR_GATEWAY_URL", raising=False)
    settings = load_settings(gateway_url="http://gw:4000", catalog_url="http://hub:4097", catalog_api_key=HUB_KEY,
                             provider_id="gw", state_dir=tmp_path)
    (only,) = settings.gateways
    assert (only.catalog_url, only.catalog_gateway) == ("http://hub:4097", "gw")
    assert HUB_KEY in settings.secrets() and HUB_KEY in settings.held_secrets()
    for kwargs, expected in [
        (dict(catalog_url="http://k@hub"), "SIDECAR_CATALOG_URL: put the hub's key in SIDECAR_CATALOG_API_KEY"),
        (dict(catalog_url="http://hub?a=b"), "SIDECAR_CATALOG_URL: must not have a query"),
        (dict(catalog_api_key=HUB_KEY), "SIDECAR_CATALOG_API_KEY: is the hub's key; set SIDECAR_CATALOG_URL too"),
        (dict(catalog_url="http://hub", config=write(tmp_path, FOLLOWER), gateway_url=None),
         "SIDECAR_CATALOG_URL: is for the SIDECAR_GATEWAY_URL shorthand"),
    ]:
        with pytest.raises(SettingsError) as caught:
            load_settings(**{"gateway_url": "http://gw:4000", **kwargs})
        assert str(caught.value).startswith(expected) and HUB_KEY not in str(caught.value)


def test_the_hub_key_never_reaches_opencode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENVIRON.items():
        monkeypatch.setenv(name, value)
    for custody in (True, False):
        settings = Settings(config=write(tmp_path, FOLLOWER), state_dir=tmp_path, key_custody=custody)  # type: ignore[call-arg]
        settings = settings.with_password().with_gateway_token()
        env = child_environment(settings, tmp_path / "opencode.json")
        assert "HUB_KEY" not in env and HUB_KEY not in env.values()
        models = Catalog([ModelInfo(id="m", display_name="m")])
        text = dump_config(render_config({"litellm": models, "other": models}, settings, {}))
        assert HUB_KEY not in text and "HUB_KEY" not in text and "hub:4097" not in text
        assert json.loads(text)["provider"]["litellm"]["options"]["baseURL"] != "http://hub:4097"

