"""One retry policy for whatever asks a server for a model list: the gateway poll and the SDK.

Not stamina, though its backoff hook can honour a Retry-After and refuse one over a cap: it
sleeps with asyncio's, trio's or time's own sleep and draws its jitter from the `random` module,
so a test could only step it through stamina's process-wide testing switch, which also zeroes
the Retry-After waits the SDK's tests check. Here the sleep and the random source are parameters.
"""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from sidecar.backoff import retry_delay

T = TypeVar("T")


class Transient(Exception):
    """A failure worth another try: a timeout, a failed connection, a 429 or a 5xx.

    `retry_after` is the wait the server asked for (a 429's Retry-After); None for our backoff.
    """

    retry_after: float | None = None


def retry_delay_for(
    error: BaseException,
    attempt: int,
    *,
    max_retries: int,
    max_retry_after: float = math.inf,
    rng: random.Random | None = None,
) -> float | None:
    """How long to wait before retry `attempt` (1 for the first) after `error`, or None to give up.

    Only a Transient error is retried, at most `max_retries` times. It waits what the server's
    Retry-After says, unless that is longer than `max_retry_after`; without one, the usual backoff
    with jitter.
    """
    if attempt > max_retries or not isinstance(error, Transient):
        return None
    if error.retry_after is None:
        return retry_delay(attempt, rng=rng)
    return error.retry_after if error.retry_after <= max_retry_after else None


def _not_told(error: Transient, attempt: int, delay: float) -> None:
    return None


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry; `scheduled` is told of each retry before its wait, so the
    caller logs it under its own event name."""

    max_retries: int
    max_retry_after: float = math.inf
    rng: random.Random | None = field(default=None, repr=False)
    scheduled: Callable[[Transient, int, float], None] = field(default=_not_told, repr=False)

    def delay(self, error: Transient, attempt: int) -> float | None:
        delay = retry_delay_for(
            error, attempt, max_retries=self.max_retries, max_retry_after=self.max_retry_after, rng=self.rng
        )
        if delay is not None:
            self.scheduled(error, attempt, delay)
        return delay


async def retrying(
    attempt: Callable[[], Awaitable[T]], policy: RetryPolicy, sleep: Callable[[float], Awaitable[None]]
) -> T:
    """What `attempt()` returns, tried again after each Transient error while `policy` allows;
    then that error is raised. Any other error is raised at once."""
    tries = 1
    while True:
        try:
            return await attempt()
        except Transient as error:
            delay = policy.delay(error, tries)
            if delay is None:
                raise
        await sleep(delay)
        tries += 1


def retrying_sync(attempt: Callable[[], T], policy: RetryPolicy, sleep: Callable[[float], None]) -> T:
    """The blocking twin of `retrying`, for the SDK's sync client."""
    tries = 1
    while True:
        try:
            return attempt()
        except Transient as error:
            delay = policy.delay(error, tries)
            if delay is None:
                raise
        sleep(delay)
        tries += 1
