"""What the pass-through holds at once: event streams, per client and in total, and the bytes of
prompts held whole to rewrite their model.

Event streams (`GET /event`, `/global/event`) last as long as their client, so they have
connections to opencode of their own and a bound per client and in total; 100 of them on one shared
pool once left every other request waiting 30 s for a connection. The bodies of model-carrying
routes are held whole to rewrite the model, so the bytes held at once are bounded too (prompts
carry pasted images and PDFs inline, as base64 `data:` URLs: a smaller per-body bound would refuse
real prompts).
"""

from __future__ import annotations

from dataclasses import dataclass

import anyio
import structlog

from sidecar.errors import HttpError

log = structlog.get_logger("sidecar.passthrough")

MIB = 1024 * 1024
# What the pass-through takes in one request body: a prompt may carry files (pasted images and PDFs
# travel inline as base64 `data:` URLs; a 4K screenshot is 3 to 8 MiB of base64).
FORWARDED_BODY_LIMIT = 10 * MIB
# Ordinary requests' connections to opencode (httpx's default), and how long one waits for a free
# one: a blocking prompt holds its connection for minutes, so the wait is bounded, not the prompt.
ORDINARY_CONNECTIONS = 100
POOL_WAIT = 10.0


@dataclass(frozen=True)
class PassthroughLimits:
    # Why 256 streams: each holds a client connection and one to opencode, and a client (a TUI, an
    # agent) holds one or two; 256 leaves three quarters of the API's 1,000 connections to ordinary
    # requests. Per client a quarter of that, so one peer cannot hold them all.
    max_streams: int = 256
    max_streams_per_client: int = 64
    # Model-carrying bodies held at once: three 10 MiB prompts. Each costs three times its size at
    # its peak (measured: 30 MiB for 10, while parsed, then while the rewritten bytes are made), so
    # three add about 90 MiB to an idle sidecar's 70: within its 256 Mi container limit.
    body_memory: int = 32 * MIB
    # A prompt past that waits this long for others to be sent on: sending is fast, but resolving
    # a model the gateway does not list yet may take a while.
    body_wait: float = 30.0
    connections: int = ORDINARY_CONNECTIONS


class StreamSlots:
    """Event streams open now, per peer address and in total."""

    def __init__(self, total: int, per_client: int) -> None:
        self.total = total
        self.per_client = per_client
        self.held: dict[str, int] = {}
        self.open = 0

    def take(self, peer: str) -> None:
        if self.held.get(peer, 0) >= self.per_client:
            raise HttpError(
                429,
                f"this client already holds {self.per_client} event streams, the most one client may "
                "(SIDECAR_MAX_STREAMS_PER_CLIENT); close one first",
                headers={"retry-after": "5"},
            )
        if self.open >= self.total:
            raise HttpError(
                503,
                f"the sidecar already holds {self.total} event streams, the most it serves at once "
                "(SIDECAR_MAX_STREAMS); retry later",
                headers={"retry-after": "5"},
            )
        self.held[peer] = self.held.get(peer, 0) + 1
        self.open += 1

    def give(self, peer: str) -> None:
        left = self.held.get(peer, 0) - 1
        if left > 0:
            self.held[peer] = left
        else:
            self.held.pop(peer, None)
        self.open = max(self.open - 1, 0)


class ByteBudget:
    """Bytes of request bodies held whole at once. Past the bound a body waits, unread (the client
    is held back by TCP, and the connection guard does not count it as stalled), for others to be
    sent on; a body that waits `wait` seconds is refused."""

    def __init__(self, limit: int, wait: float) -> None:
        self.limit = limit
        self.wait = wait
        self.held = 0
        self.waits = 0
        self._freed: anyio.Event | None = None

    async def take(self, size: int) -> None:
        if self.held + size > self.limit:
            self.waits += 1
            log.info("passthrough.body_waiting", size=size, held=self.held, limit=self.limit)
            with anyio.move_on_after(self.wait):
                while self.held + size > self.limit:
                    if self._freed is None:
                        self._freed = anyio.Event()
                    await self._freed.wait()
            if self.held + size > self.limit:
                raise HttpError(
                    503,
                    f"the sidecar is holding {self.held // MIB} MiB of prompts on their way to opencode, and this "
                    f"one would pass its bound of {self.limit // MIB} MiB (SIDECAR_BODY_MEMORY) for {self.wait:g} s; "
                    "retry shortly",
                    headers={"retry-after": "1"},
                )
        self.held += size

    def give(self, size: int) -> None:
        self.held = max(self.held - size, 0)
        if size and self._freed is not None:
            self._freed.set()
            self._freed = None
