"""When each gateway is asked for its list: at its poll interval, or (fleet mode) again as soon as
its hub answers a long-poll. The loops only schedule; what a poll or an answer does is the
reconciler's (`reconcile`), and two polls of one gateway never run at once (`polls`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

import anyio

from sidecar.catalog import Catalog
from sidecar.gateway.client import GatewayError
from sidecar.polls import PollResult

# The least time between the starts of two long-polls of a hub: a hub that answers at once every
# time (broken, or not holding requests) is asked once a second, not in a busy loop.
MIN_LONG_POLL_GAP = 1.0


@runtime_checkable
class LongPolledSource(Protocol):
    """A hub (fleet mode): asked again as soon as it answers; it holds each request up to `wait`."""

    async def long_poll(self, wait: float) -> Catalog: ...


async def poll_forever(poll: Callable[[], Awaitable[object]], interval: float, first_delay: float | None = None) -> None:
    await anyio.sleep(interval if first_delay is None else first_delay)
    while True:
        await poll()
        await anyio.sleep(interval)


async def follow_forever(
    source: LongPolledSource,
    interval: float,
    take: Callable[[Catalog | GatewayError], Awaitable[PollResult]],
    clock: Callable[[], float],
    sleep: Callable[[float], Awaitable[None]],
) -> None:
    """Fleet mode: the next long-poll goes out as soon as the hub answers (it holds each for
    up to `interval`: the wait is the interval); after a failure, the interval, as a gateway's
    poll waits it. The first goes out at once: it carries the version held, if any."""
    started = -float("inf")
    while True:
        early = started + min(MIN_LONG_POLL_GAP, interval) - clock()
        if early > 0:
            await sleep(early)
        started = clock()
        got: Catalog | GatewayError
        try:
            got = await source.long_poll(interval)
        except GatewayError as exc:
            got = exc
        result = await take(got)
        if not result.ok:
            await sleep(interval)
