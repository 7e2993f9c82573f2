"""What the API asks of the rest of the sidecar, each part by the little it needs.

The supervisor builds a SidecarView from its reconciler, resolver, pass-through and reports; tests
build one from stand-ins. Every part is required: a route never meets a collaborator that is not
there. The HTTP package imports none of those modules (settings.py imports from this package), so
it names them here as Protocols.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from sidecar.catalog import Catalog
from sidecar.http.announce import InstanceDirectories
from sidecar.http.catalogs import CatalogFeeds, NoCatalogs
from sidecar.naming import ModelRef


class Resolved(Protocol):
    """A model made usable (sidecar.resolve.Resolution)."""

    @property
    def ref(self) -> ModelRef: ...

    def as_json(self) -> dict[str, Any]: ...


class ModelResolver(Protocol):
    """Normalises a model name, registers it if need be, and waits until opencode can use it in the
    directory (sidecar.resolve.Resolver): asked by `POST /v1/models/resolve` and the pass-through."""

    async def resolve(self, requested: Any, directory: str | None = None) -> Resolved: ...


class PromptGate(Protocol):
    """Holds a prompt start while its directory is being reloaded (sidecar.opencode.gate.ReloadGate):
    waits (bounded), then counts the start until the returned function is called and opencode has
    reported the session."""

    async def enter_prompt(self, directory: str | None, session: str = "") -> Callable[[], None]: ...


class CatalogOwner(Protocol):
    """The catalog served now, and removal of a registered model (sidecar.reconcile.Reconciler)."""

    @property
    def catalog(self) -> Catalog: ...

    def ref_of(self, listed_id: str) -> ModelRef | None:
        """The opencode model (gateway and its model id) behind an id of the catalog."""

    async def unregister(self, listed_id: str) -> None: ...


class ModelStatuses(Protocol):
    """What `/v1/models` adds to a listed model that is failing (sidecar.failing.FailingModels,
    through the supervisor), and a number that changes whenever any of that does."""

    @property
    def version(self) -> int: ...

    def of(self, listed_id: str) -> dict[str, Any] | None: ...


class NoStatuses:
    """Every model as listed, nothing added."""

    version = 0

    def of(self, listed_id: str) -> dict[str, Any] | None:
        return None


class Forwarder(Protocol):
    """Answers every request that is not one of the sidecar's own routes (passthrough.Passthrough)."""

    async def forward(self, request: Request) -> Response: ...


@dataclass(frozen=True, kw_only=True)
class GatewayUpstream:
    """One gateway as the `/gateway/<id>/` route reaches it (built from sidecar.gateway.config.Gateway)."""

    id: str
    api_base: str  # ends in /v1
    api_key: SecretStr | None = field(default=None, repr=False)
    # The key goes in `x-api-key` (the Anthropic Messages API), else in `Authorization: Bearer`,
    # and for Portkey in `x-portkey-api-key` too.
    anthropic: bool = False
    portkey: bool = False
    # The configured headers, their `{env:NAME}` resolved: sent by the sidecar, never by opencode.
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    # The key and the header values taken from the environment: blanked from error answers.
    secrets: tuple[str, ...] = field(default=(), repr=False)


class TrafficRecorder(Protocol):
    """Told of each request forwarded to a gateway once it is over (sidecar.traffic.ModelTraffic).
    `status` None: no answer (the gateway unreachable, silent past the idle timeout, or the client
    gone first); `first_byte` in seconds since the request was sent on; `error` a short reason,
    secrets blanked, for a status of 400 or more or a failure."""

    def request_done(
        self,
        gateway: str,
        model: str,
        *,
        status: int | None,
        first_byte: float | None,
        streamed_bytes: int,
        error: str | None,
        cancelled: bool = False,
    ) -> None: ...


class GatewayRoute(Protocol):
    """The `/gateway/<id>/...` route, as a plain ASGI app so that both bodies stream
    (gateway_proxy.GatewayProxy), and the internal token it alone accepts."""

    @property
    def token(self) -> str: ...

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None: ...


class Refresher(Protocol):
    """POST /v1/models/refresh: poll now (every gateway, or one) and report once applied."""

    async def refresh(self, gateway_id: str | None) -> dict[str, Any]: ...


class McpRoute(Protocol):
    """The MCP server's transport at `/mcp` (mcp.McpEndpoint), a plain ASGI app."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None: ...


@dataclass(frozen=True, kw_only=True)
class SidecarView:
    models: CatalogOwner
    resolver: ModelResolver
    passthrough: Forwarder
    gateways: GatewayRoute
    refresher: Refresher
    mcp: McpRoute
    # Where opencode's instances announce their directories (announce.py).
    instances: InstanceDirectories
    # Every WebSocket upgrade that passed the guards (websocket_passthrough.py: opencode's terminals).
    websockets: ASGIApp
    # The supervisor's reports: readiness for /readyz, the whole state for /v1/status, whether
    # opencode's config is written yet for /startupz, and the Prometheus text for /metrics.
    readiness: Callable[[], dict[str, Any]]
    status: Callable[[], dict[str, Any]]
    started: Callable[[], bool]
    metrics: Callable[[], bytes]
    # SIDECAR_API_KEY; None serves without a key (on loopback only, which settings.py checks).
    api_key: str | None = None
    statuses: ModelStatuses = field(default_factory=NoStatuses)
    # Each gateway's list for the sidecars that follow this one (`/v1/catalogs`, fleet mode).
    catalogs: CatalogFeeds = field(default_factory=NoCatalogs)
