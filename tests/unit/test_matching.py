"""Canonical matching of requested model names against lists shaped like LiteLLM's, OpenRouter's
and a plain vLLM's: each form with the listed id it must match, or the ambiguity or miss it must get."""

from __future__ import annotations

import pytest

from sidecar.matching import Listed, MatchIndex, Step, covered_by_route, key, strip_prefixes

# As LiteLLM lists them: the operator's model names (some dated), and an `openai/*` wildcard
# route's expansion (`openai/gpt-4o` and its dated snapshots).
LITELLM = MatchIndex(tuple(Listed(model_id, model_id) for model_id in (
    "claude-sonnet-4-5-20250929",
    "claude-opus-4-1",
    "claude-3-5-sonnet-20241022",
    "claude-3-5-sonnet-20240620",
    "gpt-5.5",
    "openai/gpt-4o",
    "openai/gpt-4o-2024-08-06",
    "openai/gpt-4o-2024-05-13",
    "openai/gpt-4o-mini",
    "openai/o3-mini",
    "openai/gpt-4.1-2025-04-14",
    "gemini/gemini-2.5-pro",
    "gemini/gemini-2.5-flash",
    "vertex_ai/claude-3-7-sonnet@20250219",
    "bedrock/anthropic.claude-3-haiku-20240307-v1:0",
    "mistral/mistral-large-latest",
    "mistral/codestral-2501",
    "deepseek/deepseek-chat",
    "deepseek/deepseek-reasoner",
    "groq/llama-3.3-70b-versatile",
    "dashscope/qwen-max",
)))

# As OpenRouter lists them: vendor/model ids, "Vendor: Name" display names, canonical slugs.
OPENROUTER = MatchIndex(tuple(Listed(model_id, model_id, display_name=name, canonical_slug=slug) for model_id, name, slug in (
    ("anthropic/claude-sonnet-4.5", "Anthropic: Claude Sonnet 4.5", "anthropic/claude-4.5-sonnet-20250929"),
    ("anthropic/claude-3.7-sonnet", "Anthropic: Claude 3.7 Sonnet", "anthropic/claude-3-7-sonnet-20250219"),
    ("anthropic/claude-3.7-sonnet:thinking", "Anthropic: Claude 3.7 Sonnet (thinking)", "anthropic/claude-3-7-sonnet-20250219"),
    ("openai/gpt-4o", "OpenAI: GPT-4o", "openai/gpt-4o"),
    ("openai/gpt-4o-mini", "OpenAI: GPT-4o-mini", "openai/gpt-4o-mini"),
    ("openai/gpt-5", "OpenAI: GPT-5", "openai/gpt-5-2025-08-07"),
    ("google/gemini-2.5-pro", "Google: Gemini 2.5 Pro", "google/gemini-2.5-pro"),
    ("google/gemini-2.5-flash", "Google: Gemini 2.5 Flash", "google/gemini-2.5-flash"),
    ("meta-llama/llama-3.3-70b-instruct:free", "Meta: Llama 3.3 70B Instruct (free)", "meta-llama/llama-3.3-70b-instruct"),
    ("meta-llama/llama-4-maverick", "Meta: Llama 4 Maverick", "meta-llama/llama-4-maverick-17b-128e-instruct"),
    ("mistralai/mistral-large-2411", "Mistral Large 2411", "mistralai/mistral-large-2411"),
    ("mistralai/mistral-small-3.2-24b-instruct", "Mistral: Mistral Small 3.2 24B", "mistralai/mistral-small-3.2-24b-instruct-2506"),
    ("deepseek/deepseek-r1-0528", "DeepSeek: R1 0528", "deepseek/deepseek-r1-0528"),
    ("deepseek/deepseek-chat-v3.1", "DeepSeek: DeepSeek V3.1", "deepseek/deepseek-chat-v3.1"),
    ("qwen/qwen3-coder", "Qwen: Qwen3 Coder 480B A35B", "qwen/qwen3-coder-480b-a35b-07-25"),
    ("qwen/qwen-2.5-72b-instruct", "Qwen2.5 72B Instruct", "qwen/qwen-2.5-72b-instruct"),
    ("x-ai/grok-4", "xAI: Grok 4", "x-ai/grok-4-07-09"),
    ("openrouter/auto", "Auto Router", "openrouter/auto"),
)))

# A plain vLLM: Hugging Face repository names, no metadata.
VLLM = MatchIndex(tuple(Listed(model_id, model_id) for model_id in (
    "Qwen/Qwen2.5-Coder-32B-Instruct",
    "Qwen/Qwen2.5-Coder-7B-Instruct",
    "meta-llama/Llama-3.1-8B-Instruct",
    "mistralai/Mistral-7B-Instruct-v0.3",
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
    "sql-lora",
)))

GATEWAYS = {"litellm": LITELLM, "openrouter": OPENROUTER, "vllm": VLLM}
NONE = "no match"


def ambiguous(*ids: str) -> tuple[str, ...]:
    return ids


TABLE = [
    # --- Anthropic ---------------------------------------------------------------------------
    ("litellm", "claude-sonnet-4-5-20250929", "claude-sonnet-4-5-20250929", Step.EXACT),
    ("litellm", "claude-sonnet-4-5", "claude-sonnet-4-5-20250929", Step.DATES),
    ("litellm", "claude-sonnet-4.5", "claude-sonnet-4-5-20250929", Step.DATES),
    ("litellm", "Claude Sonnet 4.5", "claude-sonnet-4-5-20250929", Step.DATES),
    ("litellm", "anthropic/claude-sonnet-4-5", "claude-sonnet-4-5-20250929", Step.DATES),
    ("litellm", "claude-sonnet-4-5@20250929", "claude-sonnet-4-5-20250929", Step.DATES),
    ("litellm", "claude-sonnet-4-5-2025-09-29", "claude-sonnet-4-5-20250929", Step.DATES),
    ("litellm", "claude-sonnet-4-5-latest", "claude-sonnet-4-5-20250929", Step.LATEST),
    ("litellm", "openrouter/anthropic/claude-sonnet-4.5", "claude-sonnet-4-5-20250929", Step.DATES),
    ("litellm", "bedrock/us.anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5-20250929", Step.DATES),
    ("litellm", "CLAUDE-OPUS-4-1", "claude-opus-4-1", Step.CASE),
    ("litellm", "claude_opus_4_1", "claude-opus-4-1", Step.SEPARATORS),
    ("litellm", "claude-opus-4.1", "claude-opus-4-1", Step.SEPARATORS),
    ("litellm", "claude-opus-4-1-20250805", "claude-opus-4-1", Step.DATES),
    ("litellm", "claude-3-5-sonnet", ambiguous("claude-3-5-sonnet-20241022", "claude-3-5-sonnet-20240620"), Step.DATES),
    ("litellm", "claude-3-5-sonnet-latest", ambiguous("claude-3-5-sonnet-20241022", "claude-3-5-sonnet-20240620"), Step.LATEST),
    ("litellm", "claude-3-7-sonnet-20250219", "vertex_ai/claude-3-7-sonnet@20250219", Step.DATES),
    ("litellm", "claude-3-haiku-20240307", "bedrock/anthropic.claude-3-haiku-20240307-v1:0", Step.DATES),
    ("litellm", "anthropic.claude-3-haiku-20240307-v1:0", "bedrock/anthropic.claude-3-haiku-20240307-v1:0", Step.PROVIDER),
    ("openrouter", "claude-sonnet-4.5", "anthropic/claude-sonnet-4.5", Step.PROVIDER),
    ("openrouter", "claude-sonnet-4-5", "anthropic/claude-sonnet-4.5", Step.PROVIDER),
    ("openrouter", "claude-sonnet-4-5-20250929", "anthropic/claude-sonnet-4.5", Step.DATES),
    ("openrouter", "Anthropic: Claude Sonnet 4.5", "anthropic/claude-sonnet-4.5", Step.DISPLAY_NAME),
    ("openrouter", "anthropic/claude-4.5-sonnet-20250929", "anthropic/claude-sonnet-4.5", Step.CANONICAL_SLUG),
    ("openrouter", "claude-4.5-sonnet", "anthropic/claude-sonnet-4.5", Step.CANONICAL_SLUG),
    ("openrouter", "claude-3-7-sonnet-20250219", "anthropic/claude-3.7-sonnet", Step.DATES),
    ("openrouter", "claude-3.7-sonnet:thinking", "anthropic/claude-3.7-sonnet:thinking", Step.PROVIDER),
    ("vllm", "claude-sonnet-4-5", NONE, None),
    # --- OpenAI ------------------------------------------------------------------------------
    ("litellm", "gpt-5.5", "gpt-5.5", Step.EXACT),
    ("litellm", "GPT-5.5", "gpt-5.5", Step.CASE),
    ("litellm", "gpt-5-5", "gpt-5.5", Step.SEPARATORS),
    ("litellm", "openai/gpt-5.5", "gpt-5.5", Step.PROVIDER),
    ("litellm", "azure/gpt-5.5", "gpt-5.5", Step.PROVIDER),
    ("litellm", "gpt-4o", "openai/gpt-4o", Step.PROVIDER),
    ("litellm", "gpt-4o-2024-08-06", "openai/gpt-4o-2024-08-06", Step.PROVIDER),
    ("litellm", "gpt-4o-latest", ambiguous("openai/gpt-4o", "openai/gpt-4o-2024-08-06", "openai/gpt-4o-2024-05-13"), Step.LATEST),
    ("litellm", "GPT-4o mini", "openai/gpt-4o-mini", Step.PROVIDER),
    ("litellm", "o3-mini", "openai/o3-mini", Step.PROVIDER),
    ("litellm", "gpt-4.1", "openai/gpt-4.1-2025-04-14", Step.DATES),
    ("openrouter", "gpt-4o", "openai/gpt-4o", Step.PROVIDER),
    ("openrouter", "OpenAI: GPT-4o-mini", "openai/gpt-4o-mini", Step.DISPLAY_NAME),
    ("openrouter", "gpt-5-2025-08-07", "openai/gpt-5", Step.DATES),
    ("vllm", "gpt-4o", NONE, None),
    # --- Google ------------------------------------------------------------------------------
    ("litellm", "gemini-2.5-pro", "gemini/gemini-2.5-pro", Step.PROVIDER),
    ("litellm", "google/gemini-2.5-pro", "gemini/gemini-2.5-pro", Step.PROVIDER),
    ("litellm", "vertex_ai/gemini-2.5-flash", "gemini/gemini-2.5-flash", Step.PROVIDER),
    ("litellm", "models/gemini-2.5-flash", "gemini/gemini-2.5-flash", Step.PROVIDER),
    ("litellm", "Gemini 2.5 Pro", "gemini/gemini-2.5-pro", Step.PROVIDER),
    ("openrouter", "gemini/gemini-2.5-pro", "google/gemini-2.5-pro", Step.PROVIDER),
    ("openrouter", "Google: Gemini 2.5 Flash", "google/gemini-2.5-flash", Step.DISPLAY_NAME),
    ("openrouter", "gemini-2.5", NONE, None),
    # --- Meta --------------------------------------------------------------------------------
    ("litellm", "llama-3.3-70b-versatile", "groq/llama-3.3-70b-versatile", Step.PROVIDER),
    ("openrouter", "meta-llama/llama-3.3-70b-instruct", "meta-llama/llama-3.3-70b-instruct:free", Step.CANONICAL_SLUG),
    ("openrouter", "llama-3.3-70b-instruct:free", "meta-llama/llama-3.3-70b-instruct:free", Step.PROVIDER),
    ("openrouter", "Llama 4 Maverick", "meta-llama/llama-4-maverick", Step.PROVIDER),
    ("openrouter", "meta-llama/llama-4-maverick-17b-128e-instruct", "meta-llama/llama-4-maverick", Step.CANONICAL_SLUG),
    ("vllm", "meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Llama-3.1-8B-Instruct", Step.EXACT),
    ("vllm", "meta-llama/llama-3.1-8b-instruct", "meta-llama/Llama-3.1-8B-Instruct", Step.CASE),
    ("vllm", "llama-3.1-8b-instruct", "meta-llama/Llama-3.1-8B-Instruct", Step.PROVIDER),
    ("vllm", "Llama 3.1 8B Instruct", "meta-llama/Llama-3.1-8B-Instruct", Step.PROVIDER),
    ("vllm", "llama-3.1-70b-instruct", NONE, None),
    # --- Mistral -----------------------------------------------------------------------------
    ("litellm", "mistral-large-latest", "mistral/mistral-large-latest", Step.PROVIDER),
    ("litellm", "mistral-large", "mistral/mistral-large-latest", Step.LATEST),
    ("litellm", "mistralai/mistral-large-latest", "mistral/mistral-large-latest", Step.PROVIDER),
    ("litellm", "codestral-2501", "mistral/codestral-2501", Step.PROVIDER),
    ("openrouter", "mistral-large-2411", "mistralai/mistral-large-2411", Step.PROVIDER),
    ("openrouter", "Mistral Large 2411", "mistralai/mistral-large-2411", Step.PROVIDER),
    ("openrouter", "mistral-small-3.2-24b-instruct-2506", "mistralai/mistral-small-3.2-24b-instruct", Step.CANONICAL_SLUG),
    ("vllm", "mistral-7b-instruct-v0.3", "mistralai/Mistral-7B-Instruct-v0.3", Step.PROVIDER),
    ("vllm", "mistralai/Mistral-7B-Instruct-v0-3", "mistralai/Mistral-7B-Instruct-v0.3", Step.SEPARATORS),
    # --- DeepSeek ----------------------------------------------------------------------------
    ("litellm", "deepseek-chat", "deepseek/deepseek-chat", Step.PROVIDER),
    ("litellm", "DeepSeek-Reasoner", "deepseek/deepseek-reasoner", Step.PROVIDER),
    ("openrouter", "deepseek-r1-0528", "deepseek/deepseek-r1-0528", Step.PROVIDER),
    ("openrouter", "DeepSeek: R1 0528", "deepseek/deepseek-r1-0528", Step.DISPLAY_NAME),
    ("openrouter", "deepseek-r1", NONE, None),
    ("openrouter", "deepseek/deepseek-chat-v3-1", "deepseek/deepseek-chat-v3.1", Step.SEPARATORS),
    ("vllm", "deepseek-r1-distill-qwen-7b", "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", Step.PROVIDER),
    ("vllm", "deepseek/DeepSeek-R1-Distill-Qwen-7B", "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", Step.PROVIDER),
    # --- Qwen --------------------------------------------------------------------------------
    ("litellm", "qwen-max", NONE, None),  # `dashscope/` is no prefix the sidecar knows
    ("openrouter", "qwen3-coder", "qwen/qwen3-coder", Step.PROVIDER),
    ("openrouter", "Qwen/Qwen3-Coder", "qwen/qwen3-coder", Step.CASE),
    ("openrouter", "qwen3-coder-480b-a35b-07-25", "qwen/qwen3-coder", Step.CANONICAL_SLUG),
    ("openrouter", "Qwen2.5 72B Instruct", "qwen/qwen-2.5-72b-instruct", Step.DISPLAY_NAME),
    ("vllm", "Qwen/Qwen2.5-Coder-32B-Instruct", "Qwen/Qwen2.5-Coder-32B-Instruct", Step.EXACT),
    ("vllm", "qwen2.5-coder-32b-instruct", "Qwen/Qwen2.5-Coder-32B-Instruct", Step.PROVIDER),
    ("vllm", "qwen/qwen2.5-coder-7b-instruct", "Qwen/Qwen2.5-Coder-7B-Instruct", Step.CASE),
    ("vllm", "qwen2.5-coder", NONE, None),
    # --- OpenRouter's own and others ---------------------------------------------------------
    ("openrouter", "openrouter/auto", "openrouter/auto", Step.EXACT),
    ("openrouter", "Auto Router", "openrouter/auto", Step.DISPLAY_NAME),
    ("openrouter", "grok-4", "x-ai/grok-4", Step.PROVIDER),
    ("openrouter", "xai/grok-4-07-09", "x-ai/grok-4", Step.CANONICAL_SLUG),
    ("vllm", "sql-lora", "sql-lora", Step.EXACT),
    ("vllm", "SQL_LoRA", "sql-lora", Step.SEPARATORS),
]


@pytest.mark.parametrize(("gateway", "requested", "expected", "step"), TABLE, ids=[f"{g}:{r}" for g, r, _, _ in TABLE])
def test_name_forms(gateway: str, requested: str, expected: str | tuple[str, ...], step: Step | None) -> None:
    match = GATEWAYS[gateway].match(requested)
    found = tuple(listed.public_id for listed in match.found)
    if expected == NONE:
        assert found == ()
    elif isinstance(expected, tuple):
        assert sorted(found) == sorted(expected)
    else:
        assert found == (expected,)
    assert match.step == step


def test_the_table_covers_enough_forms() -> None:
    assert len(TABLE) >= 60
    assert {gateway for gateway, *_ in TABLE} == set(GATEWAYS)


def test_one_model_on_two_gateways_is_the_first_gateways() -> None:
    index = MatchIndex((
        Listed("claude-sonnet-4-5", "claude-sonnet-4-5", "litellm"),
        Listed("other/claude-sonnet-4-5", "claude-sonnet-4-5", "other"),
    ))
    assert [listed.public_id for listed in index.match("Claude Sonnet 4.5").found] == ["claude-sonnet-4-5"]
    only_other = index.match("claude-sonnet-4.5", within=lambda listed: listed.gateway == "other")
    assert [listed.public_id for listed in only_other.found] == ["other/claude-sonnet-4-5"]


def test_closest_names_for_did_you_mean() -> None:
    assert LITELLM.closest("claude-sonet-4-5")[0] == "claude-sonnet-4-5-20250929"
    assert LITELLM.closest("gpt-5.6")[0] == "gpt-5.5"
    assert len(LITELLM.closest("gemini-2.5")) <= 3
    assert LITELLM.closest("zzzzzz") == []


@pytest.mark.parametrize(
    ("name", "folded"),
    [
        ("openrouter/anthropic/claude-sonnet-4.5", "claude-sonnet-4.5"),
        ("bedrock/us.anthropic.claude-3-haiku", "claude-3-haiku"),
        ("deepseek/deepseek-r1", "deepseek-r1"),
        ("anthropic/", "anthropic/"),  # nothing after a prefix: nothing dropped
        ("qwen.qwen3-32b", "qwen3-32b"),
        ("gpt-4.1", "gpt-4.1"),
    ],
)
def test_prefixes(name: str, folded: str) -> None:
    assert strip_prefixes(name) == folded


def test_keys_fold_step_by_step() -> None:
    name = "Anthropic/Claude_Sonnet.4.5@20250929-latest"
    assert key(name, Step.EXACT) == name
    assert key(name, Step.CASE) == name.casefold()
    assert key(name, Step.SEPARATORS) == "anthropic/claude-sonnet-4-5@20250929-latest"
    assert key(name, Step.PROVIDER) == "claude-sonnet-4-5@20250929-latest"
    assert key(name, Step.LATEST) == "claude-sonnet-4-5@20250929"  # `-latest` last: the date stays


@pytest.mark.parametrize(
    ("model_id", "routes", "route"),
    [
        ("openai/gpt-9", ["openai/*"], "openai/*"),
        ("anthropic/claude-opus-9", ["openai/*", "anthropic/claude-*"], "anthropic/claude-*"),
        ("anthropic/other", ["anthropic/claude-*"], None),
        ("gpt-9", ["openai/*"], None),
        ("anything/at.all", ["*"], "*"),
        ("openai.x", ["openai.*"], "openai.*"),  # `.` is literal
        ("openaiXx", ["openai.*"], None),
        ("ab", ["a*b*"], "a*b*"),
        ("aXbYc", ["a*b*c"], "a*b*c"),
        ("acb", ["a*b*c"], None),
        ("abc", ["abc"], "abc"),  # no `*`: the whole name
        ("a", ["a*a"], None),  # the prefix and suffix may not overlap
        ("a" * 256, ["*a" * 40 + "*b"], None),  # no backtracking, however many `*`
    ],
)
def test_wildcard_routes(model_id: str, routes: list[str], route: str | None) -> None:
    assert covered_by_route(model_id, routes) == route
