"""The registry's side of the sync loop: a model its gateway doesn't list registered on request,
written with the next write of opencode's config (one write for any number of registrations
arriving together), and removed again.

The bookkeeping is `registry`'s and room in a full registry `admission`'s; the write is the
reconciler's (`reconcile`, the one writer of opencode's config), made under its lock.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import anyio.lowlevel
import structlog

from sidecar.admission import Admission
from sidecar.catalog import ModelInfo
from sidecar.naming import ModelRef
from sidecar.registry import Registry

log = structlog.get_logger("sidecar.reconcile")


class Registrations:
    def __init__(
        self,
        registry: Registry,
        admission: Admission,
        lock: anyio.Lock,
        publish: Callable[[], Awaitable[None]],
        *,
        model: Callable[[ModelRef], ModelInfo | None],
        ref_of: Callable[[str], ModelRef | None],
    ) -> None:
        self.registry = registry
        self.registered = registry.models
        self._admission = admission
        # The reconciler's write lock, and its write made under it.
        self._lock, self._publish = lock, publish
        # What `/v1/models` lists now (the reconciler's view, replaced by each write).
        self._model, self._ref_of = model, ref_of

    def known(self, ref: ModelRef) -> ModelInfo | None:
        """The model as opencode has it, unless the next write evicts it (then it is registered again)."""
        return None if self.registry.leaving(ref) else self._model(ref)

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
        return self._model(ref) or model

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
        ref = self._ref_of(listed_id)
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
