"""The files the reconciler keeps in the state directory: opencode's config, each gateway's last
good list and the models registered on request. Read back at start, so that a gateway down then
loses nothing; each written whole (a rename) and only when its text changed.

Claiming the directory itself (its lock and modes) is `statedir`'s job.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import anyio
import structlog

from sidecar.catalog import MAX_MODEL_ID_LENGTH, Catalog, ModelInfo, invalid_model_id_reason
from sidecar.opencode.config import write_atomically

log = structlog.get_logger("sidecar.statefiles")


class StatePaths:
    def __init__(self, state_dir: Path, config: Path | None = None) -> None:
        self.state_dir = state_dir
        # In attach mode, the shared path that opencode reads through its OPENCODE_CONFIG.
        self.config = config or state_dir / "opencode.json"
        self.registered = state_dir / "registered.json"  # models registered on request
        self.legacy_catalog = state_dir / "catalog.json"  # one gateway's list, before several

    def catalog(self, gateway_id: str) -> Path:
        """A gateway's last good list."""
        return self.state_dir / f"catalog-{gateway_id}.json"


@dataclass(frozen=True)
class SavedCatalog:
    catalog: Catalog  # empty when nothing usable was saved
    path: Path
    saved_at: float | None  # the file's mtime


# What a write did to opencode's config: a new text, the same text as before, or nothing (a write
# failed, and every file keeps its last whole version).
WriteOutcome = Literal["written", "unchanged", "failed"]


class StateFiles:
    """Reads the saved state once at start; `write` writes the files whose text changed."""

    def __init__(self, paths: StatePaths, write: Callable[[Path, str], None] = write_atomically) -> None:
        self.paths = paths
        self._write = write
        self._written: dict[Path, str] = {}
        self.config_text: str | None = None  # the config this run wrote
        # A write that failed (a read-only or full state dir) is tried again by the next one.
        self.failed = False
        self.saved = False  # a write went through this run
        self.last_error: str | None = None
        self.writes: Counter[str] = Counter()  # config writes by outcome, for /metrics

    def saved_catalog(self, gateway_id: str, *, first_gateway: bool) -> SavedCatalog:
        """The list saved by an earlier run, without the ids opencode can't be given."""
        path = self.paths.catalog(gateway_id)
        if not path.exists() and first_gateway:
            path = self.paths.legacy_catalog
        catalog = without_unusable_ids(load_catalog(path), path, gateway_id)
        try:
            saved_at: float | None = path.stat().st_mtime
        except OSError:
            saved_at = None
        return SavedCatalog(catalog, path, saved_at)

    def saved_registered(self, first_gateway: str, gateway_ids: Collection[str]) -> dict[str, dict[str, ModelInfo]]:
        """The models registered by an earlier run, per gateway still configured."""
        path = self.paths.registered
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("state.unreadable", path=str(path), error=type(exc).__name__)
            return {}
        # Before several gateways the file was one list, for the only gateway.
        by_gateway = {first_gateway: saved} if isinstance(saved, list) else saved
        registered: dict[str, dict[str, ModelInfo]] = {}
        if not isinstance(by_gateway, dict):
            return registered
        for gateway_id, models in by_gateway.items():
            if gateway_id not in gateway_ids or not isinstance(models, list):
                continue
            try:
                catalog = Catalog(ModelInfo.model_validate(item) for item in models)
            except ValueError:
                log.warning("state.unreadable", path=str(path), gateway=gateway_id)
                continue
            catalog = without_unusable_ids(catalog, path, gateway_id)
            registered[gateway_id] = {m.id: m.model_copy(update={"registered": True}) for m in catalog}
        return registered

    async def write(
        self,
        catalogs: Mapping[str, Catalog],
        registered: Mapping[str, Mapping[str, ModelInfo]],
        config_text: str | None,
    ) -> WriteOutcome:
        """Write the gateways' lists, the registry and opencode's config, each only if its text
        changed; `config_text` None (catalog-only mode) writes no config, and says "unchanged"."""
        state = {self.paths.catalog(gateway_id): catalog.to_json() for gateway_id, catalog in catalogs.items()}
        state[self.paths.registered] = json.dumps(
            {gid: json.loads(Catalog(models.values()).to_json()) for gid, models in registered.items() if models},
            indent=1,
        )
        changed = {path: content for path, content in state.items() if self._written.get(path) != content}
        try:
            if changed:
                # The saved lists can change while the config stays the same (a registered model
                # that the gateway now lists).
                await anyio.to_thread.run_sync(self._write_files, changed)
                self._written.update(changed)
            if config_text is not None and config_text != self.config_text:
                await anyio.to_thread.run_sync(self._write, self.paths.config, config_text)
        except OSError as exc:
            # The old files stay whole (each write is a rename); opencode and /v1/models keep
            # the last list that was written, and the next poll tries again.
            self.failed = True
            self.writes["failed"] += 1
            error = exc.strerror or type(exc).__name__
            self.last_error = f"cannot write to {self.paths.state_dir}: {error}"
            log.error("state.write_failed", path=str(self.paths.state_dir), error=error)
            return "failed"
        if self.failed:
            log.info("state.write_recovered", path=str(self.paths.state_dir))
        self.failed, self.last_error = False, None
        self.saved = True
        if config_text is None or config_text == self.config_text:
            return "unchanged"
        self.writes["written"] += 1
        self.config_text = config_text
        return "written"

    def _write_files(self, files: dict[Path, str]) -> None:
        for path, content in files.items():
            self._write(path, content)


def without_unusable_ids(catalog: Catalog, path: Path, gateway_id: str) -> Catalog:
    """The saved models opencode can be given: an older version saved ids (`constructor`, ...)
    that make opencode answer 500. The file is rewritten without them at the first publish."""
    unusable = {model.id: reason for model in catalog if (reason := invalid_model_id_reason(model.id)) is not None}
    if not unusable:
        return catalog
    for model_id, reason in unusable.items():
        # Ids this sidecar accepted once (and logged at registration); a hand-edited one is cut short.
        shown = model_id[:MAX_MODEL_ID_LENGTH]
        log.warning("state.model_dropped", path=str(path), gateway=gateway_id, model=shown, reason=f"id {reason}")
    return Catalog(model for model in catalog if model.id not in unusable)


def load_catalog(path: Path) -> Catalog:
    try:
        return Catalog.from_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Catalog()
    except (OSError, ValueError) as exc:
        log.warning("state.unreadable", path=str(path), error=type(exc).__name__)
        return Catalog()
