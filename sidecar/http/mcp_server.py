"""The `mcp` SDK's server for /mcp: the three tools, on its streamable HTTP transport, stateless.

Imported by McpEndpoint at the first MCP request, not with the sidecar: the SDK and what it pulls
in (its pydantic types, OpenTelemetry, sse-starlette, ...) are ~24 MiB resident and ~0.4 s of
CPU, which a sidecar whose agents never call the tools would pay for nothing.
"""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import ToolAnnotations
from pydantic import Field

from sidecar.http.mcp import MCP_BODY_LIMIT, ModelTools
from sidecar.http.mcp_route import MCP_PATH
from sidecar.model_query import MAX_PAGE_SIZE, MAX_TEXT_LENGTH, Capability, ModelQuery

READ_ONLY = ToolAnnotations(readOnlyHint=True, openWorldHint=False)


def build_server(tools: ModelTools) -> MCPServer[Any]:
    # MCPServer calls logging.basicConfig: a no-op once log.configure_logging has put its bridge on
    # the root logger, which cli.py does before it builds the Sidecar.
    server: MCPServer[Any] = MCPServer(
        "opencode-sidecar",
        instructions=(
            "The models this opencode may use, from the sidecar that keeps them in step with the "
            "LLM gateways. Give opencode the `model` field (provider/model) of an answer."
        ),
    )

    # Coroutines, though they never wait: the SDK runs a plain function on a worker thread.
    @server.tool(annotations=READ_ONLY)
    async def list_models(
        gateway: Annotated[str | None, Field(description="only this gateway's models (its provider id)")] = None,
        capabilities: Annotated[
            list[Capability] | None, Field(description="only models the gateway says have all of these", max_length=6)
        ] = None,
        min_context: Annotated[int | None, Field(description="at least this many input tokens", ge=0)] = None,
        max_input_price: Annotated[
            float | None, Field(description="at most this many US dollars per million input tokens", ge=0)
        ] = None,
        max_output_price: Annotated[
            float | None, Field(description="at most this many US dollars per million output tokens", ge=0)
        ] = None,
        text: Annotated[
            str | None, Field(description="in the model's id or name, any case", max_length=MAX_TEXT_LENGTH)
        ] = None,
        limit: Annotated[int | None, Field(description=f"models per page, 1 to {MAX_PAGE_SIZE}", ge=1)] = None,
        cursor: Annotated[str | None, Field(description="next_cursor of the previous page", max_length=1024)] = None,
    ) -> dict[str, Any]:
        """The models opencode may use, newest first, a page at a time: each with the `model` name
        to give opencode (provider/model), its context, prices and capabilities."""
        query = ModelQuery(
            gateway=gateway,
            capabilities=tuple(capabilities or ()),
            min_context=min_context,
            max_input_price=max_input_price,
            max_output_price=max_output_price,
            text=text,
        )
        return tools.list_models(query, cursor=cursor, limit=limit)

    @server.tool(annotations=READ_ONLY)
    async def get_model(
        model: Annotated[str, Field(description="an id list_models gave, or provider/model", max_length=1024)],
    ) -> dict[str, Any]:
        """Everything known of one model: limits, prices, modalities, release date, status."""
        return tools.get_model(model)

    @server.tool(annotations=ToolAnnotations(readOnlyHint=False, idempotentHint=True, openWorldHint=False))
    async def resolve_model(
        model: Annotated[str, Field(description="any name for a model: an alias, an id, provider/model", max_length=1024)],
        directory: Annotated[
            str | None, Field(description="the project directory to make it usable in", max_length=4096)
        ] = None,
    ) -> dict[str, Any]:
        """The provider/model to give opencode for a name, by the rules of POST /v1/models/resolve:
        registered with the gateway if need be, and usable once this answers."""
        return await tools.resolve_model(model, directory)

    return server


def session_manager(tools: ModelTools) -> StreamableHTTPSessionManager:
    """The transport's session manager for the tools, to be run (`.run()`) around the requests it serves."""
    server = build_server(tools)
    # Builds the session manager; the Starlette app it returns is not served: `/mcp` is our
    # route, behind our guards.
    server.streamable_http_app(
        streamable_http_path=MCP_PATH,
        # Nothing kept between requests: no sessions to bound or expire, any replica answers.
        stateless_http=True,
        json_response=True,
        max_request_body_size=MCP_BODY_LIMIT,
        # RefuseForeignBrowsers has checked Host and Origin before this app is reached, with
        # the operator's allowed hosts; the SDK's own check knows only loopback names.
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    return server.session_manager
