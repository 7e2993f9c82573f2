"""Every gateway list format, read from a fixture as the gateway answers it: what an operator would check."""

from __future__ import annotations

import copy
import json
import math
import random
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from sidecar.catalog import MODALITIES, UNKNOWN_DATE, ModelCost, ModelInfo
from sidecar.lists.anthropic import parse_anthropic_page
from sidecar.lists.detect import detect_format
from sidecar.lists.entries import MalformedModelList, ParsedList
from sidecar.lists.formats import FORMATS, parse_lmstudio_models, parse_models, parse_ollama_tags
from sidecar.lists.litellm import LiteLLMInfo, enrich_with_litellm_info, parse_litellm_model_info

FIXTURES = Path(__file__).parent.parent / "fixtures" / "gateways"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def by_id(parsed: ParsedList) -> dict[str, ModelInfo]:
    return {model.id: model for model in parsed.models}


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("litellm-models.json", "litellm"),
        ("openrouter-models.json", "openrouter"),
        ("together-models.json", "together"),
        ("vllm-models.json", "vllm"),
        ("ollama-models.json", "ollama"),
        ("lmstudio-models.json", "lmstudio"),
        ("anthropic-models-page.json", "anthropic"),
        # Portkey's list is the plain OpenAI shape: nothing in it says Portkey.
        ("portkey-models.json", "openai"),
    ],
)
def test_detect_format_names_each_gateway(name: str, fmt: str) -> None:
    assert detect_format(fixture(name)) == fmt
    assert fmt in FORMATS


def test_detect_format_tells_together_wrapped_in_data_from_openrouter() -> None:
    assert detect_format({"data": fixture("together-models.json")}) == "together"


@pytest.mark.parametrize("payload", [None, 3, "x", {}, {"data": "x"}, {"data": [1, None, []]}, {"models": []}])
def test_detect_format_falls_back_to_openai_on_odd_input(payload: Any) -> None:
    assert detect_format(payload) == "openai"


# --- LiteLLM ----------------------------------------------------------------------------------


def test_litellm_list_keeps_chat_models_with_their_limits_and_no_placeholder_date() -> None:
    parsed = parse_models("litellm", fixture("litellm-models.json"))
    models = by_id(parsed)
    assert set(models) == {"claude-sonnet-4-5", "gpt-5.5", "openai/gpt-5-codex", "openai/gpt-3.5-turbo-0125",
                           "openai/chat-latest"}
    assert (models["gpt-5.5"].max_input_tokens, models["gpt-5.5"].max_tokens) == (1050000, 128000)
    assert sorted(parsed.skipped_non_chat) == [
        "openai/low/1024-x-1536/gpt-image-1.5-2025-12-16", "openai/low/1536-x-1024/gpt-image-1-mini",
        "text-embedding-3-small",
    ]
    # created 1677610602 is LiteLLM's placeholder for every model: it dates nothing.
    assert all(m.created_at == UNKNOWN_DATE and m.release_date is None for m in parsed.models)


def test_litellm_model_info_fills_price_per_million_modalities_and_tools() -> None:
    parsed = parse_models("litellm", fixture("litellm-models.json"))
    info = parse_litellm_model_info(fixture("litellm-model-info.json"))
    models = by_id(enrich_with_litellm_info(parsed, info))
    sonnet = models["claude-sonnet-4-5"]
    assert sonnet.cost == ModelCost(input=3.0, output=15.0, cache_read=0.3, cache_write=3.75)
    assert sonnet.input_modalities == ("text", "image", "pdf")
    assert (sonnet.tool_call, sonnet.reasoning) == (True, True)
    assert (sonnet.max_input_tokens, sonnet.max_tokens) == (200000, 64000)
    assert models["gpt-5.5"].cost == ModelCost(input=5.0, output=30.0, cache_read=0.5)
    # What /model/info doesn't know stays unknown.
    assert models["openai/chat-latest"].cost is None and models["openai/chat-latest"].tool_call is None


def test_litellm_model_info_never_keeps_litellm_params() -> None:
    payload = fixture("litellm-model-info.json")
    payload["data"][0]["litellm_params"]["api_key"] = "sk-upstream-secret"
    info = parse_litellm_model_info(payload)
    assert "sk-upstream-secret" not in repr(info) and "mock answer" not in repr(info)


def test_litellm_list_limits_win_and_info_drops_non_chat_and_access_groups() -> None:
    listed = {"object": "list", "data": [
        {"id": "claude-sonnet-4-5", "created": 1677610602, "max_input_tokens": 100000},
        {"id": "text-embedding-3-small", "created": 1677610602},  # no mode here: /model/info knows
        {"id": "beta-models", "created": 1677610602},  # ?include_model_access_groups=true
        {"id": "anthropic/*", "created": 1677610602},  # ?return_wildcard_routes=true
        {"id": "anthropic/claude-opus-4-5", "created": 1677610602},  # expanded from the wildcard
    ]}
    info = fixture("litellm-model-info.json")
    info["data"][0]["model_info"]["access_groups"] = ["beta-models"]
    info["data"][0]["model_info"]["display_name"] = "Claude Sonnet 4.5"
    info["data"].append({"model_name": "anthropic/*", "litellm_params": {"model": "anthropic/*"},
                         "model_info": {"access_groups": ["beta-models"]}})
    parsed = parse_models("litellm", listed)
    assert len(parsed.rejected) == 1 and "wildcard" in parsed.rejected[0]
    enriched = enrich_with_litellm_info(parsed, parse_litellm_model_info(info))
    models = by_id(enriched)
    assert set(models) == {"claude-sonnet-4-5", "anthropic/claude-opus-4-5"}
    assert models["claude-sonnet-4-5"].max_input_tokens == 100000  # the list's own value
    assert models["claude-sonnet-4-5"].max_tokens == 64000  # from /model/info
    assert models["claude-sonnet-4-5"].display_name == "Claude Sonnet 4.5"
    assert enriched.skipped_non_chat == ["text-embedding-3-small"]
    assert any("access group" in reason for reason in enriched.rejected)


def test_litellm_model_info_merges_deployments_of_one_name() -> None:
    info = parse_litellm_model_info({"data": [
        {"model_name": "gpt", "model_info": {"max_input_tokens": None, "mode": "chat"}},
        {"model_name": "gpt", "model_info": {"max_input_tokens": 8000, "mode": "embedding",
                                             "supports_function_calling": True}},
    ]})
    gpt = info.models["gpt"]
    assert (gpt.max_input_tokens, gpt.mode, gpt.tool_call) == (8000, "chat", True)


# --- OpenRouter -------------------------------------------------------------------------------


def test_openrouter_prices_per_token_become_per_million() -> None:
    parsed = parse_models("openrouter", fixture("openrouter-models.json"))
    models = by_id(parsed)
    sonnet = models["anthropic/claude-sonnet-4.5"]
    assert sonnet.display_name == "Anthropic: Claude Sonnet 4.5"
    assert (sonnet.max_input_tokens, sonnet.max_tokens) == (1000000, 64000)
    assert sonnet.cost == ModelCost(input=3.0, output=15.0, cache_read=0.3, cache_write=3.75)
    # "file" is not a modality opencode knows, and OpenRouter doesn't say it means pdf.
    assert (sonnet.input_modalities, sonnet.output_modalities) == (("text", "image"), ("text",))
    assert (sonnet.tool_call, sonnet.reasoning) == (True, True)
    assert sonnet.created_at == datetime(2025, 9, 29, 16, 1, 16, tzinfo=timezone.utc)
    assert sonnet.release_date == date(2025, 9, 29)
    assert models["meta-llama/llama-3.3-70b-instruct:free"].cost == ModelCost(input=0.0, output=0.0)
    assert models["meta-llama/llama-3.3-70b-instruct:free"].max_tokens is None
    assert models["openrouter/auto"].cost is None  # "-1": priced by the model it routes to
    r1 = models["deepseek/deepseek-r1-0528"]
    assert (r1.reasoning, r1.tool_call, r1.cost) == (True, False, ModelCost(input=0.4, output=1.75))


def test_openrouter_image_output_without_text_is_not_a_chat_model() -> None:
    parsed = parse_models("openrouter", fixture("openrouter-models.json"))
    assert parsed.skipped_non_chat == ["black-forest-labs/flux.2-pro"]
    # Text and images out is still a chat model.
    gemini = by_id(parsed)["google/gemini-2.5-flash-image"]
    assert gemini.output_modalities == ("text", "image") and gemini.tool_call is False


def test_openrouter_legacy_modality_string_and_lists_that_say_nothing() -> None:
    parsed = parse_models("openrouter", {"data": [
        {"id": "a", "architecture": {"modality": "text+image->text"}},
        {"id": "b", "architecture": {"modality": "text->image"}},
        {"id": "c", "architecture": {"input_modalities": ["file"], "output_modalities": []}},
    ]})
    assert [m.input_modalities for m in parsed.models] == [("text", "image"), None]
    assert parsed.skipped_non_chat == ["b"]


# --- Together ---------------------------------------------------------------------------------


def test_together_bare_array_with_string_prices() -> None:
    parsed = parse_models("together", fixture("together-models.json"))
    models = by_id(parsed)
    llama = models["meta-llama/Llama-3.3-70B-Instruct-Turbo"]
    assert llama.display_name == "Meta Llama 3.3 70B Instruct Turbo"
    assert llama.max_input_tokens == 131072
    assert llama.cost == ModelCost(input=0.88, output=0.88)  # per million already
    assert llama.release_date == date(2024, 12, 6)
    assert models["Qwen/Qwen3-Coder-480B-A35B-Instruct-FP8"].cost == ModelCost(input=2.0, output=2.0)
    # A base model ("language") completes text; it stays. An empty name falls back to the id.
    assert models["meta-llama/Meta-Llama-3-70B"].display_name == "meta-llama/Meta-Llama-3-70B"
    assert sorted(parsed.skipped_non_chat) == [
        "BAAI/bge-large-en-v1.5", "Salesforce/Llama-Rank-V1", "black-forest-labs/FLUX.1-schnell"
    ]
    wrapped = parse_models("together", {"data": fixture("together-models.json")})
    assert by_id(wrapped) == models


# --- vLLM, Ollama, LM Studio, Portkey ---------------------------------------------------------


def test_vllm_context_from_max_model_len_and_request_time_not_a_date() -> None:
    models = by_id(parse_models("vllm", fixture("vllm-models.json")))
    assert models["Qwen/Qwen2.5-Coder-32B-Instruct"].max_input_tokens == 32768
    assert models["sql-lora"].max_input_tokens is None  # a LoRA adapter's max_model_len is null
    assert all(m.created_at == UNKNOWN_DATE and m.release_date is None for m in models.values())


def test_ollama_openai_list_leaves_embeddings_out_and_file_time_unused() -> None:
    parsed = parse_models("ollama", fixture("ollama-models.json"))
    assert sorted(by_id(parsed)) == ["hf.co/bartowski/Qwen2.5-7B-Instruct-GGUF:Q4_K_M", "llama3.2-vision:11b",
                                     "qwen2.5-coder:7b"]
    assert parsed.skipped_non_chat == ["nomic-embed-text:latest"]
    assert all(m.created_at == UNKNOWN_DATE and m.release_date is None for m in parsed.models)


def test_ollama_tags_leave_embedding_families_out() -> None:
    parsed = parse_ollama_tags(fixture("ollama-tags.json"))
    assert sorted(by_id(parsed)) == ["llama3.2-vision:11b", "qwen2.5-coder:7b"]
    # bge-m3 is told by its family (bert) alone: its name doesn't say embed.
    assert sorted(parsed.skipped_non_chat) == ["bge-m3:latest", "mxbai-embed-large:335m", "nomic-embed-text:latest"]
    assert all(m.created_at == UNKNOWN_DATE for m in parsed.models)


def test_lmstudio_v0_types_contexts_and_tool_use() -> None:
    parsed = parse_lmstudio_models(fixture("lmstudio-api-v0-models.json"))
    models = by_id(parsed)
    coder, vision = models["qwen/qwen3-coder-30b"], models["qwen2.5-vl-7b-instruct"]
    assert (coder.max_input_tokens, coder.input_modalities, coder.tool_call) == (262144, ("text",), True)
    assert (vision.max_input_tokens, vision.input_modalities, vision.tool_call) == (128000, ("text", "image"), None)
    assert parsed.skipped_non_chat == ["text-embedding-nomic-embed-text-v1.5"]


def test_lmstudio_openai_list_leaves_embeddings_out() -> None:
    parsed = parse_models("lmstudio", fixture("lmstudio-models.json"))
    assert len(parsed.models) == 3 and parsed.skipped_non_chat == ["text-embedding-nomic-embed-text-v1.5"]


def test_portkey_catalog_ids_are_kept_as_they_are() -> None:
    parsed = parse_models("portkey", fixture("portkey-models.json"))
    assert [m.id for m in parsed.models][:2] == ["@openai-prod/gpt-4o", "@openai-prod/gpt-5.1"]
    assert len(parsed.models) == 4 and not parsed.rejected


# --- Anthropic --------------------------------------------------------------------------------


def test_anthropic_page_with_has_more_and_capabilities() -> None:
    parsed, has_more, last_id = parse_anthropic_page(fixture("anthropic-models-page.json"))
    assert (has_more, last_id) == (True, "claude-3-haiku-20240307")
    models = by_id(parsed)
    opus = models["claude-opus-4-5-20251101"]
    assert (opus.display_name, opus.max_input_tokens, opus.max_tokens) == ("Claude Opus 4.5", 200000, 64000)
    assert (opus.input_modalities, opus.reasoning) == (("text", "image", "pdf"), True)
    assert opus.release_date == date(2025, 11, 24)
    assert models["claude-haiku-4-5-20251001"].input_modalities == ("text", "image")
    old = models["claude-3-haiku-20240307"]
    assert (old.created_at, old.release_date, old.max_input_tokens, old.lifecycle) == (
        UNKNOWN_DATE, None, None, "deprecated")
    assert (old.input_modalities, old.reasoning) == (None, None)  # no capabilities: unknown


def test_anthropic_entry_with_an_object_for_lifecycle_is_kept_as_active() -> None:
    # Found by the fuzz below: `lifecycle in LIFECYCLES` raised TypeError for a dict.
    parsed, _, _ = parse_anthropic_page({"data": [{"type": "model", "id": "a", "lifecycle": {"stage": "x"}}]})
    assert [(m.id, m.lifecycle) for m in parsed.models] == [("a", "active")]


def test_anthropic_page_without_last_id_continues_after_its_last_model() -> None:
    parsed, has_more, last_id = parse_anthropic_page({"data": [{"type": "model", "id": "a"}, {"id": "b"}],
                                                      "has_more": True})
    assert (has_more, last_id) == (True, "b")
    assert [m.display_name for m in parsed.models] == ["a", "b"]


# --- What is not a list -----------------------------------------------------------------------

MARKER = "payload-text-that-must-not-leak"


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f not in ("auto", "anthropic")])
@pytest.mark.parametrize("payload", [None, MARKER, 7, {"data": MARKER}, {"object": MARKER}, [MARKER]])
def test_what_is_not_a_list_is_malformed_and_never_quoted(fmt: str, payload: Any) -> None:
    if fmt == "together" and isinstance(payload, list):
        parsed = parse_models(fmt, payload)
        assert parsed.models == [] and parsed.rejected == ["entry is not an object"]
        return
    with pytest.raises(MalformedModelList) as caught:
        parse_models(fmt, payload)
    assert MARKER not in str(caught.value)


@pytest.mark.parametrize(
    "parse", [parse_ollama_tags, parse_lmstudio_models, parse_litellm_model_info, parse_anthropic_page]
)
@pytest.mark.parametrize("payload", [None, MARKER, [], {"data": {MARKER: 1}}, {"models": MARKER}])
def test_other_routes_reject_what_is_not_a_list(parse: Any, payload: Any) -> None:
    with pytest.raises(MalformedModelList) as caught:
        parse(payload)
    assert MARKER not in str(caught.value)


@pytest.mark.parametrize("fmt", ["auto", "anthropic", "gemini"])
def test_parse_models_refuses_formats_it_cannot_read_alone(fmt: str) -> None:
    with pytest.raises(ValueError, match="no list parser"):
        parse_models(fmt, {"data": []})


def test_bad_entries_are_counted_by_reason_never_by_text() -> None:
    parsed = parse_models("openai", {"data": [
        MARKER, {"id": ""}, {"id": 5}, {"id": "x" * 300}, {"id": f"{MARKER}\n"}, {"id": f"{MARKER}/*"},
        {"id": "ok", "max_input_tokens": True, "max_output_tokens": 2**60},
    ]})
    assert [m.id for m in parsed.models] == ["ok"]
    assert (parsed.models[0].max_input_tokens, parsed.models[0].max_tokens) == (None, None)
    assert len(parsed.rejected) == 6 and not any(MARKER in reason for reason in parsed.rejected)


@pytest.mark.parametrize(
    ("price", "per_million"),
    [("0.000003", 3.0), (3e-06, 3.0), ("0", 0.0), (0, 0.0), ("-1", None), (-0.5, None), ("NaN", None),
     (float("nan"), None), ("inf", None), (1e308, None), ("lots", None), (True, None), (None, None),
     ({"usd": 1}, None), ("1" * 100, None), (10**400, None)],
)
def test_openrouter_price_values(price: Any, per_million: float | None) -> None:
    entry = {"id": "m", "pricing": {"prompt": price, "completion": "0.000001"}}
    model = parse_models("openrouter", {"data": [entry]}).models[0]
    assert (model.cost.input if model.cost else None) == per_million


# --- Fuzz: junk anywhere, never anything but MalformedModelList --------------------------------

JUNK: list[Any] = [
    None, True, False, 0, -1, 2**64, 10**30, 1.5, -0.0, float("nan"), float("inf"), float("-inf"), "", " ", "0",
    "-1", "1e999", "nan", "\x00", "\u202e", "text", MARKER, [], [None], ["text", 7, {}], {}, {"supported": "yes"},
    {"a": [{"b": [1]}]}, "2025-13-45T99:99:99Z", "1970-01-01T00:00:00Z", "9999-12-31T23:59:59Z",
]


def mutate(value: Any, rng: random.Random, depth: int = 0) -> Any:
    """The same payload with some values, anywhere in it, swapped for junk."""
    if rng.random() < 0.15:
        return rng.choice(JUNK)
    if isinstance(value, dict) and depth < 6:
        mutated = {key: mutate(item, rng, depth + 1) for key, item in value.items()}
        if rng.random() < 0.2:
            mutated[rng.choice(["mode", "type", "created", "pricing", "capabilities", "architecture",
                                "max_model_len", "details", "model_info", "access_groups"])] = rng.choice(JUNK)
        return mutated
    if isinstance(value, list) and depth < 6:
        return [mutate(item, rng, depth + 1) for item in value]
    return value


PARSERS: list[tuple[str, Any]] = [
    *[(f"{fmt}-models.json", lambda p, fmt=fmt: parse_models(fmt, p))
      for fmt in ("litellm", "openrouter", "together", "vllm", "ollama", "lmstudio", "portkey")],
    ("litellm-models.json", lambda p: parse_models("openai", p)),
    ("ollama-tags.json", parse_ollama_tags),
    ("lmstudio-api-v0-models.json", parse_lmstudio_models),
    ("anthropic-models-page.json", parse_anthropic_page),
    ("litellm-model-info.json", parse_litellm_model_info),
    ("litellm-model-info.json", lambda p: enrich_with_litellm_info(
        parse_models("litellm", fixture("litellm-models.json")), parse_litellm_model_info(p))),
]


def assert_clean(model: ModelInfo) -> None:
    ModelInfo.model_validate(model.model_dump())
    for limit in (model.max_input_tokens, model.max_tokens):
        assert limit is None or (type(limit) is int and 0 < limit < 2**53)
    for kinds in (model.input_modalities, model.output_modalities):
        assert kinds is None or set(kinds) <= MODALITIES
    if model.cost is not None:
        prices = [model.cost.input, model.cost.output, model.cost.cache_read, model.cost.cache_write]
        assert all(p is None or (math.isfinite(p) and p >= 0) for p in prices)
    assert model.display_name.strip() and model.display_name.isprintable()
    assert model.created_at.tzinfo is not None


@pytest.mark.parametrize(("name", "parse"), PARSERS)
def test_junk_anywhere_gives_clean_records_or_malformed(name: str, parse: Any) -> None:
    rng = random.Random(name)
    original = fixture(name)
    for _ in range(150):
        payload = mutate(copy.deepcopy(original), rng)
        try:
            result = parse(payload)
        except MalformedModelList as exc:
            assert MARKER not in str(exc)
            continue
        parsed = result[0] if isinstance(result, tuple) else result
        if isinstance(parsed, LiteLLMInfo):
            for details in parsed.models.values():
                assert details.max_input_tokens is None or 0 < details.max_input_tokens < 2**53
                assert details.cost is None or math.isfinite(details.cost.input + details.cost.output)
                assert details.input_modalities is None or set(details.input_modalities) <= MODALITIES
            assert not any(MARKER in reason for reason in parsed.rejected)
        if isinstance(parsed, ParsedList):
            for model in parsed.models:
                assert_clean(model)
            assert not any(MARKER in reason for reason in parsed.rejected)


@pytest.mark.parametrize("junk", JUNK)
def test_detect_format_never_raises(junk: Any) -> None:
    for payload in (junk, {"data": [junk]}, {"data": [{"id": "m", "owned_by": junk, "pricing": junk}]}):
        assert detect_format(payload) in FORMATS


# --- Ids opencode cannot hold as keys (catalog.OPENCODE_RESERVED_KEYS) ---------------------------

RESERVED_LISTED = ["toString", "hasOwnProperty", "constructor", "__proto__"]


def _openai_entries(ids: list[str]) -> dict[str, Any]:
    return {"object": "list", "data": [{"id": model_id, "object": "model"} for model_id in ids]}


@pytest.mark.parametrize("fmt", ["openai", "litellm", "openrouter", "portkey", "vllm", "ollama", "lmstudio"])
def test_reserved_ids_are_dropped_and_reported_by_name_in_every_list_format(fmt: str) -> None:
    parsed = parse_models(fmt, _openai_entries(["gpt-5.5", *RESERVED_LISTED, "toString", "Constructor"]))
    assert [model.id for model in parsed.models] == ["gpt-5.5", "Constructor"]
    assert parsed.reserved == [*RESERVED_LISTED, "toString"]
    assert parsed.rejected == []


def test_reserved_ids_are_dropped_from_together_ollama_tags_and_anthropic_pages() -> None:
    together = parse_models("together", [{"id": "valueOf", "type": "chat"}, {"id": "m", "type": "chat"}])
    assert ([m.id for m in together.models], together.reserved) == (["m"], ["valueOf"])
    tags = parse_ollama_tags({"models": [{"name": "isPrototypeOf"}, {"model": "llama3"}]})
    assert ([m.id for m in tags.models], tags.reserved) == (["llama3"], ["isPrototypeOf"])
    page, _, last_id = parse_anthropic_page(
        {"data": [{"type": "model", "id": "claude-x"}, {"type": "model", "id": "__defineGetter__"}], "has_more": False}
    )
    assert ([m.id for m in page.models], page.reserved, last_id) == (["claude-x"], ["__defineGetter__"], "claude-x")


def test_litellm_enrichment_keeps_the_reserved_ids_reported() -> None:
    listed = parse_models("litellm", _openai_entries(["gpt-5.5", "toLocaleString"]))
    info = parse_litellm_model_info({"data": [
        {"model_name": "toLocaleString", "model_info": {"mode": "chat"}},
        {"model_name": "gpt-5.5", "model_info": {"mode": "chat"}},
    ]})
    assert "toLocaleString" not in info.models
    enriched = enrich_with_litellm_info(listed, info)
    assert ([m.id for m in enriched.models], enriched.reserved) == (["gpt-5.5"], ["toLocaleString"])


def test_openrouter_canonical_slug_is_kept_when_it_differs_from_the_id() -> None:
    parsed = parse_models("openrouter", fixture("openrouter-models.json"))
    by_id = {model.id: model for model in parsed.models}
    assert by_id["anthropic/claude-sonnet-4.5"].canonical_slug == "anthropic/claude-4.5-sonnet-20250929"
    assert by_id["deepseek/deepseek-r1-0528"].canonical_slug is None  # the same as its id
