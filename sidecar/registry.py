"""The models registered on request: those opencode's config holds, the changes waiting for the
next write, the order they were last used in, and which one makes room when the registry is full.

Pure bookkeeping: the reconciler owns the writes and asks opencode which models its sessions use.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Container, Iterable
from typing import Protocol

from sidecar.catalog import ModelInfo
from sidecar.naming import ModelRef

# A model resolved this recently counts as in use: the request that carries it to a session may
# not have reached opencode yet, and opencode records a session's model only when it does.
RECENT_USE = 10.0
# How long one answer to "which models do sessions use" serves further registrations at the cap:
# shorter than RECENT_USE, so a session that moved to a model since (through this sidecar, which
# resolves the model first) is covered by the model's recent use.
SESSIONS_TTL = 1.0

Clock = Callable[[], float]


class SessionsUnknown(Exception):
    """opencode could not say which models its sessions use; the message is safe to show."""


class SessionModels(Protocol):
    async def session_models(self) -> set[ModelRef]:
        """The model of every session opencode keeps, in any directory; SessionsUnknown when it can't say."""
        ...


class NoSessions:
    """No opencode to ask (the `render` command): nothing is known unused, so nothing is evicted."""

    async def session_models(self) -> set[ModelRef]:
        raise SessionsUnknown("no opencode to ask")


class RegistryFull(Exception):
    """No room for another model; the message names the cap and is safe to show."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def least_recently_used(order: Iterable[ModelRef], held: set[ModelRef]) -> ModelRef | None:
    """The first model in `order` (least recently used first) that nothing holds."""
    return next((ref for ref in order if ref not in held), None)


class Registry:
    """Registered models per gateway. `models` is what the config on disk holds (or the write in
    flight); additions and evictions wait in `pending` for the next write, so that every
    registration arriving meanwhile shares it."""

    def __init__(self, models: dict[str, dict[str, ModelInfo]], limit: int, clock: Clock) -> None:
        self.models = models
        self.limit = limit
        self._clock = clock
        self._added: dict[ModelRef, ModelInfo] = {}
        self._removed: set[ModelRef] = set()
        # Least recently used first, with the time of the last use. A restart starts from the saved
        # order (nothing counts as recently used then).
        self._used: OrderedDict[ModelRef, float] = OrderedDict(
            (ModelRef(gateway_id, model_id), float("-inf")) for gateway_id, ids in models.items() for model_id in ids
        )
        self.changes = 0  # counts additions and evictions; a write records the count it carried
        self.written = 0

    def _written(self, ref: ModelRef) -> bool:
        return ref.model_id in self.models.get(ref.provider_id, {})

    def holds(self, ref: ModelRef) -> bool:
        """Registered, or waiting for the write that registers it."""
        return ref in self._added or (self._written(ref) and ref not in self._removed)

    def leaving(self, ref: ModelRef) -> bool:
        """Still in the config, but evicted by the next write."""
        return ref in self._removed and self._written(ref)

    @property
    def pending(self) -> bool:
        return self.changes > self.written

    def __len__(self) -> int:
        written = sum(len(ids) for ids in self.models.values())
        return written - sum(1 for ref in self._removed if self._written(ref)) + len(self._added)

    def touch(self, ref: ModelRef) -> None:
        """`ref` was asked for now: the most recently used, and held for RECENT_USE seconds."""
        if self.holds(ref):
            self._used[ref] = self._clock()
            self._used.move_to_end(ref)

    def add(self, ref: ModelRef, model: ModelInfo) -> None:
        if self.holds(ref):
            self.touch(ref)
            return
        if ref in self._removed:
            self._removed.discard(ref)  # asked for again before its eviction was written
        else:
            self._added[ref] = model
        self.changes += 1
        self.touch(ref)

    def evict(self, ref: ModelRef) -> None:
        if self._added.pop(ref, None) is None:
            self._removed.add(ref)
        self._used.pop(ref, None)
        self.changes += 1

    def recently_used(self) -> set[ModelRef]:
        since = self._clock() - RECENT_USE
        return {ref for ref, used in self._used.items() if used >= since}

    def by_last_use(self) -> list[ModelRef]:
        """Registered models, least recently used first; those never used in this run (a model a
        gateway listed, then dropped) come first."""
        for ref in [ref for ref in self._used if not self.holds(ref)]:
            del self._used[ref]  # listed by its gateway now, or removed by an operator
        written = [
            ModelRef(gateway_id, model_id) for gateway_id, ids in self.models.items() for model_id in ids
        ]
        unseen = [ref for ref in written if ref not in self._used and ref not in self._removed]
        return [*unseen, *self._used]

    def drop_listed(self, gateway_id: str, listed: Container[str]) -> list[str]:
        """Remove the models of `gateway_id` that its list now holds: they need no registration
        any more. Their ids."""
        registered = self.models.get(gateway_id, {})
        now_listed = [model_id for model_id in registered if model_id in listed]
        for model_id in now_listed:
            del registered[model_id]
        return now_listed

    def apply_pending(self) -> int:
        """Move the waiting changes into `models`, just before they are written; the change count
        they bring the registry to."""
        for ref in self._removed:
            self.models.get(ref.provider_id, {}).pop(ref.model_id, None)
        for ref, model in self._added.items():
            self.models.setdefault(ref.provider_id, {})[ref.model_id] = model
        self._added, self._removed = {}, set()
        return self.changes
