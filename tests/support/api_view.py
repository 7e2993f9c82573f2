"""A SidecarView for the API in process: the parts a test names, stand-ins for the rest."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from sidecar.catalog import Catalog, ModelInfo
from sidecar.errors import HttpError
from starlette.types import ASGIApp, Receive, Scope, Send

from sidecar.http.announce import InstanceDirectories
from sidecar.http.catalogs import CatalogFeeds, NoCatalogs
from sidecar.http.errors import error_response
from sidecar.http.view import CatalogOwner, Forwarder, GatewayRoute, McpRoute, ModelResolver, Refresher, SidecarView
from sidecar.naming import ModelRef
from sidecar.resolve import Resolution


class CatalogOf:
    """Serves whatever catalog `current` returns at the time; removes nothing."""

    def __init__(self, current: Callable[[], Catalog]) -> None:
        self._current = current

    @property
    def catalog(self) -> Catalog:
        return self._current()

    def ref_of(self, listed_id: str) -> ModelRef | None:
        return ModelRef("litellm", listed_id) if listed_id in self._current() else None

    async def unregister(self, listed_id: str) -> None:
        pass


class ResolveWith:
    """A resolver made of a function from the name asked for to opencode's name for it."""

    def __init__(self, resolve: Callable[[Any, str | None], Awaitable[ModelRef]]) -> None:
        self._resolve = resolve

    async def resolve(self, requested: Any, directory: str | None = None) -> Resolution:
        ref = await self._resolve(requested, directory)
        return Resolution(ModelInfo(id=ref.model_id, display_name=ref.model_id), ref)


class NoResolver:
    async def resolve(self, requested: Any, directory: str | None = None) -> Resolution:
        raise AssertionError("this test gave the API no resolver")


class NoOpencode:
    """No opencode behind the pass-through: every path not the sidecar's own is a 404."""

    async def forward(self, request: Request) -> Response:
        raise HttpError(404, f"no route for {request.method} {request.url.path}")


# The internal token of the stand-in gateway route: tests that send it on other routes use it.
TEST_GATEWAY_TOKEN = "test-gateway-token-0123456789abcdef0123456789"


class Announced:
    """Keeps the directories announced, for a test to read."""

    def __init__(self) -> None:
        self.announced: list[str] = []

    def note_directory(self, directory: str) -> None:
        self.announced.append(directory)


class NoWebSockets:
    """No opencode behind the upgrades: each is refused as the sidecar refuses one (404)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await error_response(404, "this test gave the API no WebSocket pass-through")(scope, receive, send)


class NoGateways:
    """No gateway behind the gateway route: every request that passes the token guard is a 404."""

    token = TEST_GATEWAY_TOKEN

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await error_response(404, "this test gave the API no gateway")(scope, receive, send)


class Refreshes:
    """Records each refresh asked for, and answers with `answer` (or raises it)."""

    def __init__(self, answer: dict[str, Any] | Exception | None = None) -> None:
        self.asked: list[str | None] = []
        self.answer = answer if answer is not None else {"gateways": [], "applied": True, "waiting_for_idle": []}

    async def refresh(self, gateway_id: str | None) -> dict[str, Any]:
        self.asked.append(gateway_id)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer
class NoMcp:
    """No MCP server behind /mcp: every MCP request that passes the guards is a 404."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await error_response(404, "this test gave the API no MCP server")(scope, receive, send)


def view_of(
    catalog: Callable[[], Catalog] = Catalog,
    readiness: Callable[[], dict[str, Any]] = lambda: {"ready": True},
    *,
    models: CatalogOwner | None = None,
    resolver: ModelResolver | None = None,
    passthrough: Forwarder | None = None,
    gateways: GatewayRoute | None = None,
    refresher: Refresher | None = None,
    mcp: McpRoute | None = None,
    instances: InstanceDirectories | None = None,
    websockets: ASGIApp | None = None,
    status: Callable[[], dict[str, Any]] = dict,
    started: Callable[[], bool] = lambda: True,
    metrics: Callable[[], bytes] = bytes,
    api_key: str | None = None,
    catalogs: CatalogFeeds | None = None,
) -> SidecarView:
    return SidecarView(
        models=models or CatalogOf(catalog),
        resolver=resolver or NoResolver(),
        passthrough=passthrough or NoOpencode(),
        gateways=gateways or NoGateways(),
        refresher=refresher or Refreshes(),
        mcp=mcp or NoMcp(),
        instances=instances or Announced(),
        websockets=websockets or NoWebSockets(),
        readiness=readiness,
        status=status,
        started=started,
        metrics=metrics,
        api_key=api_key,
        catalogs=catalogs or NoCatalogs(),
    )
