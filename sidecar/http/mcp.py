"""The MCP server at `/mcp`: the catalog as three tools an agent calls (list_models, get_model,
resolve_model), on the official `mcp` SDK's streamable HTTP transport, stateless (mcp_server.py,
imported at the first MCP request).

Which requests to `/mcp` are ours and which are opencode's own `GET /mcp` (its MCP status) and
`POST /mcp` (add a server) is mcp_route.is_mcp_request's to say; the route and the key guard both ask it.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import anyio.to_thread
import structlog
from starlette.types import ASGIApp, Receive, Scope, Send

from sidecar.errors import HttpError
from sidecar.http.errors import error_response
from sidecar.http.mcp_route import is_mcp_request
from sidecar.http.view import CatalogOwner, ModelResolver
from sidecar.model_query import (
    ModelQuery,
    QueryError,
    check_page_size,
    details,
    page,
    select,
    summary,
)
from sidecar.naming import ModelRef

if TYPE_CHECKING:
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

log = structlog.get_logger("sidecar.mcp")

# A tool call is a few hundred bytes of JSON; the SDK's own bound is 4 MiB.
MCP_BODY_LIMIT = 64 * 1024


def tool_error(message: str) -> Exception:
    """The SDK's ToolError: its message is what the agent reads. Raised only inside a tool call,
    when the SDK is loaded already."""
    from mcp.server.mcpserver.exceptions import ToolError

    return ToolError(message)


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
            raise tool_error(str(exc)) from None
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
            raise tool_error(f"model {model!r} is not listed by this sidecar; list_models shows what is")
        log.debug("mcp.tool_called", tool="get_model", model=str(ref))
        return details(record, ref)

    async def resolve_model(self, model: str, directory: str | None) -> dict[str, Any]:
        try:
            resolution = await self._resolver.resolve(model, directory)
        except HttpError as exc:
            log.info("mcp.tool_refused", tool="resolve_model", status=exc.status, reason=exc.message)
            raise tool_error(exc.message) from None
        log.info("mcp.tool_called", tool="resolve_model", model=str(resolution.ref))
        answer = resolution.as_json()
        return {"model": str(resolution.ref), "id": answer.get("id"), "opencode": answer.get("opencode")}


class McpEndpoint:
    """The ASGI app the `/mcp` route hands MCP requests to, and the task group its session manager
    needs: `running()` is entered around the API server by the supervisor (uvicorn runs the app
    with lifespan="off", so no lifespan event would start it). The SDK is imported, and its session
    manager started in that task group, at the first MCP request (mcp_server.py says why)."""

    def __init__(self, tools: ModelTools) -> None:
        self._tools = tools
        self._manager: StreamableHTTPSessionManager | None = None
        self._group: anyio.abc.TaskGroup | None = None
        self._starting: anyio.Lock | None = None

    @property
    def loaded(self) -> bool:
        """Whether the SDK's session manager is running (an MCP request has come)."""
        return self._manager is not None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with anyio.create_task_group() as group:
            self._group, self._starting = group, anyio.Lock()
            try:
                yield
            finally:
                self._group = None
                group.cancel_scope.cancel()

    async def _started(self, group: anyio.abc.TaskGroup) -> StreamableHTTPSessionManager:
        assert self._starting is not None
        async with self._starting:
            if self._manager is None:
                # On a worker thread: the import takes ~0.4 s of CPU, which would stall every
                # other request on the event loop meanwhile.
                module = await anyio.to_thread.run_sync(importlib.import_module, "sidecar.http.mcp_server")
                manager = module.session_manager(self._tools)
                await group.start(self._run, manager)
                self._manager = manager
                log.info("mcp_sdk.loaded")
        return self._manager

    @staticmethod
    async def _run(
        manager: StreamableHTTPSessionManager, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        async with manager.run():
            task_status.started()
            await anyio.sleep_forever()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        group = self._group
        if group is None:
            # Stopping: uvicorn's connections outlive the task group, and opencode, stopped after
            # the API, still calls /mcp meanwhile (seen: two requests after SIGTERM, each a 500
            # and a traceback in the log before this answer).
            await error_response(503, "the sidecar is stopping")(scope, receive, send)
            return
        manager = await self._started(group)
        await manager.handle_request(scope, receive, send)
