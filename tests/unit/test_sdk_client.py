"""`models().list(runtime)` against real HTTP servers on loopback that speak each documented shape."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timezone

import anthropic.types
import pytest

import sidecar
from sidecar import (
    AuthenticationError,
    MalformedResponseError,
    ModelList,
    ModelsError,
    NotFoundError,
    RateLimitedError,
    UnavailableError,
    amodels,
    models,
)
from tests.support.fake_runtimes import Canned, FakeRuntime, anthropic_error, anthropic_model, running

KEY = "sk-ant-test-0123456789"

ANTHROPIC_MODELS = [
    anthropic_model("claude-opus-4-5", "Claude Opus 4.5", "2025-11-24T00:00:00Z"),
    anthropic_model("claude-haiku-4-5", "Claude Haiku 4.5", "2025-10-15T00:00:00Z"),
    anthropic_model("claude-sonnet-4-5", "Claude Sonnet 4.5", "2025-09-29T00:00:00Z"),
    anthropic_model("claude-opus-4-1", "Claude Opus 4.1", "2025-08-05T00:00:00Z", lifecycle="deprecated"),
    anthropic_model("claude-3-haiku", "Claude Haiku 3", "2024-03-07T00:00:00Z", max_input_tokens=None),
]
ANTHROPIC_IDS = [m["id"] for m in ANTHROPIC_MODELS]

CURSOR_ITEMS = [
    {"id": "composer-2", "displayName": "Composer 2", "description": "Cursor's own", "aliases": ["composer"],
     "parameters": [], "variants": []},
    {"id": "claude-4-sonnet-thinking", "description": "no display name"},
    {"id": "gpt-5", "displayName": "GPT-5", "parameters": [], "variants": []},
]


class Sleeps(list):
    """A sleep that records what it was asked to wait, and doesn't."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def anthropic_server() -> Iterator[FakeRuntime]:
    with running(FakeRuntime("anthropic", ANTHROPIC_MODELS, key=KEY, page_size=2)) as server:
        yield server


@pytest.fixture
def cursor_server() -> Iterator[FakeRuntime]:
    with running(FakeRuntime("cursor", CURSOR_ITEMS, key=KEY)) as server:
        yield server


def anthropic_client(server: FakeRuntime, **options) -> sidecar.Models:
    env = {"ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": server.url}
    return models(env=env, sleep=options.pop("sleep", Sleeps()), **options)


def test_three_page_anthropic_list_is_followed_to_the_end(anthropic_server: FakeRuntime) -> None:
    listed = anthropic_client(anthropic_server).list("anthropic")

    assert isinstance(listed, ModelList)
    assert [m.id for m in listed.data] == ANTHROPIC_IDS
    assert (listed.has_more, listed.first_id, listed.last_id) == (False, "claude-opus-4-5", "claude-3-haiku")
    assert [s.query.get("after_id") for s in anthropic_server.seen] == [None, "claude-haiku-4-5", "claude-opus-4-1"]
    for seen in anthropic_server.seen:
        assert seen.headers["x-api-key"] == KEY
        assert seen.headers["anthropic-version"] == "2023-06-01"
    sonnet = listed.data[2]
    assert sonnet.display_name == "Claude Sonnet 4.5"
    assert sonnet.created_at == datetime(2025, 9, 29, tzinfo=timezone.utc)
    assert (sonnet.type, sonnet.max_input_tokens, sonnet.max_tokens) == ("model", 200000, 64000)
    assert listed.data[3].lifecycle == "deprecated"
    assert listed.data[4].max_input_tokens is None


def test_anthropic_list_validates_as_the_official_sdks_model_info(anthropic_server: FakeRuntime) -> None:
    listed = anthropic_client(anthropic_server).list("anthropic")
    for model in listed.model_dump(mode="json")["data"]:
        official = anthropic.types.ModelInfo.model_validate(model)
        assert official.id == model["id"] and official.type == "model"
    page = anthropic.types.ModelInfo.model_validate(listed.data[0].model_dump())
    assert page.display_name == "Claude Opus 4.5"


@pytest.mark.parametrize(
    ("limit", "ids", "has_more", "asked"),
    [
        (3, ANTHROPIC_IDS[:3], True, [3, 1]),
        (5, ANTHROPIC_IDS, False, [5, 3, 1]),
        (1, ANTHROPIC_IDS[:1], True, [1]),
        (50, ANTHROPIC_IDS, False, [50, 48, 46]),
        (None, ANTHROPIC_IDS, False, [1000, 1000, 1000]),
    ],
)
def test_limit_returns_at_most_that_many_and_says_when_more_exist(
    anthropic_server: FakeRuntime, limit: int | None, ids: list[str], has_more: bool, asked: list[int]
) -> None:
    listed = anthropic_client(anthropic_server).list("anthropic", limit=limit)
    assert [m.id for m in listed.data] == ids
    assert listed.has_more is has_more
    assert listed.last_id == ids[-1]
    # No page asks for more than is still wanted.
    assert [int(s.query["limit"]) for s in anthropic_server.seen] == asked


def test_explicit_arguments_override_the_environment(anthropic_server: FakeRuntime) -> None:
    env = {"ANTHROPIC_API_KEY": "sk-wrong", "ANTHROPIC_BASE_URL": "http://127.0.0.1:1"}
    client = models(env=env, anthropic_api_key=KEY, anthropic_base_url=anthropic_server.url + "/")
    assert len(client.list("anthropic").data) == 5


def test_cursor_v1_items_become_anthropic_models(cursor_server: FakeRuntime) -> None:
    listed = models(env={"CURSOR_API_KEY": KEY, "CURSOR_BASE_URL": cursor_server.url}).list("cursor")

    assert [s.path for s in cursor_server.seen] == ["/v1/models"]
    assert cursor_server.seen[0].headers["authorization"].startswith("Basic ")
    assert [(m.id, m.display_name) for m in listed.data] == [
        ("composer-2", "Composer 2"),
        ("claude-4-sonnet-thinking", "Claude 4 Sonnet Thinking"),
        ("gpt-5", "GPT-5"),
    ]
    assert all(m.created_at == datetime(1970, 1, 1, tzinfo=timezone.utc) for m in listed.data)
    assert all(m.max_input_tokens is None and m.type == "model" for m in listed.data)
    assert (listed.has_more, listed.first_id, listed.last_id) == (False, "composer-2", "gpt-5")
    for model in listed.model_dump(mode="json")["data"]:
        anthropic.types.ModelInfo.model_validate(model)


def test_cursor_v0_ids_when_v1_is_not_there() -> None:
    ids = ["claude-4-sonnet-thinking", "o3", "gpt-5"]
    with running(FakeRuntime("cursor", ids, key=KEY, versions=("v0",))) as server:
        listed = models(env={}, cursor_api_key=KEY, cursor_base_url=server.url).list("cursor", limit=2)
    assert [s.path for s in server.seen] == ["/v1/models", "/v0/models"]
    assert server.seen[1].headers["authorization"] == f"Bearer {KEY}"
    assert [(m.id, m.display_name) for m in listed.data] == [("claude-4-sonnet-thinking", "Claude 4 Sonnet Thinking"),
                                                           ("o3", "o3")]
    assert listed.has_more is True


@pytest.mark.parametrize(("version", "path"), [("v0", "/v0/models"), ("v1", "/v1/models")])
def test_cursor_api_version_asks_only_that_version(cursor_server: FakeRuntime, version: str, path: str) -> None:
    listed = models(env={"CURSOR_API_KEY": KEY, "CURSOR_BASE_URL": cursor_server.url, "CURSOR_API_VERSION": version})
    assert [m.id for m in listed.list("cursor").data] == [item["id"] for item in CURSOR_ITEMS]
    assert [s.path for s in cursor_server.seen] == [path]


def test_cursor_without_any_version_is_not_found() -> None:
    with running(FakeRuntime("cursor", [], versions=())) as server:
        with pytest.raises(NotFoundError) as caught:
            models(env={"CURSOR_API_KEY": KEY, "CURSOR_BASE_URL": server.url}).list("cursor")
    assert "/v0/models" in str(caught.value) and caught.value.status == 404


ERROR_ANSWERS = [
    pytest.param(Canned(401, anthropic_error("authentication_error", "invalid x-api-key")), AuthenticationError,
                 "invalid x-api-key", id="401"),
    pytest.param(Canned(403, anthropic_error("permission_error", "no models for you")), AuthenticationError,
                 "no models for you", id="403"),
    pytest.param(Canned(404, anthropic_error("not_found_error", "no such route")), NotFoundError, "no such route",
                 id="404"),
    pytest.param(Canned(400, anthropic_error("invalid_request_error", "bad limit")), ModelsError, "bad limit",
                 id="400"),
    pytest.param(Canned(200, b"<html>proxy login</html>"), MalformedResponseError, "not JSON", id="html"),
    pytest.param(Canned(200, b'{"data": [{"id": "x"'), MalformedResponseError, "not JSON", id="truncated-json"),
    pytest.param(Canned(200, b"not gzip", {"Content-Encoding": "gzip"}), MalformedResponseError,
                 "could not be decoded", id="bad-encoding"),
    pytest.param(Canned(200, {"models": ["x"]}), MalformedResponseError, "'data' list", id="wrong-shape"),
    pytest.param(Canned(200, {"data": [], "has_more": "yes"}), MalformedResponseError, "has_more", id="bad-has-more"),
]


@pytest.mark.parametrize(("answer", "error", "reason"), ERROR_ANSWERS)
def test_each_failure_is_its_typed_error(
    anthropic_server: FakeRuntime, answer: Canned, error: type[ModelsError], reason: str
) -> None:
    anthropic_server.answer_next(answer)
    sleeps = Sleeps()
    with pytest.raises(error) as caught:
        anthropic_client(anthropic_server, sleep=sleeps).list("anthropic")
    assert type(caught.value) is error
    assert reason in str(caught.value) and str(caught.value).startswith("anthropic: ")
    assert caught.value.runtime == "anthropic"
    # None of these is worth a retry.
    assert sleeps == [] and len(anthropic_server.seen) == 1


def test_server_error_is_retried_then_unavailable(anthropic_server: FakeRuntime) -> None:
    anthropic_server.answer_next(*[Canned(500, anthropic_error("api_error", "boom"))] * 3)
    sleeps = Sleeps()
    with pytest.raises(UnavailableError) as caught:
        anthropic_client(anthropic_server, sleep=sleeps).list("anthropic")
    assert "HTTP 500: boom" in str(caught.value) and caught.value.status == 500
    assert len(anthropic_server.seen) == 3 and len(sleeps) == 2


def test_server_error_then_success_is_a_list(anthropic_server: FakeRuntime) -> None:
    anthropic_server.answer_next(Canned(529, anthropic_error("overloaded_error", "busy")))
    assert len(anthropic_client(anthropic_server).list("anthropic").data) == 5


def test_429_waits_what_retry_after_says_then_lists(anthropic_server: FakeRuntime) -> None:
    anthropic_server.answer_next(
        Canned(429, anthropic_error("rate_limit_error", "slow down"), {"Retry-After": "7"}),
        Canned(429, anthropic_error("rate_limit_error", "slow down"), {"Retry-After": "0.5"}),
    )
    sleeps = Sleeps()
    listed = anthropic_client(anthropic_server, sleep=sleeps).list("anthropic")
    assert sleeps == [7.0, 0.5]
    assert [m.id for m in listed.data] == ANTHROPIC_IDS


def test_429_really_sleeps_retry_after(anthropic_server: FakeRuntime) -> None:
    anthropic_server.answer_next(Canned(429, anthropic_error("rate_limit_error", "slow down"), {"Retry-After": "1"}))
    started = time.monotonic()
    listed = models(env={"ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": anthropic_server.url}).list("anthropic")
    assert time.monotonic() - started >= 1.0
    assert len(listed.data) == 5


def test_429_retries_are_bounded(anthropic_server: FakeRuntime) -> None:
    limited = Canned(429, anthropic_error("rate_limit_error", "slow down"), {"Retry-After": "2"})
    anthropic_server.answer_next(*[limited] * 4)
    sleeps = Sleeps()
    with pytest.raises(RateLimitedError) as caught:
        anthropic_client(anthropic_server, sleep=sleeps, max_retries=3).list("anthropic")
    assert sleeps == [2.0, 2.0, 2.0] and len(anthropic_server.seen) == 4
    assert caught.value.retry_after == 2.0 and "Retry-After 2 s" in str(caught.value)


def test_429_asking_too_long_a_wait_is_not_waited_for(anthropic_server: FakeRuntime) -> None:
    anthropic_server.answer_next(Canned(429, anthropic_error("rate_limit_error", "later"), {"Retry-After": "3600"}))
    sleeps = Sleeps()
    with pytest.raises(RateLimitedError) as caught:
        anthropic_client(anthropic_server, sleep=sleeps).list("anthropic")
    assert sleeps == [] and caught.value.retry_after == 3600.0


def test_timeout_is_configurable_and_unavailable(anthropic_server: FakeRuntime) -> None:
    anthropic_server.answer_next(Canned(200, {"data": []}, delay=1.0))
    started = time.monotonic()
    with pytest.raises(UnavailableError) as caught:
        anthropic_client(anthropic_server, timeout=0.2, max_retries=0).list("anthropic")
    assert time.monotonic() - started < 0.9
    assert "within 0.2 s" in str(caught.value)


def test_nothing_listening_is_unavailable_without_a_traceback_from_httpx() -> None:
    with running(FakeRuntime("anthropic", [])) as server:
        url = server.url
    with pytest.raises(UnavailableError) as caught:
        models(env={}, anthropic_base_url=url, max_retries=1, sleep=Sleeps()).list("anthropic")
    assert f"could not reach {url}/v1/models (ConnectError)" in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__context__ is None


def test_no_key_sent_says_which_variable_to_set(anthropic_server: FakeRuntime) -> None:
    with pytest.raises(AuthenticationError) as caught:
        models(env={"ANTHROPIC_BASE_URL": anthropic_server.url}).list("anthropic")
    assert "ANTHROPIC_API_KEY" in str(caught.value)
    assert "x-api-key" not in anthropic_server.seen[0].headers


def test_keys_stay_out_of_errors_and_reprs(anthropic_server: FakeRuntime) -> None:
    echoed = anthropic_error("authentication_error", f"key {KEY} is revoked")
    anthropic_server.answer_next(Canned(401, echoed))
    client = anthropic_client(anthropic_server)
    with pytest.raises(AuthenticationError) as caught:
        client.list("anthropic")
    assert KEY not in str(caught.value) and "[redacted]" in str(caught.value)
    assert KEY not in repr(client) and KEY not in repr(client.options)
    assert KEY not in repr(amodels(anthropic_api_key=KEY, cursor_api_key=KEY, env={}))


def test_unknown_runtime_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="anthropic, cursor, opencode, opencode-anthropic"):
        models(env={}).list("gemini")


@pytest.mark.parametrize("limit", [0, -1, 2.5, "3", True])
def test_bad_limit_is_a_value_error(limit: object) -> None:
    with pytest.raises(ValueError, match="limit"):
        models(env={}).list("anthropic", limit=limit)  # type: ignore[arg-type]


def test_opencode_reads_a_running_sidecar_and_its_alias_too() -> None:
    sidecar_models = [
        {**anthropic_model("claude-sonnet-4-5", "claude-sonnet-4-5", "1970-01-01T00:00:00Z"), "registered": False},
        {**anthropic_model("openai/new", "openai/new", "1970-01-01T00:00:00Z"), "registered": True},
        {**anthropic_model("slow", "slow", "1970-01-01T00:00:00Z")},
    ]
    with running(FakeRuntime("anthropic", sidecar_models, key="sidecar-key")) as server:
        client = models(env={"SIDECAR_URL": server.url, "SIDECAR_API_KEY": "sidecar-key", "ANTHROPIC_API_KEY": "x"})
        listed = client.list("opencode")
        aliased = client.list("opencode-anthropic", limit=2)
    assert [(m.id, m.registered) for m in listed.data] == [
        ("claude-sonnet-4-5", False), ("openai/new", True), ("slow", False)
    ]
    assert [m.id for m in aliased.data] == ["claude-sonnet-4-5", "openai/new"] and aliased.has_more
    assert all(s.headers["x-api-key"] == "sidecar-key" for s in server.seen)


def test_opencode_from_a_gateway_is_converted_directly() -> None:
    gateway_models = [
        {"id": "zeta", "object": "model", "created": 1677610602, "owned_by": "openai"},
        {"id": "alpha", "object": "model", "mode": "chat", "max_input_tokens": 1000, "max_output_tokens": 100},
        {"id": "embedder", "object": "model", "mode": "embedding"},
    ]
    with running(FakeRuntime("openai", gateway_models, key="gw-key")) as server:
        listed = models(env={"SIDECAR_GATEWAY_API_KEY": "gw-key", "SIDECAR_URL": "http://127.0.0.1:1"},
                        gateway_url=server.url).list("opencode")
    assert [(m.id, m.display_name, m.max_input_tokens, m.max_tokens) for m in listed.data] == [
        ("alpha", "alpha", 1000, 100), ("zeta", "zeta", None, None)
    ]


@pytest.mark.anyio
async def test_async_twin_lists_the_same_pages(anthropic_server: FakeRuntime) -> None:
    client = amodels(env={"ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": anthropic_server.url})
    listed = await client.list("anthropic")
    assert [m.id for m in listed.data] == ANTHROPIC_IDS
    assert len(anthropic_server.seen) == 3
    limited = await client.list("anthropic", limit=3)
    assert [m.id for m in limited.data] == ANTHROPIC_IDS[:3] and limited.has_more


@pytest.mark.anyio
async def test_async_twin_retries_and_types_errors(cursor_server: FakeRuntime) -> None:
    waited: list[float] = []

    async def sleep(seconds: float) -> None:
        waited.append(seconds)

    cursor_server.answer_next(
        Canned(429, {"error": {"code": "rate_limited", "message": "slow"}}, {"Retry-After": "3"}),
        Canned(401, {"error": {"code": "unauthorized", "message": "Invalid API key"}}),
    )
    client = amodels(env={"CURSOR_API_KEY": KEY, "CURSOR_BASE_URL": cursor_server.url}, sleep=sleep)
    with pytest.raises(AuthenticationError, match="Invalid API key"):
        await client.list("cursor")
    assert waited == [3.0]
    assert len((await client.list("cursor")).data) == 3
