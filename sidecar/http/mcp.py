"""The MCP server at `/mcp`: the catalog as three tools an agent calls (list_models, get_model,
resolve_model), on the official `mcp` SDK's streamable HTTP transport, stateless.

Which requests to `/mcp` are ours and which are opencode's own `GET /mcp` (its MCP status) and
`POST /mcp` (add a server) is mcp_route.is_mcp_request's to say; the route and the key guard both ask it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any

import structlog
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import ToolAnnotations
from pydantic import Field
from starlette.types import ASGIApp, Receive, Scope, Send

from sidecar.errors import HttpError
from sidecar.http.errors import error_response
from sidecar.http.mcp_route import MCP_PATH, is_mcp_request
from sidecar.http.view import CatalogOwner, ModelResolver
from sidecar.model_query import (
    MAX_PAGE_SIZE,
    MAX_TEXT_LENGTH,
    Capability,
    ModelQuery,
    QueryError,
    check_page_size,
    details,
    page,
    select,
    summary,
)
from sidecar.naming import ModelRef

log = structlog.get_logger("sidecar.mcp")

# A tool call is a few hundred bytes of JSON; the SDK's own bound is 4 MiB.
MCP_BODY_LIMIT = 64 * 1024

READ_ONLY = ToolAnnotations(readOnlyHint=True, openWorldHint=False)


class McpOrOpencode:
    """The `/mcp` route: MCP requests to our server, the rest to opencode's own `GET /mcp` (its MCP
    servers' status) and `POST /mcp` (add one) through the pass-through. RequireKey asks the same
    question before the internal token may pass, so the token never reaches opencode this way."""

    def __init__(self, mcp: ASGIApp, opencode: ASGIApp) -> None:
        self.mcp = mcp
        self.opencode = opencode

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await (self.mcp if is_mcp_request(scope) else self.opencode)(scope, receive, send)


class ModelTools:
    """The tools' answers, from what /v1/models serves and the resolver behind /v1/models/resolve."""

    def __init__(self, models: CatalogOwner, resolver: ModelResolver) -> None:
        self._models = models
        self._resolver = resolver

    def list_models(self, query: ModelQuery, *, cursor: str | None, limit: int | None) -> dict[str, Any]:
        try:
            size = check_page_size(limit)
            chosen = select(self._models.catalog, self._models.ref_of, query)
            items, next_cursor = page(chosen, cursor=cursor, limit=size)
        except QueryError as exc:
            log.info("mcp.tool_refused", tool="list_models", reason=str(exc))
            raise ToolError(str(exc)) from None
        log.debug("mcp.tool_called", tool="list_models", matched=len(chosen), given=len(items))
        return {
            "models": [summary(model, ref) for model, ref in items],
            "matched": len(chosen),
            "next_cursor": next_cursor,
        }

    def get_model(self, model: str) -> dict[str, Any]:
        catalog = self._models.catalog
        record = catalog.get(model)
        ref = self._models.ref_of(model) if record is not None else None
        if record is None or ref is None:
            # `provider/model`, as opencode names it, for a model /v1/models lists by its bare id.
            provider, _, model_id = model.partition("/")
            for listed in catalog:
                candidate = self._models.ref_of(listed.id)
                if candidate == ModelRef(provider, model_id):
                    record, ref = listed, candidate
                    break
        if record is None or ref is None:
            log.info("mcp.tool_refused", tool="get_model", reason="not listed")
            raise ToolError(f"model {model!r} is not listed by this sidecar; list_models shows what is")
        log.debug("mcp.tool_called", tool="get_model", model=str(ref))
        return details(record, ref)

    async def resolve_model(self, model: str, directory: str | None) -> dict[str, Any]:
        try:
            resolution = await self._resolver.resolve(model, directory)
        except HttpError as exc:
            log.info("mcp.tool_refused", tool="resolve_model", status=exc.status, reason=exc.message)
            raise ToolError(exc.message) from None
        log.info("mcp.tool_called", tool="resolve_model", model=str(resolution.ref))
        answer = resolution.as_json()
        return {"model": str(resolution.ref), "id": answer.get("id"), "opencode": answer.get("opencode")}


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


class McpEndpoint:
    """The ASGI app the `/mcp` route hands MCP requests to, and the task group its session manager
    needs: `running()` is entered around the API server by the supervisor (uvicorn runs the app
    with lifespan="off", so no lifespan event would start it)."""

    def __init__(self, tools: ModelTools) -> None:
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
        self._manager = server.session_manager
        self._running = False

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with self._manager.run():
            self._running = True
            try:
                yield
            finally:
                self._running = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._running:
            # Stopping: uvicorn's connections outlive the task group, and opencode, stopped after
            # the API, still calls /mcp meanwhile (seen: two requests after SIGTERM, each a 500
            # and a traceback in the log before this answer).
            await error_response(503, "the sidecar is stopping")(scope, receive, send)
            return
        await self._manager.handle_request(scope, receive, send)
