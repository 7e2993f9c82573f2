"""One poll of a gateway at a time, and polls asked for together shared: what a refresh waits on.

A refresh (POST /v1/models/refresh) must see the gateway as it is when it asks, so it needs a poll
that starts after it arrived; any number of refreshes arriving while one poll runs share the one
poll that starts next, and the periodic poll takes its turn like them, so two polls of one gateway
never run at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio


@dataclass(frozen=True)
class PollResult:
    """What one poll of one gateway found."""

    gateway: str
    ok: bool
    changed: bool = False
    models: int = 0
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    error: str | None = None

    def report(self) -> dict[str, object]:
        return {
            "gateway": self.gateway,
            "ok": self.ok,
            "changed": self.changed,
            "models": self.models,
            "added": list(self.added),
            "removed": list(self.removed),
            "error": self.error,
        }


@dataclass
class _Turns:
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    started: int = 0
    last: PollResult | None = None


class PollGate:
    def __init__(self, poll: Callable[[str], Awaitable[PollResult]]) -> None:
        self._poll = poll
        self._turns: dict[str, _Turns] = {}

    async def poll(self, gateway_id: str) -> PollResult:
        """The result of a poll of `gateway_id` that started after this call: its own, or the one
        a caller waiting at the same time ran."""
        turns = self._turns.setdefault(gateway_id, _Turns())
        arrived = turns.started
        async with turns.lock:
            if turns.started > arrived and turns.last is not None:
                return turns.last  # started after we arrived, and ended while we waited
            turns.started += 1
            turns.last = await self._poll(gateway_id)
            return turns.last

    async def take(self, gateway_id: str, work: Callable[[], Awaitable[PollResult]]) -> PollResult:
        """Apply an answer asked for before (a hub's long-poll, held while a refresh may have asked
        since) in its turn, without counting as a poll a refresh could share: it did not start after one."""
        turns = self._turns.setdefault(gateway_id, _Turns())
        async with turns.lock:
            return await work()
