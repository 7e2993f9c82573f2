"""The sync loop: each gateway's last good catalog and the models registered for it, rendered and
written as opencode's config, and the loops that keep them in step.

Beside it: when each gateway is asked (`poll_loops`), its answers taken in and served on to
followers (`intake`), models registered on request (`registrations`), one gateway's record and
guards (`gateway_state`), the files (`statefiles`), what `/v1/models` lists (`public_view`), and
room in a full registry (`admission`).
"""

from __future__ import annotations

import time
from functools import partial
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

import anyio
import structlog

from sidecar.admission import Admission
from sidecar.catalog import Catalog, ModelInfo
from sidecar.gateway_state import GatewayState, polls_ok
from sidecar.intake import CatalogSource, Intake
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
from sidecar.poll_loops import LongPolledSource, follow_forever, poll_forever
from sidecar.polls import PollResult
from sidecar.public_view import PublicView, provider_catalog
from sidecar.registrations import Registrations
from sidecar.registry import Clock, NoSessions, Registry, SessionModels
from sidecar.settings import Settings
from sidecar.statefiles import StateFiles, StatePaths

log = structlog.get_logger("sidecar.reconcile")


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
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self._settings = settings
        self._clock, self._sleep = clock, sleep
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
        self._lock = anyio.Lock()
        admission = Admission(self.registry, sessions, clock, self._default_models)
        self._registrations = Registrations(
            self.registry, admission, self._lock, self._publish, model=self.model, ref_of=self.ref_of
        )
        self._intake = Intake(
            settings, sources, self.gateways, self.registry, self._lock, self._publish,
            written=lambda: self.config_on_disk and not self._files.failed,
        )
        # For /metrics: polls by gateway and outcome, config writes by result.
        self.polls = self._intake.polls
        self.writes = self._files.writes
        # Each gateway's good list as `/v1/catalogs` serves it to the sidecars following this one.
        self.served = self._intake.served
        self._wake = anyio.Event()
        self._base_dirty = False
        self._view = PublicView(self._provider_catalogs(), self.default_provider)

    # --- what the API and the resolver read ---------------------------------------------------

    @property
    def config_on_disk(self) -> bool:
        """This run has written opencode's config (what a pod waits for before starting opencode);
        in catalog-only mode, which writes none, its saved lists."""
        if self._settings.catalog_only:
            return self._files.saved
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
    def owners(self) -> Mapping[str, str]:
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
        return await self._intake.refresh(gateway_id)

    # --- the registry (sidecar/registrations.py) ---------------------------------------------

    def known(self, ref: ModelRef) -> ModelInfo | None:
        return self._registrations.known(ref)

    def note_used(self, ref: ModelRef) -> None:
        self._registrations.note_used(ref)

    async def register(self, ref: ModelRef) -> ModelInfo:
        return await self._registrations.register(ref)

    async def unregister(self, listed_id: str) -> None:
        await self._registrations.unregister(listed_id)

    def is_registered(self, ref: ModelRef) -> bool:
        return self._registrations.is_registered(ref)

    async def unregister_ref(self, ref: ModelRef) -> bool:
        return await self._registrations.unregister_ref(ref)

    def _default_models(self) -> Iterable[object]:
        """The models a session that names none uses: never evicted."""
        return (self._settings.default_model_ref(), self.base_config.get("model"), self.base_config.get("small_model"))

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
        catalogs = {gateway_id: state.catalog for gateway_id, state in self.gateways.items()}
        if self._settings.catalog_only:
            # No opencode: the saved lists alone, and no config rendered (at 10,000 models the
            # render was a third of a poll's cost).
            if await self._files.write(catalogs, self.registered, None) != "failed":
                self._view = PublicView(self._provider_catalogs(), self.default_provider)
            return
        config = self.render()
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
        """Poll each gateway at its own interval (those in `poll_now` at once), or follow its hub
        (fleet mode); re-render at once when the operator's config changes."""
        async with anyio.create_task_group() as group:
            for gateway in self._settings.gateways:
                first = 0.0 if gateway.id in poll_now else None
                source = self._sources[gateway.id]
                if isinstance(source, LongPolledSource):
                    take = partial(self._intake.take_in_turn, gateway.id)
                    group.start_soon(follow_forever, source, gateway.poll_interval, take, self._clock, self._sleep)
                else:
                    group.start_soon(poll_forever, partial(self.poll_once, gateway.id), gateway.poll_interval, first)
            while True:
                await self._wake.wait()
                self._wake = anyio.Event()
                if self._base_dirty:
                    self._base_dirty = False
                    if self.reload_base_config():
                        log.info("base_config.changed", path=str(self._settings.base_config))
                        await self.publish()
