"""The sync loop: poll the gateway, keep the last good catalog, render and write opencode's config."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import anyio
import structlog

from sidecar.catalog import Catalog
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
        self.catalog = state_dir / "catalog.json"


class Reconciler:
    """The one writer of opencode's config file."""

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
        self.catalog = self._load_saved_catalog()
        self._written_text: str | None = None
        self.writes = 0
        self.polls = 0
        self.last_poll_ok: bool | None = None
        self._wake = anyio.Event()
        self._base_dirty = False

    def _load_saved_catalog(self) -> Catalog:
        """The last good list from an earlier run, so a gateway that is down at start loses nothing."""
        try:
            return Catalog.from_json(self.paths.catalog.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return Catalog()
        except (OSError, ValueError) as exc:
            log.warning("catalog.saved_unreadable", path=str(self.paths.catalog), error=type(exc).__name__)
            return Catalog()

    async def poll_once(self) -> bool:
        """One poll; True when the catalog changed. Any failure keeps the last good catalog."""
        self.polls += 1
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
        if catalog.same_models(self.catalog) and self._written_text is not None:
            log.debug("gateway.unchanged", models=len(catalog))
            return False
        added = len(set(catalog.ids) - set(self.catalog.ids))
        removed = len(set(self.catalog.ids) - set(catalog.ids))
        log.info("catalog.changed", models=len(catalog), added=added, removed=removed)
        await self.publish(catalog)
        return True

    def reload_base_config(self) -> bool:
        try:
            base = load_base_config(self._settings.base_config)
        except BaseConfigError as exc:
            log.warning("base_config.invalid", error=str(exc))
            return False
        changed = base != self.base_config
        self.base_config = base
        return changed

    async def publish(self, catalog: Catalog | None = None) -> None:
        """Render the config; write it and tell the applier only when the text changed.

        The new catalog is served only once its config is written and the applier told, so
        `/v1/models` never lists a model that `/readyz` would call applied before it is.
        """
        catalog = self.catalog if catalog is None else catalog
        config = render_config(catalog, self._settings, self.base_config)
        text = dump_config(config) + "\n"
        if text != self._written_text:
            await anyio.to_thread.run_sync(self._write, text, catalog)
            self._written_text = text
            self.writes += 1
            log.info("opencode.config_written", path=str(self.paths.config), models=len(catalog))
            self._listener.config_written(rendered_model_ids(config, self._settings.provider_id))
        self.catalog = catalog

    def _write(self, text: str, catalog: Catalog) -> None:
        write_atomically(self.paths.config, text)
        write_atomically(self.paths.catalog, catalog.to_json())

    def base_config_changed(self) -> None:
        """Called by the file watcher; the change is applied by `run()`, the one writer."""
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
