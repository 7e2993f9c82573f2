"""The MCP server in process (sidecar/http/mcp.py): its tools behind the app's routes, the `/mcp`
split between our server and opencode's own routes, and its answer while the sidecar stops."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from sidecar.catalog import Catalog, ModelInfo
from sidecar.errors import HttpError
from sidecar.http.mcp import McpEndpoint, ModelTools
from sidecar.http.routes import create_app
from sidecar.naming import ModelRef
from tests.support.api_view import CatalogOf, ResolveWith, view_of

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]

CATALOG = Catalog([ModelInfo(id="claude-sonnet-4-5", display_name="Claude Sonnet 4.5", max_input_tokens=200000)])
MCP_HEADERS = {"accept": "application/json, text/event-stream"}


async def resolve(requested: Any, directory: str | None) -> ModelRef:
    if requested == "nope":
        raise HttpError(400, "model 'nope' is not a model")
    return ModelRef("litellm", "claude-sonnet-4-5")


def call(tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": arguments}}


@pytest.fixture
def endpoint() -> McpEndpoint:
    return McpEndpoint(ModelTools(CatalogOf(lambda: CATALOG), ResolveWith(resolve)))


def client_of(endpoint: McpEndpoint) -> httpx.AsyncClient:
    app = create_app(view_of(lambda: CATALOG, mcp=endpoint))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")


async def test_the_tools_answer_with_structured_content(endpoint: McpEndpoint) -> None:
    with capture_logs() as logs:
        async with client_of(endpoint) as client, endpoint.running():
            answers = await ask_each(client)
    listed, by_pair, resolved, refused = answers
    assert listed["structuredContent"]["models"][0]["model"] == "litellm/claude-sonnet-4-5"
    assert listed["structuredContent"]["next_cursor"] is None
    assert by_pair["structuredContent"]["max_input_tokens"] == 200000
    assert resolved["structuredContent"]["model"] == "litellm/claude-sonnet-4-5"
    # The resolver's refusal, as the route gives it, is the tool's error for the agent to read.
    assert refused["isError"] is True and "is not a model" in refused["content"][0]["text"]
    events = [(entry["event"], entry["tool"]) for entry in logs if entry["event"].startswith("mcp.")]
    assert events == [("mcp.tool_called", "list_models"), ("mcp.tool_called", "get_model"),
                      ("mcp.tool_called", "resolve_model"), ("mcp.tool_refused", "resolve_model")]


async def ask_each(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    calls = [("list_models", {}), ("get_model", {"model": "litellm/claude-sonnet-4-5"}),
             ("resolve_model", {"model": "sonnet"}), ("resolve_model", {"model": "nope"})]
    return [(await client.post("/mcp", json=call(tool, arguments), headers=MCP_HEADERS)).json()["result"]
            for tool, arguments in calls]


async def test_opencode_keeps_its_own_mcp_routes(endpoint: McpEndpoint) -> None:
    async with client_of(endpoint) as client, endpoint.running():
        status = await client.get("/mcp", headers={"accept": "application/json"})
        # The SDK is loaded by the first request for our MCP server, not by opencode's own.
        assert not endpoint.loaded
        await client.post("/mcp", json=call("list_models", {}), headers=MCP_HEADERS)
        assert endpoint.loaded
    # The stand-in pass-through's answer: the request went to opencode, not to the MCP server.
    assert status.status_code == 404 and "no route for GET /mcp" in status.text


def test_the_sidecar_does_not_import_the_mcp_sdk_or_aiohttp_until_they_are_used() -> None:
    # ~24 MiB resident for the SDK: paid at the first MCP request (above), not by every sidecar.
    code = (
        "import sys; import sidecar.cli, sidecar.supervisor, sidecar.http.routes; "
        "print(sorted(m for m in ('mcp', 'aiohttp') if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True, cwd=ROOT)
    assert loaded.stdout.strip() == "[]"


async def test_while_stopping_mcp_requests_are_answered_503(endpoint: McpEndpoint) -> None:
    async with client_of(endpoint) as client:
        before = await client.post("/mcp", json=call("list_models", {}), headers=MCP_HEADERS)
        async with endpoint.running():
            during = await client.post("/mcp", json=call("list_models", {}), headers=MCP_HEADERS)
        after = await client.post("/mcp", json=call("list_models", {}), headers=MCP_HEADERS)
    assert (before.status_code, during.status_code, after.status_code) == (503, 200, 503)
    assert after.json()["type"] == "error"
