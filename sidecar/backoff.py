"""Delays as pure functions of the attempt number, so tests can check them without waiting."""

from __future__ import annotations

import random


def retry_delay(
    attempt: int, *, base: float = 0.5, cap: float = 8.0, rng: random.Random | None = None
) -> float:
    """Exponential backoff with full jitter for retry `attempt` (1 for the first retry)."""
    ceiling = min(cap, base * 2 ** max(attempt - 1, 0))
    return (rng or random).uniform(0, ceiling)


def restart_delay(restarts: int, *, initial: float, cap: float) -> float:
    """Kubelet's crash-loop backoff: `initial` before the first restart, doubling up to `cap`."""
    if restarts <= 0:
        return 0.0
    return min(cap, initial * 2 ** (restarts - 1))
