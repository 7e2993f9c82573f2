"""Agents can ask (issue 18): the sidecar's MCP server at /mcp, used by the `mcp` SDK's own client
and by the real opencode, whose config names it by default, against a real LiteLLM."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from tests.support import litellm_proxy as lp
from tests.support.fake_upstream import TOOL_ANSWER_PREFIX, TOOL_CALLER, FakeUpstream
from tests.support.opencode_api import answer_text, create_session, prompt
from tests.support.sidecar_process import SidecarProcess, start_sidecar

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

API_KEY = "mcp-test-api-key-0123456789abcdef0123"


@pytest.fixture(scope="module")
def mcp_gateway(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream) -> Iterator[lp.LiteLLMProxy]:
    models = [
        lp.mock_model("claude-sonnet-4-5", max_input_tokens=200000, max_output_tokens=64000),
        lp.mock_model("claude-haiku-4-5", max_input_tokens=100000),
        lp.model_entry(TOOL_CALLER, {"model": f"openai/{TOOL_CALLER}", "api_base": upstream.base_url, "api_key": "x"},
                       {"supports_function_calling": True}),
    ]
    proxy = lp.start_proxy(tmp_path_factory.mktemp("mcp-gateway"), models)
    yield proxy
    lp.stop_proxy(proxy)


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory, mcp_gateway: lp.LiteLLMProxy) -> Iterator[SidecarProcess]:
    process = start_sidecar(
        tmp_path_factory.mktemp("mcp-sidecar"), mcp_gateway.url, mcp_gateway.master_key, api_key=API_KEY,
        poll_interval="3600",
    )
    yield process
    process.stop()


async def with_session(url: str, headers: dict[str, str], work: Any) -> Any:
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                return await work(session)


def structured(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content
    assert result.structured_content is not None
    # The text block carries the same JSON, for clients that read text only (opencode does).
    assert json.loads(result.content[0].text) == result.structured_content
    return result.structured_content


def test_the_sdk_client_lists_the_tools_and_calls_each(sidecar: SidecarProcess) -> None:
    async def work(session: ClientSession) -> dict[str, Any]:
        tools = await session.list_tools()
        names = {tool.name for tool in tools.tools}
        listed = structured(await session.call_tool("list_models", {"min_context": 150000}))
        paged = structured(await session.call_tool("list_models", {"limit": 1}))
        rest = structured(await session.call_tool("list_models", {"limit": 1, "cursor": paged["next_cursor"]}))
        text = structured(await session.call_tool("list_models", {"text": "HAIKU"}))
        model = structured(await session.call_tool("get_model", {"model": "litellm/claude-sonnet-4-5"}))
        resolved = structured(await session.call_tool("resolve_model", {"model": "claude-haiku-4-5"}))
        missing = await session.call_tool("get_model", {"model": "no-such-model"})
        bad = await session.call_tool("resolve_model", {"model": "{env:HOME}"})
        too_many = await session.call_tool("list_models", {"limit": 1000})
        return {"names": names, "listed": listed, "paged": paged, "rest": rest, "text": text, "model": model,
                "resolved": resolved, "missing": missing, "bad": bad, "too_many": too_many}

    got = anyio.run(with_session, f"{sidecar.api_url}/mcp", {"x-api-key": API_KEY}, work)
    assert {"list_models", "get_model", "resolve_model"} <= got["names"]
    assert [m["id"] for m in got["listed"]["models"]] == ["claude-sonnet-4-5"]
    assert got["listed"]["models"][0]["model"] == "litellm/claude-sonnet-4-5"
    assert got["listed"]["models"][0]["context"] == 200000
    assert len(got["paged"]["models"]) == 1 and got["paged"]["next_cursor"] == got["paged"]["models"][0]["id"]
    assert got["rest"]["models"][0]["id"] != got["paged"]["models"][0]["id"]
    assert got["paged"]["matched"] == 3
    assert [m["id"] for m in got["text"]["models"]] == ["claude-haiku-4-5"]
    assert got["model"]["max_tokens"] == 64000 and got["model"]["status"] == "listed"
    assert got["resolved"]["model"] == "litellm/claude-haiku-4-5"
    assert got["missing"].is_error and "no-such-model" in got["missing"].content[0].text
    assert got["bad"].is_error and "substitution" in got["bad"].content[0].text
    assert got["too_many"].is_error


def test_the_sdk_client_is_refused_without_the_key(sidecar: SidecarProcess) -> None:
    async def work(session: ClientSession) -> None:
        raise AssertionError("initialized without a key")

    for headers in ({}, {"x-api-key": "wrong-" + API_KEY}):
        with pytest.raises(BaseException) as caught:
            anyio.run(with_session, f"{sidecar.api_url}/mcp", headers, work)
        assert "initialized without a key" not in repr(caught.value)
    # The refusal is the key guard's, at the HTTP level, before the MCP server.
    answer = httpx.post(
        f"{sidecar.api_url}/mcp", headers={"accept": "application/json, text/event-stream"},
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
    )
    assert answer.status_code == 401 and answer.json()["type"] == "error"


def test_opencode_has_the_tools_in_a_fresh_directory(
    sidecar: SidecarProcess, upstream: FakeUpstream, tmp_path: Path
) -> None:
    directory = tmp_path / "fresh-project"
    directory.mkdir()
    with httpx.Client(base_url=sidecar.api_url, headers={"x-api-key": API_KEY}, timeout=120) as api:
        check_opencode_uses_the_tools(api, upstream, directory)


def check_opencode_uses_the_tools(api: httpx.Client, upstream: FakeUpstream, directory: Path) -> None:
    # opencode's own GET /mcp, through the pass-through: its status of our server there.
    status = api.get("/mcp", params={"directory": str(directory)})
    assert status.status_code == 200, status.text
    assert status.json().get("sidecar") == {"status": "connected"}, status.json()

    session = create_session(api, str(directory))
    answer = prompt(api, session, str(directory), f"litellm/{TOOL_CALLER}", "which models may I use?")
    text = answer_text(answer)
    assert text.startswith(TOOL_ANSWER_PREFIX)
    messages = api.get(f"/session/{session}/message", params={"directory": str(directory)}).json()
    calls = [part for message in messages for part in message["parts"] if part.get("type") == "tool"]
    assert [call["tool"] for call in calls] == ["sidecar_list_models"], calls
    output = calls[0]["state"]["output"]
    assert calls[0]["state"]["status"] == "completed"
    for model_id in ("claude-sonnet-4-5", "claude-haiku-4-5", TOOL_CALLER):
        assert f'"litellm/{model_id}"' in output
