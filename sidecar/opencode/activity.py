"""Whether opencode may be busy reading a new config: what tells a slow health check from a hung opencode.

opencode reads its config on the one thread that also answers `/global/health`: while it reads a
big one (a dispose, then the first request in that directory), health checks time out although
nothing is wrong. The applier marks its reloads here; the child's health check asks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

# After a config is written or a reload call returns, opencode may still be reading (a request
# the pass-through forwarded to a disposed directory, say): health checks this soon are excused too.
RELOAD_SETTLE = 5.0


class ReloadsInFlight(Protocol):
    """What the child's health check asks."""

    def in_flight(self) -> bool: ...


class ReloadActivity:
    def __init__(self, *, settle: float = RELOAD_SETTLE, clock: Callable[[], float] = time.monotonic) -> None:
        self._settle = settle
        self._clock = clock
        self._running = 0
        self._quiet_after = float("-inf")

    def config_written(self) -> None:
        self._quiet_after = max(self._quiet_after, self._clock() + self._settle)

    @contextmanager
    def reloading(self) -> Iterator[None]:
        """Around a call that makes opencode read its config (a dispose, a directory's first request)."""
        self._running += 1
        try:
            yield
        finally:
            self._running -= 1
            self._quiet_after = max(self._quiet_after, self._clock() + self._settle)

    def in_flight(self) -> bool:
        return self._running > 0 or self._clock() < self._quiet_after
