"""A gateway's answers taken in: a poll's outcome (or its hub's long-poll's, fleet mode) applied to
its record (`gateway_state`): a failure keeps the last good list, a list passes the cap and the
shrink guard, and a changed one goes to the reconciler's write (`reconcile`); a good list is then
served on at `/v1/catalogs` (`served`) to the sidecars following this one. The polls of one
gateway take turns (`polls`); when they happen is `poll_loops`'.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Protocol

import anyio
import structlog

from sidecar.catalog import Catalog
from sidecar.gateway.client import GatewayError
from sidecar.gateway_state import GatewayState, within_cap
from sidecar.polls import PollGate, PollResult
from sidecar.registry import Registry
from sidecar.served import ServedCatalogs
from sidecar.settings import Settings

log = structlog.get_logger("sidecar.reconcile")


class CatalogSource(Protocol):
    async def fetch_catalog(self) -> Catalog: ...


class Intake:
    def __init__(
        self,
        settings: Settings,
        sources: Mapping[str, CatalogSource],
        gateways: dict[str, GatewayState],
        registry: Registry,
        lock: anyio.Lock,
        publish: Callable[[], Awaitable[None]],
        *,
        written: Callable[[], bool],
    ) -> None:
        self._settings = settings
        self._sources = sources
        self.gateways = gateways
        self.registry = registry
        # The reconciler's write lock, and its write made under it.
        self._lock, self._publish = lock, publish
        # Whether the config on disk is this run's and the last write took: else an unchanged list
        # is written again.
        self._written = written
        # For /metrics: polls by gateway and outcome.
        self.polls: Counter[tuple[str, str]] = Counter()
        self._gate = PollGate(self._poll_and_serve)
        # Each gateway's good list as `/v1/catalogs` serves it to the sidecars following this one.
        self.served = ServedCatalogs(self.gateways)
        for gateway_id in self.gateways:
            self.serve(gateway_id)

    async def refresh(self, gateway_id: str) -> PollResult:
        """A poll of `gateway_id` that starts after this call, shared with callers at the same time."""
        return await self._gate.poll(gateway_id)

    async def _poll_and_serve(self, gateway_id: str) -> PollResult:
        result = await self._poll(gateway_id)
        if result.ok:
            self.serve(gateway_id)
        return result

    async def take_in_turn(self, gateway_id: str, got: Catalog | GatewayError) -> PollResult:
        """A hub's answer applied in the gateway's turn (`PollGate.take`)."""
        return await self._gate.take(gateway_id, partial(self._take_and_serve, gateway_id, got))

    async def _take_and_serve(self, gateway_id: str, got: Catalog | GatewayError) -> PollResult:
        """A hub's answer applied, and served on to sidecars following this one (a chain of hubs)."""
        result = await self._take(gateway_id, got)
        if result.ok:
            self.serve(gateway_id)
        return result

    def serve(self, gateway_id: str) -> None:
        """Hand the gateway's good list to `/v1/catalogs` (its waiters woken when it changed): the
        list as held after the cap and the shrink guard, without the models registered on request."""
        state = self.gateways[gateway_id]
        if state.last_success is None and not state.restored:
            return  # no good list yet: served as 503
        # The gateway client's wildcard routes (LiteLLM's `openai/*`); a source without them has none.
        routes = getattr(self._sources.get(gateway_id), "routes", ())
        self.served.update(gateway_id, state.catalog, routes)

    async def _poll(self, gateway_id: str) -> PollResult:
        got: Catalog | GatewayError
        try:
            got = await self._sources[gateway_id].fetch_catalog()
        except GatewayError as exc:
            got = exc
        return await self._take(gateway_id, got)

    async def _take(self, gateway_id: str, got: Catalog | GatewayError) -> PollResult:
        """A poll's outcome applied: a failure keeps the last good list; a list passes the guards."""
        state = self.gateways[gateway_id]
        if isinstance(got, GatewayError):
            self.polls[gateway_id, "failed"] += 1
            state.last_poll_ok, state.last_error = False, str(got)
            log.warning("gateway.poll_failed", gateway=gateway_id, error=str(got), kept_models=len(state.catalog))
            return PollResult(gateway_id, ok=False, models=len(state.catalog), error=str(got))
        catalog = within_cap(got, self._settings.max_models)
        now = time.time()
        state.last_poll_ok, state.last_error, state.last_success = True, None, now
        unchanged = PollResult(gateway_id, ok=True, models=len(state.catalog))
        if not len(catalog):
            log.warning("gateway.list_empty", gateway=gateway_id, kept_models=len(state.catalog))
        settings = self._settings
        if state.held_by_shrink_guard(
            gateway_id, catalog, threshold=settings.shrink_threshold, confirmations=settings.shrink_confirmations
        ):
            self.polls[gateway_id, "held"] += 1
            return unchanged
        if not len(catalog) and not len(state.catalog):
            self.polls[gateway_id, "unchanged"] += 1
            return unchanged
        state.catalog_time, state.restored = now, False
        state.note_cap(gateway_id, catalog, settings.max_models)
        if catalog.same_models(state.catalog) and self._written():
            state.catalog = catalog  # the same models; how many the gateway lists may have changed
            self.polls[gateway_id, "unchanged"] += 1
            log.debug("gateway.unchanged", gateway=gateway_id, models=len(catalog))
            return PollResult(gateway_id, ok=True, models=len(catalog))
        self.polls[gateway_id, "changed"] += 1
        added = tuple(sorted(set(catalog.ids) - set(state.catalog.ids)))
        removed = tuple(sorted(set(state.catalog.ids) - set(catalog.ids)))
        log.info("catalog.changed", gateway=gateway_id, models=len(catalog), added=len(added), removed=len(removed))
        async with self._lock:
            now_listed = self.registry.drop_listed(gateway_id, catalog)
            if now_listed:
                log.info("registry.now_listed", gateway=gateway_id, models=now_listed)
            state.catalog = catalog
            await self._publish()
        return PollResult(gateway_id, ok=True, changed=True, models=len(catalog), added=added, removed=removed)
