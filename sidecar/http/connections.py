"""How many connections the API holds, and how long a client may keep one waiting.

The policy alone, without sockets or an HTTP parser: the server (protocol_guard.py) tells the
table what each connection is doing, and closes the connections the table names. A connection is
*waiting* while it holds no request the application is answering (fresh, between two requests, or
still sending headers), *body* while the application waits for the rest of its request body or for
the client to read its answer, and *busy* otherwise. Waiting and body connections cost an attacker
nothing to hold, so when the table is full a new connection takes the place of the one that has
kept the server waiting longest: a slowloris flood then cannot keep a new connection, such as a
Kubernetes probe's, from being served, since the flood's own connections are always older.
Measured with a bound of 200 and 1,100 connections reconnecting as soon as they were closed, a
third of them stalling inside a body: evicting waiting connections only left the probes to be
evicted (the stalled bodies took every other slot).
"""

from __future__ import annotations

import resource
from dataclasses import dataclass
from typing import Generic, Hashable, TypeVar

C = TypeVar("C", bound=Hashable)

DEFAULT_MAX_CONNECTIONS = 1000
# Connections that wait in the kernel for their turn: they hold no file of ours yet.
LISTEN_BACKLOG = 2048
# How many connections asyncio accepts in one turn of the loop before any of them is seen: that
# many may be open beyond the bound for a moment. A new connection's request is read two or three
# turns after it is accepted, so a batch much smaller than the bound lets a probe's connection
# live to send its request while a flood pushes the oldest out: with a batch of 128 and a bound
# of 200, a flood that reconnected at once evicted the probes before their requests were read.
MAX_ACCEPT_BATCH = 128
# Files the process holds besides the API's connections and the event streams' own connections to
# opencode (one each, up to SIDECAR_MAX_STREAMS, counted apart): up to 100 connections to opencode
# for ordinary requests, the gateways', opencode's pipes, the event loop's own (about 30 in an idle
# sidecar), with room to spare.
OTHER_OPEN_FILES = 256
# Headers about one connection (RFC 9110 section 7.6.1), never forwarded by a proxy either way; the
# pass-through and the gateway route each add the sidecar's own business to these.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "accept-encoding",
    }
)
# WebSockets forwarded at once (opencode's terminals, SIDECAR_MAX_WEBSOCKETS). Each holds two files:
# its client's socket, which leaves the connection table once upgraded (another protocol owns it
# then), and its connection to opencode. A person's browser opens one per terminal tab.
DEFAULT_MAX_WEBSOCKETS = 64
FILES_PER_WEBSOCKET = 2
# The gateway route's connections to the gateways at once (key custody): each is a prompt being
# answered; past it a request waits for one, then is refused with 503. Counted apart like the
# event streams.
GATEWAY_CONNECTIONS = 256

HEADER_TIMEOUT = "header_timeout"
BODY_TIMEOUT = "body_timeout"


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    # From opening (or from the previous answer) to the end of a request's headers.
    header_timeout: float = 10.0
    # Without a byte while the server waits on the client mid-body (its request's, or its answer's).
    body_timeout: float = 60.0
    # Event streams forwarded at once: each also holds a connection to opencode.
    max_streams: int = 0
    # WebSockets forwarded at once, outside the table once upgraded (FILES_PER_WEBSOCKET each).
    max_websockets: int = 0


@dataclass(frozen=True)
class Admission(Generic[C]):
    admitted: bool
    evict: C | None = None


class ConnectionTable(Generic[C]):
    """Every open connection with the time it entered its phase; each phase in order of that time,
    so that the oldest waiting connection and the overdue ones are found without a scan."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self._waiting: dict[C, float] = {}
        self._body: dict[C, float] = {}
        self._busy: set[C] = set()

    def __len__(self) -> int:
        return len(self._waiting) + len(self._body) + len(self._busy)

    def admit(self, conn: C, now: float) -> Admission[C]:
        """A new connection: taken while there is room; at the bound it takes the place of the
        connection that has kept the server waiting longest (for a request, or for body bytes),
        and is refused only when every connection has the application at work for it."""
        victim: C | None = None
        if len(self) >= self.limits.max_connections:
            heads = [(next(iter(phase.items())), phase) for phase in (self._waiting, self._body) if phase]
            if not heads:
                return Admission(admitted=False)
            (victim, _since), phase = min(heads, key=lambda head: head[0][1])
            del phase[victim]
        self._waiting[conn] = now
        return Admission(admitted=True, evict=victim)

    def waiting(self, conn: C, now: float) -> None:
        """Between requests or inside a request's headers; the clock keeps running from when it began waiting."""
        if conn in self._waiting:
            return
        if self._forget_from_other_phases(conn):
            self._waiting[conn] = now

    def body(self, conn: C, now: float, *, progress: bool = True) -> None:
        """Waiting on the client mid-body; progress (a byte came, or the server let it wait for a
        reason of its own) restarts the idle clock."""
        if conn in self._body:
            if not progress:
                return
            del self._body[conn]  # to the end, which keeps the dict in order of time
        elif not self._forget_from_other_phases(conn):
            return
        self._body[conn] = now

    def busy(self, conn: C) -> None:
        if conn in self._busy:
            return
        if self._forget_from_other_phases(conn):
            self._busy.add(conn)

    def forget(self, conn: C) -> None:
        self._forget_from_other_phases(conn)

    def overdue(self, now: float) -> list[tuple[C, str]]:
        """The connections past their deadline, with the reason. The server closes each (and
        forgets it) or, when the wait was its own doing, renews it."""
        late: list[tuple[C, str]] = []
        for phase, timeout, reason in (
            (self._waiting, self.limits.header_timeout, HEADER_TIMEOUT),
            (self._body, self.limits.body_timeout, BODY_TIMEOUT),
        ):
            for conn, since in phase.items():
                if now - since < timeout:
                    break  # the rest came later
                late.append((conn, reason))
        return late

    def next_deadline(self) -> float | None:
        """When the first connection in the table falls due, if one can: the oldest of each phase."""
        heads = [
            next(iter(phase.values())) + timeout
            for phase, timeout in ((self._waiting, self.limits.header_timeout), (self._body, self.limits.body_timeout))
            if phase
        ]
        return min(heads, default=None)

    def _forget_from_other_phases(self, conn: C) -> bool:
        """Whether the connection was in the table (one closing or evicted is not put back)."""
        if self._waiting.pop(conn, None) is not None:
            return True
        if self._body.pop(conn, None) is not None:
            return True
        if conn in self._busy:
            self._busy.discard(conn)
            return True
        return False


def accept_batch(max_connections: int) -> int:
    return min(max(max_connections // 8, 1), MAX_ACCEPT_BATCH)


def open_files_needed(max_connections: int, max_streams: int = 0, max_websockets: int = 0) -> int:
    forwarded = max_streams + FILES_PER_WEBSOCKET * max_websockets
    return max_connections + accept_batch(max_connections) + OTHER_OPEN_FILES + GATEWAY_CONNECTIONS + forwarded


def connections_that_fit(open_files: int, max_streams: int = 0, max_websockets: int = 0) -> int:
    """The most connections a process allowed `open_files` files can hold beside `max_streams`
    forwarded event streams and `max_websockets` forwarded WebSockets (0 when none fit)."""
    if open_files == resource.RLIM_INFINITY:
        return DEFAULT_MAX_CONNECTIONS
    forwarded = max_streams + FILES_PER_WEBSOCKET * max_websockets
    fit = max(open_files - OTHER_OPEN_FILES - GATEWAY_CONNECTIONS - forwarded, 0)
    while fit and open_files_needed(fit, max_streams, max_websockets) > open_files:
        fit -= 1
    return fit


def open_file_limits() -> tuple[int, int]:
    """RLIMIT_NOFILE's soft and hard limits."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def raise_open_file_limit() -> tuple[int, int]:
    """Raise the soft open-file limit to the hard one (distributions start most processes at 1,024
    while allowing far more): returns the soft limit before and after."""
    soft, hard = open_file_limits()
    if soft == hard or soft == resource.RLIM_INFINITY:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        return soft, soft
    return soft, hard
