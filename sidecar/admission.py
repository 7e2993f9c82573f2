"""Admitting a registration into the registry: at SIDECAR_MAX_REGISTERED the least recently used
model that no session uses makes room, asked of opencode; RegistryFull when every one is in use.

The registry only stages the change: the reconciler's next write carries it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import anyio
import structlog

from sidecar.catalog import ModelInfo
from sidecar.naming import ModelRef
from sidecar.registry import (
    SESSIONS_TTL,
    Clock,
    Registry,
    RegistryFull,
    SessionModels,
    SessionsUnknown,
    least_recently_used,
)

log = structlog.get_logger("sidecar.admission")


class Admission:
    def __init__(
        self,
        registry: Registry,
        sessions: SessionModels,
        clock: Clock,
        defaults: Callable[[], Iterable[object]],
    ) -> None:
        self.registry = registry
        # Asked only when the registry is full; without an opencode to ask nothing is evicted.
        self._sessions = sessions
        self._clock = clock
        # The configured default models (`provider/model` strings, or anything else to skip):
        # what a session that names no model uses.
        self._defaults = defaults
        self._lock = anyio.Lock()  # one eviction decided at a time
        self._sessions_seen: tuple[float, set[ModelRef]] | None = None

    async def admit(self, ref: ModelRef, model: ModelInfo) -> None:
        """Stage `ref` for the next write, making room first when the registry is full."""
        if self.registry.holds(ref):
            self.registry.touch(ref)  # another caller's registration of it waits for its write
        elif len(self.registry) < self.registry.limit:
            self._add(ref, model)
        else:
            async with self._lock:
                if not self.registry.holds(ref):
                    await self._make_room()
                    self._add(ref, model)

    def _add(self, ref: ModelRef, model: ModelInfo) -> None:
        self.registry.add(ref, model)
        log.info("registry.registered", gateway=ref.provider_id, model=ref.model_id)

    async def _make_room(self) -> None:
        """Evict least recently used models that no session uses until one more fits."""
        limit = self.registry.limit
        while len(self.registry) >= limit:
            try:
                held = await self._models_in_use()
            except SessionsUnknown as exc:
                log.warning("registry.full", registered=len(self.registry), max_registered=limit, error=str(exc))
                raise RegistryFull(
                    502,
                    f"the registry is full (SIDECAR_MAX_REGISTERED={limit}) and opencode could not say which "
                    f"models its sessions use, so none was evicted: {exc}",
                ) from None
            victim = least_recently_used(self.registry.by_last_use(), held)
            if victim is None:
                log.warning("registry.full", registered=len(self.registry), max_registered=limit)
                raise RegistryFull(
                    409,
                    f"the registry is full: SIDECAR_MAX_REGISTERED={limit} models are registered and every one "
                    f"is the model of a session (or was asked for in the last few seconds); end or move a "
                    f"session to another model, remove a registered model, or raise SIDECAR_MAX_REGISTERED",
                )
            self.registry.evict(victim)
            log.info("registry.evicted", gateway=victim.provider_id, model=victim.model_id,
                     reason="limit", max_registered=limit)

    async def _models_in_use(self) -> set[ModelRef]:
        """The models sessions use or may be about to use: never evicted."""
        now = self._clock()
        if self._sessions_seen is None or now - self._sessions_seen[0] > SESSIONS_TTL:
            self._sessions_seen = (now, await self._sessions.session_models())
        held = self._sessions_seen[1] | self.registry.recently_used()
        for name in self._defaults():
            if isinstance(name, str) and "/" in name:
                provider_id, _, model_id = name.partition("/")
                held.add(ModelRef(provider_id, model_id))
        return held
