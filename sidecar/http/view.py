"""What the API asks of the rest of the sidecar, each part by the little it needs.

The supervisor builds a SidecarView from its reconciler, resolver, pass-through and reports; tests
build one from stand-ins. Every part is required: a route never meets a collaborator that is not
there. The HTTP package imports none of those modules (settings.py imports from this package), so
it names them here as Protocols.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response

from sidecar.catalog import Catalog
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


class CatalogOwner(Protocol):
    """The catalog served now, and removal of a registered model (sidecar.reconcile.Reconciler)."""

    @property
    def catalog(self) -> Catalog: ...

    async def unregister(self, listed_id: str) -> None: ...


class Forwarder(Protocol):
    """Answers every request that is not one of the sidecar's own routes (passthrough.Passthrough)."""

    async def forward(self, request: Request) -> Response: ...


@dataclass(frozen=True, kw_only=True)
class SidecarView:
    models: CatalogOwner
    resolver: ModelResolver
    passthrough: Forwarder
    # The supervisor's reports: readiness for /readyz, the whole state for /v1/status, whether
    # opencode's config is written yet for /startupz, and the Prometheus text for /metrics.
    readiness: Callable[[], dict[str, Any]]
    status: Callable[[], dict[str, Any]]
    started: Callable[[], bool]
    metrics: Callable[[], bytes]
    # SIDECAR_API_KEY; None serves without a key (on loopback only, which settings.py checks).
    api_key: str | None = None
