"""The SDK's pure centre: native shapes parsed, options resolved, retries decided. No sockets."""

from __future__ import annotations

import random
from datetime import datetime, timezone

import httpx
import pytest

from sidecar.lists.entries import MalformedModelList
from sidecar.retry import retry_delay_for
from sidecar.sdk.client import _drive, parse_retry_after
from sidecar.sdk.config import DEFAULT_ANTHROPIC_BASE_URL, DEFAULT_SIDECAR_URL, resolve_options
from sidecar.sdk.errors import (
    AuthenticationError,
    MalformedResponseError,
    ModelsError,
    NotFoundError,
    RateLimitedError,
    UnavailableError,
)
from sidecar.sdk.runtimes import first, listing_for, parse_anthropic_page, parse_cursor_models, readable_name

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)


def test_anthropic_page_keeps_what_the_shape_says_and_ignores_the_rest() -> None:
    page = parse_anthropic_page({
        "data": [
            {"type": "model", "id": "claude-sonnet-4-5", "display_name": "Claude Sonnet 4.5",
             "created_at": "2025-09-29T00:00:00Z", "max_input_tokens": 200000, "max_tokens": 64000,
             "capabilities": {"thinking": {"supported": True}}, "lifecycle": "active", "deprecated_at": None},
            {"type": "model", "id": "no-extras", "display_name": "No Extras", "created_at": "not a date"},
            {"type": "model", "id": "future", "display_name": "F", "created_at": "2026-01-01T00:00:00",
             "lifecycle": "sunsetting", "max_tokens": "lots"},
        ],
        "has_more": True, "first_id": "claude-sonnet-4-5", "last_id": "future",
    })
    sonnet, bare, future = page.models
    assert (sonnet.max_input_tokens, sonnet.max_tokens, sonnet.created_at.year) == (200000, 64000, 2025)
    assert (bare.created_at, bare.max_input_tokens, bare.lifecycle) == (EPOCH, None, "active")
    assert future.created_at == datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert future.lifecycle == "active" and future.max_tokens is None
    assert (page.has_more, page.last_id, page.rejected) == (True, "future", [])


def test_anthropic_page_drops_bad_entries_and_keeps_good_ones() -> None:
    page = parse_anthropic_page({"data": [
        "claude", {"type": "model"}, {"id": "bad\nid", "display_name": "x"}, {"id": "x", "type": "model_deleted"},
        {"id": "no-name", "type": "model"},
    ], "has_more": False})
    assert [(m.id, m.display_name) for m in page.models] == [("no-name", "No Name")]
    assert len(page.rejected) == 4 and page.last_id == "no-name"


@pytest.mark.parametrize("payload", [None, [], "x", {"data": {}}, {"data": [], "has_more": 1},
                                     {"data": [], "last_id": 5}])
def test_anthropic_page_rejects_what_is_not_a_page(payload: object) -> None:
    with pytest.raises(MalformedModelList):
        parse_anthropic_page(payload)


def test_cursor_v0_and_v1_answers() -> None:
    v0, rejected = parse_cursor_models({"models": ["claude-4-sonnet-thinking", "o3", "gpt-5", "", 7]})
    assert [(m.id, m.display_name) for m in v0] == [
        ("claude-4-sonnet-thinking", "Claude 4 Sonnet Thinking"), ("o3", "o3"), ("gpt-5", "GPT 5")
    ]
    assert len(rejected) == 2
    v1, rejected = parse_cursor_models({"items": [
        {"id": "composer-2", "displayName": "Composer 2", "aliases": ["composer"], "parameters": []},
        {"id": "gemini-2.5-pro", "displayName": "  "}, {"displayName": "no id"}, "composer-1",
    ]})
    # A bare id among the items is read as v0 reads it.
    assert [(m.id, m.display_name) for m in v1] == [
        ("composer-2", "Composer 2"), ("gemini-2.5-pro", "Gemini 2.5 Pro"), ("composer-1", "Composer 1")
    ]
    assert len(rejected) == 1
    assert all(m.created_at == EPOCH and m.max_input_tokens is None and m.max_tokens is None for m in v0 + v1)


@pytest.mark.parametrize("payload", [None, [], {"data": []}, {"items": {}}, {"models": "o3"}])
def test_cursor_rejects_other_shapes(payload: object) -> None:
    with pytest.raises(MalformedModelList):
        parse_cursor_models(payload)


@pytest.mark.parametrize(
    ("model_id", "name"),
    [("claude-4-sonnet-thinking", "Claude 4 Sonnet Thinking"), ("o3", "o3"), ("gpt-4o", "GPT 4o"),
     ("qwen2.5:7b", "qwen2.5:7b"), ("cursor_small", "Cursor Small"), ("DeepSeek-R1", "DeepSeek R1"),
     ("openai/gpt-5", "openai/gpt 5"), ("---", "---")],
)
def test_readable_name(model_id: str, name: str) -> None:
    assert readable_name(model_id) == name


def test_first_takes_at_most_limit_and_says_when_more_exist() -> None:
    models, _ = parse_cursor_models({"models": ["a", "b", "c"]})
    assert first(models, None).model_dump(include={"has_more", "first_id", "last_id"}) == {
        "has_more": False, "first_id": "a", "last_id": "c"}
    assert [m.id for m in first(models, 2).data] == ["a", "b"] and first(models, 2).has_more
    assert not first(models, 3).has_more and first(models, 3, more=True).has_more
    empty = first([], 5)
    assert (empty.data, empty.has_more, empty.first_id, empty.last_id) == ([], False, None, None)


def test_options_arguments_then_environment_then_defaults() -> None:
    env = {"ANTHROPIC_API_KEY": "env-key", "ANTHROPIC_BASE_URL": "http://proxy:8080/", "CURSOR_API_KEY": " ",
           "SIDECAR_URL": "http://sidecar:4097", "CURSOR_API_VERSION": "v0"}
    from_env = resolve_options(env)
    assert (from_env.anthropic_api_key, from_env.anthropic_base_url) == ("env-key", "http://proxy:8080")
    assert from_env.cursor_api_key is None and from_env.cursor_api_version == "v0"
    assert from_env.sidecar_url == "http://sidecar:4097" and from_env.gateway_url is None
    explicit = resolve_options(env, anthropic_api_key="arg-key", anthropic_base_url="https://other",
                               cursor_api_version="v1", timeout=2, max_retries=0)
    assert (explicit.anthropic_api_key, explicit.anthropic_base_url) == ("arg-key", "https://other")
    assert (explicit.cursor_api_version, explicit.timeout, explicit.max_retries) == ("v1", 2.0, 0)
    defaults = resolve_options({})
    assert (defaults.anthropic_base_url, defaults.sidecar_url) == (DEFAULT_ANTHROPIC_BASE_URL, DEFAULT_SIDECAR_URL)
    assert defaults.anthropic_api_key is None and defaults.cursor_api_version == "auto"


@pytest.mark.parametrize(
    ("env", "arguments", "named"),
    [
        ({"ANTHROPIC_BASE_URL": "api.anthropic.com"}, {}, "ANTHROPIC_BASE_URL"),
        ({}, {"cursor_base_url": "ftp://x"}, "cursor_base_url="),
        ({"SIDECAR_URL": "http://user:pw@sidecar"}, {}, "SIDECAR_URL"),
        ({"CURSOR_API_VERSION": "v9"}, {}, "CURSOR_API_VERSION"),
        ({}, {"timeout": 0}, "timeout"),
        ({}, {"max_retries": -1}, "max_retries"),
        ({}, {"sidecar_url": "http://a", "gateway_url": "http://b"}, "not both"),
    ],
)
def test_bad_options_name_their_source(env: dict, arguments: dict, named: str) -> None:
    with pytest.raises(ValueError, match=named) as caught:
        resolve_options(env, **arguments)
    assert "pw" not in str(caught.value)


def test_unknown_option_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        resolve_options({}, anthropic_key="x")


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("7", 7.0), ("0.5", 0.5), (" 3 ", 3.0), ("-4", 0.0), ("Sun, 01 Mar 2026 12:00:30 GMT", 30.0),
     ("Sun, 01 Mar 2026 11:00:00 GMT", 0.0), ("soon", None), ("", None), (None, None), ("nan", None)],
)
def test_retry_after_seconds_or_date(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, NOW) == seconds


def test_retry_decisions() -> None:
    rng = random.Random(4)
    limits = {"max_retries": 2, "max_retry_after": 60.0, "rng": rng}
    assert retry_delay_for(RateLimitedError("r", "m", retry_after=5), 1, **limits) == 5
    assert retry_delay_for(RateLimitedError("r", "m", retry_after=61), 1, **limits) is None
    assert retry_delay_for(RateLimitedError("r", "m", retry_after=5), 3, **limits) is None
    assert 0 <= retry_delay_for(RateLimitedError("r", "m"), 2, **limits) <= 1.0
    assert 0 <= retry_delay_for(UnavailableError("r", "m", status=503), 1, **limits) <= 0.5
    for final in (AuthenticationError("r", "m"), NotFoundError("r", "m"), MalformedResponseError("r", "m"),
                  ModelsError("r", "m", status=400)):
        assert retry_delay_for(final, 1, **limits) is None


def drive(runtime: str, answers: dict[str, httpx.Response | ModelsError], **options: object):
    """Run a listing with answers per path, as the clients do, but without any I/O."""
    asked: list[httpx.Request] = []

    def send(request: httpx.Request) -> httpx.Response:
        asked.append(request)
        answer = answers[request.url.path]
        if isinstance(answer, ModelsError):
            raise answer
        return answer

    listed = _drive(listing_for(runtime, resolve_options({}, **options), None), send)
    return listed, asked


def test_cursor_auto_falls_back_to_v0_only_on_404() -> None:
    listed, asked = drive("cursor", {"/v1/models": NotFoundError("cursor", "no v1"),
                                     "/v0/models": httpx.Response(200, json={"models": ["o3"]})}, cursor_api_key="k")
    assert [r.url.path for r in asked] == ["/v1/models", "/v0/models"] and listed.data[0].id == "o3"
    assert asked[0].headers["authorization"] == "Basic azo=" and asked[1].headers["authorization"] == "Bearer k"
    with pytest.raises(AuthenticationError) as caught:
        drive("cursor", {"/v1/models": AuthenticationError("cursor", "refused", status=401)})
    assert "CURSOR_API_KEY" in str(caught.value)


def test_gateway_listing_sends_bearer_and_skips_non_chat() -> None:
    payload = {"data": [{"id": "b"}, {"id": "a", "mode": "embedding"}, {"id": "c"}]}
    listed, asked = drive("opencode", {"/v1/models": httpx.Response(200, json=payload)},
                          gateway_url="http://gw:4000", gateway_api_key="gk")
    assert [m.id for m in listed.data] == ["b", "c"]
    assert str(asked[0].url) == "http://gw:4000/v1/models" and asked[0].headers["authorization"] == "Bearer gk"


def test_a_page_that_does_not_move_on_is_malformed() -> None:
    page = {"data": [{"type": "model", "id": "a", "display_name": "A"}], "has_more": True, "last_id": "a"}
    with pytest.raises(MalformedResponseError, match="does not move on"):
        drive("anthropic", {"/v1/models": httpx.Response(200, json=page)})
