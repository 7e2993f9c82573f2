import random

import httpx
import pytest

from sidecar.backoff import restart_delay, retry_delay
from sidecar.catalog import Catalog, ModelInfo
from sidecar.gateway.client import GatewayClient, GatewayError
from sidecar.lists.entries import MalformedModelList
from sidecar.lists.formats import parse_model_list
from sidecar.settings import Settings

LITELLM_LIST = {
    "object": "list",
    "data": [
        {"id": "claude-sonnet-4-5", "object": "model", "created": 1677610602, "owned_by": "openai",
         "mode": "chat", "max_input_tokens": 200000, "max_output_tokens": 64000},
        {"id": "openai/gpt-5.5", "object": "model", "created": 1677610602, "owned_by": "openai"},
        {"id": "text-embedding-3", "object": "model", "created": 1677610602, "mode": "embedding"},
        {"id": "dall-e", "object": "model", "mode": "image_generation"},
        {"id": "whisper", "object": "model", "mode": "audio_transcription"},
    ],
}


def test_parse_keeps_chat_models_with_limits() -> None:
    parsed = parse_model_list(LITELLM_LIST)
    by_id = {m.id: m for m in parsed.models}
    assert set(by_id) == {"claude-sonnet-4-5", "openai/gpt-5.5"}
    assert by_id["claude-sonnet-4-5"].max_input_tokens == 200000
    assert by_id["claude-sonnet-4-5"].max_tokens == 64000
    assert by_id["openai/gpt-5.5"].max_input_tokens is None
    assert sorted(parsed.skipped_non_chat) == ["dall-e", "text-embedding-3", "whisper"]


@pytest.mark.parametrize("payload", [[], {"data": "x"}, {"object": "list"}, "list", None, 3])
def test_parse_rejects_what_is_not_a_list(payload: object) -> None:
    with pytest.raises(MalformedModelList):
        parse_model_list(payload)


def test_parse_drops_bad_entries_and_keeps_good_ones() -> None:
    payload = {"data": [
        "claude", {"id": ""}, {"id": 5}, {"id": "x" * 300}, {"id": "bad\nname"},
        {"id": "ok", "max_input_tokens": "lots", "max_output_tokens": -1},
    ]}
    parsed = parse_model_list(payload)
    assert [m.id for m in parsed.models] == ["ok"]
    assert parsed.models[0].max_input_tokens is None and parsed.models[0].max_tokens is None
    assert len(parsed.rejected) == 5


def test_catalog_equality_ignores_order_and_dates() -> None:
    a = Catalog([ModelInfo(id="a", display_name="a"), ModelInfo(id="b", display_name="b")])
    b = Catalog([
        ModelInfo(id="b", display_name="b", created_at="2025-01-01T00:00:00Z"),
        ModelInfo(id="a", display_name="a"),
    ])
    assert a.same_models(b)
    c = Catalog([ModelInfo(id="a", display_name="a"), ModelInfo(id="b", display_name="b", max_tokens=10)])
    assert not a.same_models(c)
    assert Catalog.from_json(c.to_json()).same_models(c)


def test_retry_delay_grows_and_is_capped() -> None:
    rng = random.Random(1)
    for attempt in range(1, 12):
        delay = retry_delay(attempt, base=0.5, cap=8.0, rng=rng)
        assert 0 <= delay <= min(8.0, 0.5 * 2 ** (attempt - 1))


def test_restart_delay_is_kubelet_style() -> None:
    delays = [restart_delay(n, initial=10, cap=300) for n in range(0, 8)]
    assert delays == [0, 10, 20, 40, 80, 160, 300, 300]


def settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "gateway_url": "http://gw:4000",
        "gateway_api_key": "sk-test-key",
        "gateway_format": "openai",
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


async def no_sleep(_delay: float) -> None:
    return None


def client_with(handler, **overrides: object) -> GatewayClient:
    config = settings(**overrides)
    return GatewayClient(
        config.gateways[0],
        timeout=config.gateway_timeout,
        retries=config.gateway_retries,
        max_models=config.max_models,
        transport=httpx.MockTransport(handler),
        sleep=no_sleep,
    )


@pytest.mark.anyio
async def test_fetch_sends_the_key_and_reads_the_list() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=LITELLM_LIST)

    catalog = await client_with(handler).fetch_catalog()
    assert catalog.ids == ["claude-sonnet-4-5", "openai/gpt-5.5"]
    assert seen[0].url.path == "/v1/models"
    assert seen[0].headers["authorization"] == "Bearer sk-test-key"


@pytest.mark.anyio
async def test_fetch_retries_server_errors_then_succeeds() -> None:
    answers = [httpx.Response(500), httpx.Response(503), httpx.Response(200, json=LITELLM_LIST)]

    def handler(request: httpx.Request) -> httpx.Response:
        return answers.pop(0)

    catalog = await client_with(handler, gateway_retries=3).fetch_catalog()
    assert len(catalog) == 2


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("response", "fragment"),
    [
        (httpx.Response(500), "HTTP 500"),
        (httpx.Response(401, json={"error": "bad key sk-test-key"}), "HTTP 401"),
        (httpx.Response(200, content=b"<html>oops</html>"), "not JSON"),
        (httpx.Response(200, json={"models": []}), "malformed"),
        (httpx.Response(200, content=b"[" * 100000 + b"]" * 100000), "malformed"),
    ],
)
async def test_fetch_failures_are_clear_and_keyless(response: httpx.Response, fragment: str) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return response

    with pytest.raises(GatewayError) as caught:
        await client_with(handler, gateway_retries=2).fetch_catalog()
    assert fragment in str(caught.value)
    assert "sk-test-key" not in str(caught.value)
    assert calls == (3 if response.status_code >= 500 else 1)


@pytest.mark.anyio
async def test_fetch_timeout_is_reported() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    with pytest.raises(GatewayError, match="timed out"):
        await client_with(handler, gateway_retries=1).fetch_catalog()


