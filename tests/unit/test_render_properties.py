"""Whatever ids and names a gateway sends, opencode reads back the config the sidecar meant.

opencode does not parse its config file as it is. It first replaces `{env:NAME}` and
`{file:path}` in the raw text, then parses the result with jsonc-parser (comments and trailing
commas allowed). `opencode_reads` below is that reading, written from opencode 1.18.33's own code
(`ConfigVariable.substitute` and `ConfigParse.jsonc`, read from the pinned binary).
tests/integration/test_opencode_reads.py hands hostile ids to the real binary.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.catalog import OPENCODE_RESERVED_KEYS, Catalog, ModelInfo
from sidecar.lists.anthropic import parse_anthropic_page
from sidecar.lists.formats import parse_models
from sidecar.lists.litellm import enrich_with_litellm_info, parse_litellm_model_info
from sidecar.opencode.config import dump_config, render_config, rendered_model_ids
from sidecar.settings import Settings

# Bounded and the same on every run, so the suite's time is too.
BOUNDED = settings(
    max_examples=300, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)

# Key custody (the default): the one variable the config names is the gateway token's.
KEY_ENV = "OPENCODE_SIDECAR_TOKEN"
KEY = "property-token-" + "t" * 32
# Without the MCP server's entry, whose token reference is ours (tests/unit/test_mcp_config.py).
SETTINGS = Settings(gateway_url="http://gw:4000", gateway_api_key="sk-secret-1", mcp=False)  # type: ignore[arg-type]
PROVIDER = "litellm"

# --- opencode's reading of its config text --------------------------------------------------

ENV_REFERENCE = re.compile(r"\{env:([^}]+)\}")
FILE_REFERENCE = re.compile(r"\{file:[^}]+\}")
JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


def js_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # jsonc-parser builds objects by assignment, and in JavaScript `o["__proto__"] = v` sets the
    # prototype instead of adding a key: the entry is gone from the config opencode sees.
    return {key: value for key, value in pairs if key != "__proto__"}


def opencode_reads(text: str, env: dict[str, str]) -> tuple[Any, list[str], list[str]]:
    """The config opencode gets from `text`, the variables it substituted, and the files it would read."""
    substituted: list[str] = []

    def variable(match: re.Match[str]) -> str:
        substituted.append(match[1])
        return env.get(match[1], "")

    text = ENV_REFERENCE.sub(variable, text)
    # Each of these is replaced by a file's contents (or fails the load when the file is missing).
    files = [match[0] for match in FILE_REFERENCE.finditer(text)]
    return json.loads(text, object_pairs_hook=js_object), substituted, files


def outside_strings(text: str) -> str:
    return JSON_STRING.sub('""', text)


def assert_opencode_reads_what_was_rendered(models: list[ModelInfo]) -> None:
    """The rendered file holds no pattern but the key reference, no comment, and every model as given."""
    catalog = Catalog(models)
    config = render_config({PROVIDER: catalog}, SETTINGS, {})
    text = dump_config(config)

    # Plain ASCII: no U+2028, BOM or control character reaches opencode's parser unescaped.
    assert text.isascii()
    # jsonc-parser skips `//` and `/*` only outside strings; here there are none for any reader.
    assert "/" not in outside_strings(text)
    # The text says exactly what was rendered ...
    assert json.loads(text) == config

    # ... and still does after opencode's substitution, but for the key it was meant to take.
    seen, substituted, files = opencode_reads(text, {KEY_ENV: KEY})
    assert substituted == [KEY_ENV]
    assert files == []
    provider = seen["provider"][PROVIDER]
    assert provider["options"]["apiKey"] == KEY
    provider["options"]["apiKey"] = f"{{env:{KEY_ENV}}}"
    assert seen == js_object(list(json.loads(text).items()))

    # Every model the sidecar says it rendered is in opencode's config under its exact id and name.
    rendered = rendered_model_ids(config, [PROVIDER])[PROVIDER]
    names = {model.id: model.display_name for model in catalog}
    assert {model_id: entry["name"] for model_id, entry in provider["models"].items()} == {
        model_id: names[model_id] for model_id in rendered
    }
    assert set(provider["whitelist"]) == rendered
    # And that is every model the gateway's list gave, but one opencode cannot hold as a key.
    assert rendered == set(names) - OPENCODE_RESERVED_KEYS


# --- What a gateway may send ----------------------------------------------------------------

HOSTILE = [
    f"{{env:{KEY_ENV}}}", "{env:HOME}", "{env:", "{file:/etc/passwd}", "{file:~/.ssh/id_rsa}", "{file:",
    "{", "}", "}{", '"', "'", "\\", "\\u007b", "\\u007d", '\\"', "\\n", "//", "/*", "*/", "#",
    "${env:HOME}", "$env:HOME", "$HOME", "__proto__", "constructor", "prototype",
    "\u2028", "\u2029", "\ufeff", "\u200b", "\x00", "\x1b", "\n", "\r", "\t", "\x7f", "\U0001f600", " ", ":", "*",
]
PRINTABLE = st.characters(exclude_categories=["C", "Zl", "Zp"])

gateway_strings = st.one_of(
    st.text(),
    st.text(PRINTABLE),
    st.lists(st.one_of(st.sampled_from(HOSTILE), st.text(PRINTABLE, max_size=4)), max_size=12).map("".join),
    st.text(PRINTABLE, min_size=240, max_size=300),  # about the longest an id or name may be
    st.sampled_from([
        "__proto__", "constructor", "toString", f"{{env:{KEY_ENV}}}", "{env:SIDECAR_GATEWAY_API_KEY}", "{file:/etc/passwd}"
    ]),
)


def openai(entries: list[tuple[str, str]]) -> list[ModelInfo]:
    return parse_models("openai", {"data": [{"id": model_id, "object": "model"} for model_id, _ in entries]}).models


def openrouter(entries: list[tuple[str, str]]) -> list[ModelInfo]:
    return parse_models("openrouter", {"data": [{"id": model_id, "name": name} for model_id, name in entries]}).models


def together(entries: list[tuple[str, str]]) -> list[ModelInfo]:
    return parse_models("together", [{"id": model_id, "display_name": name} for model_id, name in entries]).models


def anthropic(entries: list[tuple[str, str]]) -> list[ModelInfo]:
    data = [{"type": "model", "id": model_id, "display_name": name} for model_id, name in entries]
    return parse_anthropic_page({"data": data, "has_more": False})[0].models


def litellm(entries: list[tuple[str, str]]) -> list[ModelInfo]:
    listed = parse_models("litellm", {"data": [{"id": model_id} for model_id, _ in entries]})
    info = [{"model_name": model_id, "model_info": {"display_name": name}} for model_id, name in entries]
    return enrich_with_litellm_info(listed, parse_litellm_model_info({"data": info})).models


READERS: list[Callable[[list[tuple[str, str]]], list[ModelInfo]]] = [openai, openrouter, together, anthropic, litellm]


# --- Properties -----------------------------------------------------------------------------


@BOUNDED
@given(ids=st.lists(gateway_strings, min_size=1, max_size=6))
def test_any_model_id_is_read_back_by_opencode_as_sent(ids: list[str]) -> None:
    assert_opencode_reads_what_was_rendered(openai([(model_id, "") for model_id in ids]))


@BOUNDED
@given(
    read=st.sampled_from(READERS),
    entries=st.lists(st.tuples(gateway_strings, gateway_strings), min_size=1, max_size=6),
)
def test_any_display_name_is_read_back_by_opencode_as_sent(
    read: Callable[[list[tuple[str, str]]], list[ModelInfo]], entries: list[tuple[str, str]]
) -> None:
    assert_opencode_reads_what_was_rendered(read(entries))


@BOUNDED
@given(value=st.one_of(st.text(), st.text(st.characters(categories=["Cs", "Cc", "Cf", "Zl", "Zp", "Co"]))))
def test_any_untrusted_string_dumps_to_ascii_json_with_no_brace_and_back(value: str) -> None:
    # Below the parsers: even what they reject (lone surrogates, control characters) dumps safely.
    from sidecar.opencode.config import Untrusted

    text = dump_config({Untrusted(value): [Untrusted(value)]})
    assert text.isascii()
    assert "{" not in text[1:-1] and "}" not in text[1:-1]
    assert "/" not in outside_strings(text)
    assert json.loads(text) == {value: [value]}


# --- Examples the properties found ----------------------------------------------------------


@pytest.mark.parametrize("reserved", sorted(OPENCODE_RESERVED_KEYS))
def test_a_model_named_like_an_object_prototype_property_is_left_out(reserved: str) -> None:
    # opencode's parser turns a `"__proto__"` key into the models object's prototype, so the
    # sidecar waited for a model opencode could never list; `constructor` and the others made
    # opencode answer 500 (tests/security/test_model_ids.py).
    catalog = Catalog([ModelInfo(id=reserved, display_name="x"), ModelInfo(id="m1", display_name="y")])
    config = render_config({PROVIDER: catalog}, SETTINGS, {})
    assert rendered_model_ids(config, [PROVIDER]) == {PROVIDER: {"m1"}}
    assert list(config["provider"][PROVIDER]["models"]) == ["m1"]
    assert config["provider"][PROVIDER]["whitelist"] == ["m1"]



@BOUNDED
@given(
    read=st.sampled_from(READERS),
    entries=st.lists(st.tuples(gateway_strings, gateway_strings), min_size=1, max_size=6),
)
def test_orjsons_text_is_the_python_walks_text(
    read: Callable[[list[tuple[str, str]]], list[ModelInfo]], entries: list[tuple[str, str]]
) -> None:
    # dump_config writes with orjson (issue 19) and falls back to the walk it replaced: whatever a
    # gateway sends, the two write the same text, byte for byte (a float in exponent form aside:
    # 1e-6, not 1e-06, the same number).
    from sidecar.opencode.config import _dump_json

    config = render_config({PROVIDER: Catalog(read(entries))}, SETTINGS, {"theme": "é\u2028", "n": [1.5, None]})
    assert dump_config(config) == _dump_json(config)


def test_what_orjson_cannot_write_is_written_by_the_walk() -> None:
    assert json.loads(dump_config({"big": 2**70, "surrogate": "\ud800"})) == {"big": 2**70, "surrogate": "\ud800"}
