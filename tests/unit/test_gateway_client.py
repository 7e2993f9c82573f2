"""One gateway client per format: which routes it reads, which headers it sends, what it keeps."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from structlog.testing import capture_logs

from sidecar.gateway.client import MAX_LIST_BYTES, GatewayClient, GatewayError
from sidecar.gateway.config import load_gateways_file

pytestmark = pytest.mark.anyio

FIXTURES = Path(__file__).parent.parent / "fixtures" / "gateways"
ENVIRON = {"GW_KEY": "sk-gw-secret", "VK": "vk-secret"}


def fixture(name: str) -> object:
    return json.loads((FIXTURES / name).read_text())


async def no_sleep(_delay: float) -> None:
    return None


def client(tmp_path: Path, handler, entry: str) -> GatewayClient:
    path = tmp_path / "sidecar.toml"
    path.write_text(f"[[gateways]]\nid = 'gw'\n{entry}\n")
    (gateway,) = load_gateways_file(path, default_poll_interval=30, environ=ENVIRON)
    return GatewayClient(
        gateway, timeout=10.0, retries=0, max_models=5_000, transport=httpx.MockTransport(handler), sleep=no_sleep
    )


async def test_auto_detects_litellm_and_enriches_from_model_info(tmp_path: Path) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if request.url.path == "/v1/models":
            return httpx.Response(200, json=fixture("litellm-models.json"))
        if request.url.path == "/model/info":
            return httpx.Response(200, json=fixture("litellm-model-info.json"))
        return httpx.Response(404)

    gw = client(tmp_path, handler, "url = 'http://gw:4000'\napi_key_env = 'GW_KEY'")
    catalog = await gw.fetch_catalog()
    assert gw.detected_format == "litellm"
    sonnet = catalog.get("claude-sonnet-4-5")
    assert sonnet is not None
    assert (sonnet.max_input_tokens, sonnet.max_tokens) == (200000, 64000)
    assert sonnet.cost is not None and (sonnet.cost.input, sonnet.cost.output) == pytest.approx((3.0, 15.0))
    assert sonnet.tool_call is True and sonnet.reasoning is True
    assert "text-embedding-3-small" not in catalog
    assert not any("*" in model_id for model_id in catalog.ids)
    assert seen[:2] == ["/v1/models", "/model/info"]


async def test_auto_remembers_a_plain_openai_gateway_and_stops_asking_for_model_info(tmp_path: Path) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"object": "list", "data": [{"id": "m1", "object": "model"}]})
        return httpx.Response(404)

    gw = client(tmp_path, handler, "url = 'http://gw:8000/v1'")
    assert (await gw.fetch_catalog()).ids == ["m1"]
    assert (await gw.fetch_catalog()).ids == ["m1"]
    assert gw.detected_format == "openai"
    assert seen == ["/v1/models", "/model/info", "/v1/models"]


async def test_anthropic_gateway_pages_with_its_own_headers(tmp_path: Path) -> None:
    pages = {
        None: {"data": [{"type": "model", "id": "claude-a", "display_name": "A", "created_at": "2025-09-29T00:00:00Z"}],
               "has_more": True, "first_id": "claude-a", "last_id": "claude-a"},
        "claude-a": {"data": [{"type": "model", "id": "claude-b", "display_name": "B", "created_at": "2025-01-01T00:00:00Z"}],
                     "has_more": False, "first_id": "claude-b", "last_id": "claude-b"},
    }
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=pages[request.url.params.get("after_id")])

    gw = client(tmp_path, handler, "url = 'https://api.example'\nformat = 'anthropic'\napi_key_env = 'GW_KEY'")
    catalog = await gw.fetch_catalog()
    assert catalog.ids == ["claude-a", "claude-b"]
    assert str(catalog.get("claude-a").release_date) == "2025-09-29"  # type: ignore[union-attr]
    assert seen[0].headers["x-api-key"] == "sk-gw-secret"
    assert seen[0].headers["anthropic-version"]
    assert "authorization" not in seen[0].headers
    assert [r.url.params.get("after_id") for r in seen] == [None, "claude-a"]


async def test_operator_headers_reach_the_gateway_and_portkey_gets_its_key_header(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"object": "list", "data": [{"id": "gpt-4o", "object": "model"}]})

    entry = (
        "url = 'https://api.portkey.ai/v1'\nformat = 'portkey'\napi_key_env = 'GW_KEY'\n"
        "headers = { x-portkey-provider = 'openrouter', x-portkey-virtual-key = '{env:VK}' }"
    )
    await client(tmp_path, handler, entry).fetch_catalog()
    headers = seen[0].headers
    assert headers["x-portkey-api-key"] == "sk-gw-secret"
    assert headers["x-portkey-provider"] == "openrouter"
    assert headers["x-portkey-virtual-key"] == "vk-secret"


async def test_ollama_reads_its_native_tags(tmp_path: Path) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(200, json={"models": [
            {"name": "qwen2.5:7b", "model": "qwen2.5:7b", "details": {"family": "qwen2"}},
            {"name": "nomic-embed-text:latest", "model": "nomic-embed-text:latest", "details": {"family": "nomic-bert"}},
        ]})

    catalog = await client(tmp_path, handler, "url = 'http://127.0.0.1:11434'\nformat = 'ollama'").fetch_catalog()
    assert catalog.ids == ["qwen2.5:7b"]
    assert seen == ["/api/tags"]


async def test_include_and_exclude_select_models(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        ids = ["anthropic/claude-a", "anthropic/claude-a:free", "openai/gpt-5", "meta/llama"]
        return httpx.Response(200, json={"data": [{"id": i} for i in ids]})

    entry = "url = 'http://gw'\nformat = 'openai'\ninclude = ['anthropic/*', 'openai/*']\nexclude = ['*:free']"
    assert (await client(tmp_path, handler, entry).fetch_catalog()).ids == ["anthropic/claude-a", "openai/gpt-5"]


async def test_an_oversized_answer_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    sent = 0

    async def body():
        nonlocal sent
        chunk = b" " * 1024 * 1024
        for _ in range(64):
            sent += len(chunk)
            yield chunk

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body())

    with pytest.raises(GatewayError, match="larger than"):
        await client(tmp_path, handler, "url = 'http://gw'\nformat = 'openai'").fetch_catalog()
    assert sent <= MAX_LIST_BYTES + 1024 * 1024


async def test_a_redirect_is_not_followed_with_the_key(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(302, headers={"location": "http://elsewhere:9999/v1/models"})

    gw = client(tmp_path, handler, "url = 'http://gw'\nformat = 'openai'\napi_key_env = 'GW_KEY'")
    with pytest.raises(GatewayError, match="HTTP 302"):
        await gw.fetch_catalog()
    assert [r.url.host for r in seen] == ["gw"]


async def test_reserved_ids_are_dropped_with_a_warning_naming_them_once_per_change(tmp_path: Path) -> None:
    listed = [["m1", "toString", "hasOwnProperty", "toString"], ["m1", "toString", "hasOwnProperty"], ["m1", "valueOf"]]

    def handler(request: httpx.Request) -> httpx.Response:
        ids = listed[0]
        return httpx.Response(200, json={"object": "list", "data": [{"id": i, "object": "model"} for i in ids]})

    gw = client(tmp_path, handler, "url = 'http://gw:4000'\nformat = 'openai'")
    dropped = []
    for _ in range(3):
        with capture_logs() as logs:
            catalog = await gw.fetch_catalog()
        assert catalog.ids == ["m1"]
        dropped.append([(e["log_level"], e["models"]) for e in logs if e["event"] == "gateway.models_dropped"])
        listed.pop(0)
    # The same ids on the next poll are not said again; a change is.
    assert dropped == [[("warning", ["hasOwnProperty", "toString"])], [], [("warning", ["valueOf"])]]


async def test_litellm_wildcard_routes_read_and_sentinels_dropped(tmp_path: Path) -> None:
    """Wildcard routes come only with `return_wildcard_routes=true` (LiteLLM 1.8x, measured): asked
    for once `auto` finds LiteLLM, and on every poll after. Sentinels and access-group names go."""
    seen: list[str] = []
    listed = [{"id": name, "object": "model"} for name in ("gpt-5.5", "all-team-models", "all-proxy-models", "beta-models")]
    routes = [{"id": "openai/*", "object": "model"}, {"id": "anthropic/claude-*", "object": "model"}]
    info = {"data": [
        {"model_name": "gpt-5.5", "model_info": {"mode": "chat"}},
        {"model_name": "grouped", "model_info": {"access_groups": ["beta-models"]}},
        {"model_name": "all-team-models", "model_info": {}},
    ]}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url.copy_with(scheme="http", host="gw", port=None)).removeprefix("http://gw"))
        if request.url.path == "/v1/models":
            wildcard = request.url.params.get("return_wildcard_routes") == "true"
            return httpx.Response(200, json={"object": "list", "data": listed + (routes if wildcard else [])})
        if request.url.path == "/model/info":
            return httpx.Response(200, json=info)
        return httpx.Response(404)

    gw = client(tmp_path, handler, "url = 'http://gw:4000'")
    catalog = await gw.fetch_catalog()
    assert catalog.ids == ["gpt-5.5"]
    assert not catalog.capped  # a dropped sentinel is no model SIDECAR_MAX_MODELS left out
    assert gw.routes == ("openai/*", "anthropic/claude-*")
    assert seen == ["/v1/models", "/model/info", "/v1/models?return_wildcard_routes=true"]
    seen.clear()
    assert (await gw.fetch_catalog()).ids == ["gpt-5.5"]
    assert seen == ["/v1/models?return_wildcard_routes=true", "/model/info"]


async def test_litellm_sentinels_dropped_without_model_info(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "m1"}, {"id": "all-proxy-models"}]})
        return httpx.Response(404)

    gw = client(tmp_path, handler, "url = 'http://gw:4000'\nformat = 'litellm'")
    assert (await gw.fetch_catalog()).ids == ["m1"]
    assert gw.routes == ()


async def test_the_models_max_models_leaves_out_are_remembered_by_id(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"data": [{"id": f"m{n}"} for n in range(7)]})

    path = tmp_path / "sidecar.toml"
    path.write_text("[[gateways]]\nid = 'gw'\nurl = 'http://gw:8000/v1'\nformat = 'openai'\n")
    (gateway,) = load_gateways_file(path, default_poll_interval=30, environ=ENVIRON)
    gw = GatewayClient(gateway, timeout=10.0, retries=0, max_models=2, transport=httpx.MockTransport(handler))
    catalog = await gw.fetch_catalog()
    assert len(catalog) == 2 and catalog.capped
    assert gw.unkept == {f"m{n}" for n in range(7)} - set(catalog.ids)
