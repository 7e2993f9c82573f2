import json
import os
from pathlib import Path

import pytest

from datetime import date

from sidecar.catalog import Catalog, ModelCost, ModelInfo
from sidecar.opencode.config import (
    BaseConfigError,
    dump_config,
    load_base_config,
    render_config,
    rendered_model_ids,
    write_atomically,
)
from sidecar.settings import Settings


def settings(**overrides: object) -> Settings:
    # Direct mode, the providers' own addresses; tests/unit/test_custody.py renders key custody's,
    # tests/unit/test_mcp_config.py the MCP server's entry.
    values: dict[str, object] = {
        "gateway_url": "http://gw:4000", "gateway_api_key": "sk-secret-1", "key_custody": False, "mcp": False,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


CATALOG = Catalog([
    ModelInfo(id="claude-sonnet-4-5", display_name="Claude Sonnet 4.5", max_input_tokens=200000, max_tokens=64000),
    ModelInfo(id="openai/gpt-5.5", display_name="openai/gpt-5.5"),
])


def test_render_lists_every_model_with_limits_and_no_key() -> None:
    config = render_config({"litellm": CATALOG}, settings(default_model="claude-sonnet-4-5"), {})
    text = dump_config(config)
    parsed = json.loads(text)
    assert parsed["$schema"] == "https://opencode.ai/config.json"
    assert parsed["enabled_providers"] == ["litellm"]
    assert parsed["model"] == "litellm/claude-sonnet-4-5"
    provider = parsed["provider"]["litellm"]
    assert provider["npm"] == "@ai-sdk/openai-compatible"
    assert provider["options"] == {"baseURL": "http://gw:4000/v1", "apiKey": "{env:SIDECAR_GATEWAY_API_KEY}"}
    assert provider["models"]["claude-sonnet-4-5"] == {
        "name": "Claude Sonnet 4.5", "limit": {"context": 200000, "output": 64000}
    }
    assert provider["models"]["openai/gpt-5.5"]["limit"] == {"context": 128000, "output": 8192}
    assert "sk-secret-1" not in text
    assert rendered_model_ids(config, ["litellm"]) == {"litellm": {"claude-sonnet-4-5", "openai/gpt-5.5"}}


@pytest.mark.parametrize("hostile", ["{env:SIDECAR_GATEWAY_API_KEY}", "{file:/etc/hostname}", "a}{env:HOME}{"])
def test_gateway_strings_cannot_trigger_substitution(hostile: str) -> None:
    catalog = Catalog([ModelInfo(id=hostile, display_name=hostile)])
    text = dump_config(render_config({"litellm": catalog}, settings(), {}))
    # The text opencode substitutes in holds no pattern but our own key reference ...
    assert text.count("{env:") == 1 and "{file:" not in text
    # ... and the parsed config still carries the name as the gateway gave it.
    parsed = json.loads(text)
    assert parsed["provider"]["litellm"]["models"][hostile]["name"] == hostile


def test_base_config_is_merged_under_and_its_providers_stay_enabled(tmp_path: Path) -> None:
    base_file = tmp_path / "opencode.jsonc"
    base_file.write_text("""{
      // the operator's own
      "theme": "dark",
      "enabled_providers": ["anthropic"],
      "provider": {
        "litellm": {"options": {"headers": {"x-team": "{env:TEAM}"}}},
        "ollama": {"options": {"baseURL": "http://ollama:11434/v1"}},
      },
      "model": "anthropic/claude-opus",
    }""")
    base = load_base_config(base_file)
    config = render_config({"litellm": CATALOG}, settings(), base)
    assert config["theme"] == "dark"
    assert config["enabled_providers"] == ["litellm", "anthropic", "ollama"]
    assert config["model"] == "anthropic/claude-opus"
    litellm = config["provider"]["litellm"]
    assert litellm["options"]["headers"] == {"x-team": "{env:TEAM}"}
    assert litellm["options"]["baseURL"] == "http://gw:4000/v1"
    # The operator's own references are theirs to use: they stay live.
    assert '"{env:TEAM}"' in dump_config(config)


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '"text"'])
def test_bad_base_config_is_a_clear_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "base.json"
    path.write_text(content)
    with pytest.raises(BaseConfigError, match=str(path)):
        load_base_config(path)


def test_write_atomically_replaces_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "state" / "opencode.json"
    write_atomically(target, "one")
    write_atomically(target, "two")
    assert target.read_text() == "two"
    assert os.listdir(target.parent) == ["opencode.json"]


TWO_GATEWAYS = """
[[gateways]]
id = "litellm"
url = "http://127.0.0.1:4000"

[[gateways]]
id = "openrouter"
name = "OpenRouter"
url = "https://openrouter.ai/api/v1"
api_key_env = "OPENROUTER_KEY"
headers = { "x-title" = "opencode", "x-virtual-key" = "{env:VIRTUAL_KEY}" }

[[gateways]]
id = "claude"
url = "http://127.0.0.1:4000"
npm = "@ai-sdk/anthropic"
format = "anthropic"
api_key_env = "CLAUDE_KEY"

[[gateways]]
id = "portkey"
url = "https://api.portkey.ai/v1"
format = "portkey"
api_key_env = "PORTKEY_KEY"
"""


def test_each_gateway_is_its_own_provider_with_keys_only_as_references(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {"OPENROUTER_KEY": "sk-or-1", "VIRTUAL_KEY": "vk-1", "CLAUDE_KEY": "ck-1", "PORTKEY_KEY": "pk-1"}.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "sidecar.toml"
    path.write_text(TWO_GATEWAYS)
    config_settings = Settings(config=path, default_model="gpt-5.5", key_custody=False)  # type: ignore[call-arg]
    rich = ModelInfo(
        id="anthropic/claude-sonnet-4.5",
        display_name="Anthropic: Claude Sonnet 4.5",
        max_input_tokens=1000000,
        max_tokens=64000,
        cost=ModelCost(input=3, output=15, cache_read=0.3),
        input_modalities=("text", "image", "pdf"),
        output_modalities=("text",),
        tool_call=True,
        reasoning=True,
        release_date=date(2025, 9, 29),
    )
    catalogs = {"litellm": CATALOG, "openrouter": Catalog([rich]), "claude": Catalog([CATALOG.get("claude-sonnet-4-5")])}
    config = render_config(catalogs, config_settings, {})
    text = dump_config(config)
    for secret in ("sk-or-1", "vk-1", "ck-1", "pk-1"):
        assert secret not in text
    parsed = json.loads(text)
    assert parsed["enabled_providers"] == ["litellm", "openrouter", "claude", "portkey"]
    assert parsed["model"] == "litellm/gpt-5.5"
    openrouter = parsed["provider"]["openrouter"]
    assert openrouter["name"] == "OpenRouter"
    assert openrouter["options"] == {
        "baseURL": "https://openrouter.ai/api/v1",
        "apiKey": "{env:OPENROUTER_KEY}",
        "headers": {"x-title": "opencode", "x-virtual-key": "{env:VIRTUAL_KEY}"},
    }
    assert openrouter["models"]["anthropic/claude-sonnet-4.5"] == {
        "name": "Anthropic: Claude Sonnet 4.5",
        "limit": {"context": 1000000, "output": 64000},
        "cost": {"input": 3.0, "output": 15.0, "cache_read": 0.3},
        "modalities": {"input": ["text", "image", "pdf"], "output": ["text"]},
        "attachment": True,
        "tool_call": True,
        "reasoning": True,
        "release_date": "2025-09-29",
    }
    claude = parsed["provider"]["claude"]
    assert claude["npm"] == "@ai-sdk/anthropic"
    assert claude["options"] == {"baseURL": "http://127.0.0.1:4000/v1", "apiKey": "{env:CLAUDE_KEY}"}
    # A gateway with nothing listed yet is still a provider, with no models.
    assert parsed["provider"]["portkey"]["models"] == {}
    assert parsed["provider"]["portkey"]["options"]["headers"] == {"x-portkey-api-key": "{env:PORTKEY_KEY}"}
    assert rendered_model_ids(config, ["litellm", "openrouter", "portkey"]) == {
        "litellm": {"claude-sonnet-4-5", "openai/gpt-5.5"},
        "openrouter": {"anthropic/claude-sonnet-4.5"},
        "portkey": set(),
    }


def test_the_whitelist_holds_every_model_of_the_provider_and_the_operators_own_is_kept() -> None:
    base = {"provider": {"litellm": {"models": {"operator-model": {"name": "Mine"}}}}}
    config = render_config({"litellm": CATALOG}, settings(), base)
    whitelist = config["provider"]["litellm"]["whitelist"]
    assert set(whitelist) == {"claude-sonnet-4-5", "openai/gpt-5.5", "operator-model"}
    assert rendered_model_ids(config, ["litellm"])["litellm"] == set(whitelist)
    hostile = render_config({"litellm": Catalog([ModelInfo(id="{env:HOME}", display_name="x")])}, settings(), {})
    assert "{env:HOME}" not in dump_config(hostile)

    narrowed = {"provider": {"litellm": {"whitelist": ["claude-sonnet-4-5"], "blacklist": ["openai/gpt-5.5"]}}}
    config = render_config({"litellm": CATALOG}, settings(), narrowed)
    assert config["provider"]["litellm"]["whitelist"] == ["claude-sonnet-4-5"]
    assert rendered_model_ids(config, ["litellm"]) == {"litellm": {"claude-sonnet-4-5"}}
