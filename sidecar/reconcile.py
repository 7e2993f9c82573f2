"""The sync loop: poll each gateway, keep its last good catalog, render and write opencode's config.

Beside it: one gateway's record and guards (`gateway_state`), the files (`statefiles`), what
`/v1/models` lists (`public_view`), and room in a full registry (`admission`).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

import anyio
import anyio.lowlevel
import structlog

from sidecar.admission import Admission
from sidecar.catalog import Catalog, ModelInfo
from sidecar.gateway.client import GatewayError
from sidecar.gateway_state import GatewayState, polls_ok, within_cap
from sidecar.matching import MatchIndex
from sidecar.naming import ModelRef
from sidecar.opencode.config import (
    BaseConfigError,
    dump_config,
    load_base_config,
    render_config,
    rendered_model_ids,
    write_atomically,
)
from sidecar.memory import release_free_memory
from sidecar.polls import PollGate, PollResult
from sidecar.public_view import PublicView, provider_catalog
from sidecar.registry import Clock, NoSessions, Registry, SessionModels
from sidecar.settings import Settings
from sidecar.statefiles import StateFiles, StatePaths

log = structlog.get_logger("sidecar.reconcile")


class CatalogSource(Protocol):
    async def fetch_catalog(self) -> Catalog: ...


class ConfigListener(Protocol):
    def config_written(self, expected: dict[str, set[str]]) -> None: ...


class Reconciler:
    """The one writer of opencode's config file and of the sidecar's saved state.

    Each gateway's models are its last good list plus the models registered for it because an
    agent asked for them; a registered model leaves that set once its gateway lists it.
    """

    def __init__(
        self,
        settings: Settings,
        sources: Mapping[str, CatalogSource],
        listener: ConfigListener,
        paths: StatePaths,
        base_config: dict[str, Any],
        *,
        write: Callable[[Path, str], None] = write_atomically,
        sessions: SessionModels = NoSessions(),
        clock: Clock = time.monotonic,
    ) -> None:
        self._settings = settings
        self._sources = sources
        self._listener = listener
        self.paths = paths
        self._files = StateFiles(paths, write)
        self.base_config = base_config
        self.default_provider = settings.default_provider
        self.gateways = {
            g.id: GatewayState.restore(
                g.id, self._files.saved_catalog(g.id, first_gateway=g.id == self.default_provider), settings.max_models
            )
            for g in settings.gateways
        }
        saved = self._files.saved_registered(self.default_provider, self.gateways)
        self.registry = Registry(saved, settings.max_registered, clock)
        # What the config on disk holds (or the write in flight), per gateway.
        self.registered = self.registry.models
        self._admission = Admission(self.registry, sessions, clock, self._default_models)
        # For /metrics: polls by gateway and outcome, config writes by result.
        self.polls: Counter[tuple[str, str]] = Counter()
        self.writes = self._files.writes
        self._lock = anyio.Lock()
        self._gate = PollGate(self._poll)
        self._wake = anyio.Event()
        self._base_dirty = False
        self._view = PublicView(self._provider_catalogs(), self.default_provider)

    # --- what the API and the resolver read ---------------------------------------------------

    @property
    def config_on_disk(self) -> bool:
        """This run has written opencode's config (what a pod waits for before starting opencode)."""
        return self._files.config_digest is not None

    @property
    def last_write_error(self) -> str | None:
        """Why the state dir took no write, until it takes one again."""
        return self._files.last_error

    @property
    def last_poll_ok(self) -> bool | None:
        """False when any gateway's last poll failed, None before the first poll."""
        return polls_ok(self.gateways.values())

    @property
    def catalog(self) -> Catalog:
        """What `/v1/models` lists."""
        return self._view.catalog

    @property
    def owners(self) -> dict[str, str]:
        """Bare model id -> the first gateway (in the operator's order) that has it."""
        return self._view.owners

    def ref_of(self, listed_id: str) -> ModelRef | None:
        """The opencode model behind an id of `/v1/models`."""
        return self._view.ref_of(listed_id)

    @property
    def names(self) -> MatchIndex:
        """What a requested name is matched against (sidecar/matching.py): every gateway's models."""
        return self._view.names

    def model(self, ref: ModelRef) -> ModelInfo | None:
        """The listed record of a gateway's model, as `/v1/models` shows it."""
        return self._view.model(ref)

    def provider_catalog(self, provider_id: str) -> Catalog:
        """A gateway's models as opencode gets them: its list and the models registered for it."""
        return provider_catalog(self.gateways[provider_id].catalog, self.registered.get(provider_id, {}))

    def _provider_catalogs(self) -> dict[str, Catalog]:
        """Every gateway's, in the operator's order."""
        return {gateway_id: self.provider_catalog(gateway_id) for gateway_id in self.gateways}

    # --- polling ------------------------------------------------------------------------------

    async def poll_all(self, gateway_ids: list[str] | None = None) -> None:
        async with anyio.create_task_group() as group:
            for gateway_id in self.gateways if gateway_ids is None else gateway_ids:
                group.start_soon(self.poll_once, gateway_id)

    async def poll_once(self, gateway_id: str | None = None) -> bool:
        """One poll of one gateway (the first by default); True when its list changed.
        Any failure keeps its last good list and touches no other gateway."""
        return (await self.refresh(gateway_id or self.default_provider)).changed

    async def refresh(self, gateway_id: str) -> PollResult:
        """A poll of `gateway_id` that starts after this call, shared with callers at the same time."""
        return await self._gate.poll(gateway_id)

    async def _poll(self, gateway_id: str) -> PollResult:
        state = self.gateways[gateway_id]
        try:
            catalog = await self._sources[gateway_id].fetch_catalog()
        except GatewayError as exc:
            self.polls[gateway_id, "failed"] += 1
            state.last_poll_ok, state.last_error = False, str(exc)
            log.warning("gateway.poll_failed", gateway=gateway_id, error=str(exc), kept_models=len(state.catalog))
            return PollResult(gateway_id, ok=False, models=len(state.catalog), error=str(exc))
        catalog = within_cap(catalog, self._settings.max_models)
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
        if catalog.same_models(state.catalog) and self.config_on_disk and not self._files.failed:
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
        # What reading, comparing and rendering the new list allocated is freed now (memory.py).
        release_free_memory()
        return PollResult(gateway_id, ok=True, changed=True, models=len(catalog), added=added, removed=removed)

    # --- the registry -------------------------------------------------------------------------

    def known(self, ref: ModelRef) -> ModelInfo | None:
        """The model as opencode has it, unless the next write evicts it (then it is registered again)."""
        return None if self.registry.leaving(ref) else self.model(ref)

    def note_used(self, ref: ModelRef) -> None:
        """A resolve asked for `ref`: the least recently used registered model is evicted first."""
        self.registry.touch(ref)

    async def register(self, ref: ModelRef) -> ModelInfo:
        """Add a model its gateway doesn't list. Registrations arriving while a write is in flight
        share the next one; at SIDECAR_MAX_REGISTERED the least recently used model that no session
        uses is evicted in that same write, and RegistryFull is raised when every one is in use."""
        known = self.known(ref)
        if known is not None:
            self.registry.touch(ref)
            return known
        model = ModelInfo(id=ref.model_id, display_name=ref.model_id, registered=True)
        await self._admission.admit(ref, model)
        await self._write_registry(self.registry.changes)
        return self.model(ref) or model

    def _default_models(self) -> Iterable[object]:
        """The models a session that names none uses: never evicted."""
        return (self._settings.default_model_ref(), self.base_config.get("model"), self.base_config.get("small_model"))

    async def _write_registry(self, changes: int) -> None:
        """Write the registry once it holds `changes`: a write already carrying them is waited for,
        and changes made while one is in flight share the next one (one write, one reload per
        directory, for any number of registrations arriving together)."""
        async with self._lock:
            if self.registry.written >= changes:
                return
            # Registrations made in this same turn of the loop join this write.
            await anyio.lowlevel.checkpoint()
            self.registry.written = self.registry.apply_pending()
            await self._publish()

    async def unregister(self, listed_id: str) -> None:
        ref = self.ref_of(listed_id)
        if ref is not None:
            await self.unregister_ref(ref)

    def is_registered(self, ref: ModelRef) -> bool:
        """Registered on request (not listed by its gateway), and written."""
        return ref.model_id in self.registered.get(ref.provider_id, {})

    async def unregister_ref(self, ref: ModelRef) -> bool:
        """Drop a registered model; whether it was one."""
        async with self._lock:
            if self.registered.get(ref.provider_id, {}).pop(ref.model_id, None) is None:
                return False
            log.info("registry.removed", gateway=ref.provider_id, model=ref.model_id)
            await self._publish()
            return True

    # --- the operator's config ----------------------------------------------------------------

    def reload_base_config(self) -> bool:
        try:
            base = load_base_config(self._settings.base_config)
        except BaseConfigError as exc:
            log.warning("base_config.invalid", error=str(exc))
            return False
        changed = base != self.base_config
        self.base_config = base
        return changed

    def base_config_changed(self) -> None:
        """Called by the file watcher; the change is applied by `run()`."""
        self._base_dirty = True
        self._wake.set()

    # --- writing ------------------------------------------------------------------------------

    def render(self) -> dict[str, Any]:
        return render_config(self._provider_catalogs(), self._settings, self.base_config)

    async def publish(self) -> None:
        async with self._lock:
            await self._publish()

    async def _publish(self) -> None:
        """Render the config; write it and tell the applier only when the text changed.

        The new catalog is served only once its config is written and the applier told, so
        `/v1/models` never lists a model that `/readyz` would call applied before it is.
        """
        config = self.render()
        catalogs = {gateway_id: state.catalog for gateway_id, state in self.gateways.items()}
        outcome = await self._files.write(catalogs, self.registered, dump_config(config) + "\n")
        if outcome == "failed":
            return
        if outcome == "written":
            expected = rendered_model_ids(config, list(self.gateways))
            models = sum(len(ids) for ids in expected.values())
            log.info("opencode.config_written", path=str(self.paths.config), models=models)
            self._listener.config_written(expected)
        self._view = PublicView(self._provider_catalogs(), self.default_provider)

    # --- the loops ----------------------------------------------------------------------------

    async def run(self, poll_now: frozenset[str] = frozenset()) -> None:
        """Poll each gateway at its own interval (those in `poll_now` at once); re-render at once
        when the operator's config changes."""
        async with anyio.create_task_group() as group:
            for gateway in self._settings.gateways:
                first = 0.0 if gateway.id in poll_now else None
                group.start_soon(self._poll_forever, gateway.id, gateway.poll_interval, first)
            while True:
                await self._wake.wait()
                self._wake = anyio.Event()
                if self._base_dirty:
                    self._base_dirty = False
                    if self.reload_base_config():
                        log.info("base_config.changed", path=str(self._settings.base_config))
                        await self.publish()

    async def _poll_forever(self, gateway_id: str, interval: float, first_delay: float | None = None) -> None:
        await anyio.sleep(interval if first_delay is None else first_delay)
        while True:
            await self.poll_once(gateway_id)
            await anyio.sleep(interval)
