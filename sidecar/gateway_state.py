"""What the sidecar knows of one gateway: its last good list, how its polls went, and the two
guards a new list passes (SIDECAR_MAX_MODELS and the shrink guard). The reconciler keeps one per
gateway and decides when a list is written; this module keeps the record and says what happened."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import structlog

from sidecar.catalog import Catalog, cap
from sidecar.shrink import shrink_verdict
from sidecar.statefiles import SavedCatalog

log = structlog.get_logger("sidecar.gateway_state")

# What an operator whose gateway lists more than SIDECAR_MAX_MODELS can do about it.
CAP_HINT = (
    "opencode is given the newest models, in the gateway's order; choose which with this gateway's include/exclude "
    "globs in SIDECAR_CONFIG, or raise SIDECAR_MAX_MODELS"
)


def within_cap(catalog: Catalog, limit: int) -> Catalog:
    """At most `limit` (SIDECAR_MAX_MODELS) models. The gateway client's lists come capped already,
    in the gateway's order, while they are read; this holds any other (a saved list) to the same
    bound, in the catalog's order."""
    return catalog if len(catalog) <= limit else cap(catalog, limit, listed=catalog.listed)


def polls_ok(states: Iterable[GatewayState]) -> bool | None:
    """False when any gateway's last poll failed, None while one has not been polled yet."""
    outcomes = [state.last_poll_ok for state in states]
    if any(ok is False for ok in outcomes):
        return False
    return True if all(ok for ok in outcomes) else None


@dataclass
class GatewayState:
    catalog: Catalog  # the last good list
    # When that list was read: this run's last good poll, or the saved file's time.
    catalog_time: float | None = None
    restored: bool = False  # the list is the one saved by an earlier run
    last_poll_ok: bool | None = None
    last_error: str | None = None
    last_success: float | None = None  # unix time
    # The shrink guard: consecutive polls whose list lost too many models, and the last such list.
    shrink_seen: int = 0
    shrink_models: int | None = None
    # The listed count last reported as over SIDECAR_MAX_MODELS: said again only when it changes.
    capped_listed: int | None = None

    @classmethod
    def restore(cls, gateway_id: str, saved: SavedCatalog, max_models: int) -> GatewayState:
        """Start from the list saved by an earlier run, so that a gateway down at start loses nothing."""
        catalog = within_cap(saved.catalog, max_models)
        if not len(catalog):
            return cls(catalog)
        age = None if saved.saved_at is None else round(time.time() - saved.saved_at, 1)
        log.info("catalog.restored", gateway=gateway_id, models=len(catalog), path=str(saved.path), age=age)
        state = cls(catalog, catalog_time=saved.saved_at, restored=True)
        state.note_cap(gateway_id, catalog, max_models)
        return state

    def report(self, now: float, poll_interval: float) -> dict[str, Any]:
        age = None if self.catalog_time is None else round(max(0.0, now - self.catalog_time), 3)
        return {
            "models": len(self.catalog),
            "catalog_age": age,
            "restored": self.restored,
            "stale": self.is_stale(now, poll_interval),
            "last_poll_ok": self.last_poll_ok,
            "last_error": self.last_error,
            "last_success": self.last_success,
            "shrink_guard": None
            if not self.shrink_seen
            else {"held_polls": self.shrink_seen, "listed_models": self.shrink_models},
            # SIDECAR_MAX_MODELS left models out: how many the gateway listed, how many opencode has.
            "capped": None
            if not self.catalog.capped
            else {"listed_models": self.catalog.listed, "kept_models": len(self.catalog)},
        }

    def is_stale(self, now: float, poll_interval: float) -> bool:
        """Not confirmed by this run, or not for three poll intervals."""
        if self.last_success is None:
            return True
        return now - self.last_success > 3 * poll_interval + 30

    def held_by_shrink_guard(self, gateway_id: str, catalog: Catalog, *, threshold: float, confirmations: int) -> bool:
        """Whether `catalog`, just listed, waits for more polls before it replaces the last good list."""
        if catalog is self.catalog:
            # The gateway answered as before (GatewayClient gives back the same catalog): nothing
            # lost, and no per-model work on the ids of 10,000 models every poll.
            self.shrink_seen, self.shrink_models = 0, None
            return False
        verdict = shrink_verdict(
            self.catalog.ids, catalog.ids, self.shrink_seen, threshold=threshold, confirmations=confirmations
        )
        self.shrink_seen, self.shrink_models = verdict.seen, len(catalog) if verdict.hold else None
        if verdict.reason == "held":
            log.warning("gateway.shrink_held", gateway=gateway_id, models=len(catalog),
                        kept_models=len(self.catalog), seen=verdict.seen, needed=confirmations)
        elif verdict.reason == "confirmed":
            log.warning("gateway.shrink_applied", gateway=gateway_id, models=len(catalog), was=len(self.catalog))
        return verdict.hold

    def note_cap(self, gateway_id: str, catalog: Catalog, max_models: int) -> None:
        """Warn that opencode gets only part of a gateway's list: once per change of its size, not every poll."""
        listed = catalog.listed if catalog.capped else None
        if listed == self.capped_listed:
            return
        self.capped_listed = listed
        if listed is None:
            log.info("gateway.models_uncapped", gateway=gateway_id, models=len(catalog))
            return
        log.warning("gateway.models_capped", gateway=gateway_id, listed=listed, kept=len(catalog),
                    max_models=max_models, hint=CAP_HINT)
