"""The sync loop: poll the gateway, keep the last good catalog, render and write opencode's config."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import anyio
import structlog

from sidecar.catalog import Catalog, ModelInfo
from sidecar.gateway.client import GatewayError
from sidecar.opencode.config import (
    BaseConfigError,
    dump_config,
    load_base_config,
    render_config,
    rendered_model_ids,
    write_atomically,
)
from sidecar.settings import Settings

log = structlog.get_logger("sidecar.reconcile")


class CatalogSource(Protocol):
    async def fetch_catalog(self) -> Catalog: ...


class ConfigListener(Protocol):
    def config_written(self, expected_model_ids: set[str]) -> None: ...


class StatePaths:
    def __init__(self, state_dir: Path) -> None:
        self.config = state_dir / "opencode.json"
        self.catalog = state_dir / "catalog.json"  # the gateway's last good list
        self.registered = state_dir / "registered.json"  # models registered on request


class Reconciler:
    """The one writer of opencode's config file and of the sidecar's saved state.

    The catalog it serves is the gateway's last good list plus the models registered because
    an agent asked for them; a registered model leaves that set once the gateway lists it.
    """

    def __init__(
        self,
        settings: Settings,
        source: CatalogSource,
        listener: ConfigListener,
        paths: StatePaths,
        base_config: dict[str, Any],
    ) -> None:
        self._settings = settings
        self._source = source
        self._listener = listener
        self.paths = paths
        self.base_config = base_config
        self.gateway_catalog = _load_catalog(paths.catalog)
        self.registered = {
            m.id: m.model_copy(update={"registered": True}) for m in _load_catalog(paths.registered)
        }
        self.catalog = self._combined(self.gateway_catalog)
        self._written_text: str | None = None
        self._written_state: tuple[str, str] | None = None
        self._lock = anyio.Lock()
        self.last_poll_ok: bool | None = None
        self._wake = anyio.Event()
        self._base_dirty = False

    def _combined(self, gateway: Catalog) -> Catalog:
        extra = [m for model_id, m in self.registered.items() if model_id not in gateway]
        return Catalog([*gateway, *extra])

    async def poll_once(self) -> bool:
        """One poll; True when the catalog changed. Any failure keeps the last good catalog."""
        try:
            catalog = await self._source.fetch_catalog()
        except GatewayError as exc:
            self.last_poll_ok = False
            log.warning("gateway.poll_failed", error=str(exc), kept_models=len(self.catalog))
            return False
        self.last_poll_ok = True
        if not len(catalog):
            log.warning("gateway.list_empty", kept_models=len(self.catalog))
            return False
        if catalog.same_models(self.gateway_catalog) and self._written_text is not None:
            log.debug("gateway.unchanged", models=len(catalog))
            return False
        added = len(set(catalog.ids) - set(self.gateway_catalog.ids))
        removed = len(set(self.gateway_catalog.ids) - set(catalog.ids))
        log.info("catalog.changed", models=len(catalog), added=added, removed=removed)
        async with self._lock:
            now_listed = [model_id for model_id in self.registered if model_id in catalog]
            for model_id in now_listed:
                del self.registered[model_id]
            if now_listed:
                log.info("registry.now_listed", models=now_listed)
            await self._publish(catalog)
        return True

    async def register(self, model_id: str) -> ModelInfo:
        """Add a model the gateway doesn't list; one write however many ask at once."""
        async with self._lock:
            known = self.catalog.get(model_id)
            if known is not None:
                return known
            model = ModelInfo(id=model_id, display_name=model_id, registered=True)
            self.registered[model_id] = model
            log.info("registry.registered", model=model_id)
            await self._publish(self.gateway_catalog)
            return model

    async def unregister(self, model_id: str) -> None:
        async with self._lock:
            if self.registered.pop(model_id, None) is not None:
                log.info("registry.removed", model=model_id)
                await self._publish(self.gateway_catalog)

    def reload_base_config(self) -> bool:
        try:
            base = load_base_config(self._settings.base_config)
        except BaseConfigError as exc:
            log.warning("base_config.invalid", error=str(exc))
            return False
        changed = base != self.base_config
        self.base_config = base
        return changed

    async def publish(self) -> None:
        async with self._lock:
            await self._publish(self.gateway_catalog)

    async def _publish(self, gateway: Catalog) -> None:
        """Render the config; write it and tell the applier only when the text changed.

        The new catalog is served only once its config is written and the applier told, so
        `/v1/models` never lists a model that `/readyz` would call applied before it is.
        """
        catalog = self._combined(gateway)
        config = render_config(catalog, self._settings, self.base_config)
        text = dump_config(config) + "\n"
        state = (gateway.to_json(), Catalog(self.registered.values()).to_json())
        if state != self._written_state:
            # The saved lists can change while the config stays the same (a registered model
            # that the gateway now lists).
            await anyio.to_thread.run_sync(self._write_state, state)
            self._written_state = state
        if text != self._written_text:
            await anyio.to_thread.run_sync(write_atomically, self.paths.config, text)
            self._written_text = text
            log.info("opencode.config_written", path=str(self.paths.config), models=len(catalog))
            self._listener.config_written(rendered_model_ids(config, self._settings.provider_id))
        self.gateway_catalog = gateway
        self.catalog = catalog

    def _write_state(self, state: tuple[str, str]) -> None:
        write_atomically(self.paths.catalog, state[0])
        write_atomically(self.paths.registered, state[1])

    def base_config_changed(self) -> None:
        """Called by the file watcher; the change is applied by `run()`."""
        self._base_dirty = True
        self._wake.set()

    async def run(self) -> None:
        """Poll every `poll_interval`; re-render at once when the operator's config changes."""
        while True:
            with anyio.move_on_after(self._settings.poll_interval) as scope:
                await self._wake.wait()
            self._wake = anyio.Event()
            if self._base_dirty:
                self._base_dirty = False
                if self.reload_base_config():
                    log.info("base_config.changed", path=str(self._settings.base_config))
                    await self.publish()
            if scope.cancelled_caught:
                await self.poll_once()


def _load_catalog(path: Path) -> Catalog:
    """A saved list from an earlier run, so that a gateway down at start loses nothing."""
    try:
        return Catalog.from_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Catalog()
    except (OSError, ValueError) as exc:
        log.warning("state.unreadable", path=str(path), error=type(exc).__name__)
        return Catalog()
