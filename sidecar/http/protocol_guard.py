"""The connection policy of connections.py, applied to uvicorn's h11 server.

uvicorn has no deadline for a request's headers (a connection that sends half a request line is
kept forever) and no bound on connections: 1,100 such connections took the sidecar to its
1,024-file limit, where /livez stopped answering. This is the one module that knows uvicorn's and
h11's insides; serving with another server replaces it and keeps the policy.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import h11
import structlog
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from sidecar.http.connections import (
    BODY_TIMEOUT,
    ConnectionLimits,
    ConnectionTable,
    open_files_needed,
    raise_open_file_limit,
)

log = structlog.get_logger("sidecar.api")

# How often deadlines are checked: a connection is closed at most this late.
SWEEP_INTERVAL = 0.25


def ignore_client_disconnect(app: ASGIApp) -> ASGIApp:
    """A client gone before its request body was whole (or closed for stalling it) leaves nobody to
    answer: no error of ours, where uvicorn would log it with a traceback."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await app(scope, receive, send)
        except ClientDisconnect:
            pass  # a flood makes thousands a second: not even a debug line each

    return wrapped


class ConnectionGuard:
    """The table of the API's connections, and the task that closes the overdue ones."""

    def __init__(self, limits: ConnectionLimits, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.table: ConnectionTable[GuardedH11Protocol] = ConnectionTable(limits)
        self.clock = clock

    def protocol(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> GuardedH11Protocol:
        """uvicorn's protocol factory (`uvicorn.Config(http=...)`)."""
        return GuardedH11Protocol(config, server_state, app_state, _loop, guard=self)

    async def run(
        self, *, sleep: Callable[[float], Awaitable[None]] = anyio.sleep, interval: float = SWEEP_INTERVAL
    ) -> None:
        before, after = raise_open_file_limit()
        needed = open_files_needed(self.limits.max_connections, self.limits.max_streams)
        log.info(
            "api.connection_limits",
            max_connections=self.limits.max_connections,
            header_timeout=self.limits.header_timeout,
            body_timeout=self.limits.body_timeout,
            open_files=after,
            open_files_before=before,
        )
        if after < needed:
            log.warning("api.open_files_short", open_files=after, needed=needed)
        while True:
            self.close_overdue()
            await sleep(interval)

    def close_overdue(self) -> None:
        now = self.clock()
        for conn, reason in self.table.overdue(now):
            if reason == BODY_TIMEOUT and not conn.stalled_by_client():
                self.table.body(conn, now)
                continue
            seconds = self.limits.header_timeout if reason != BODY_TIMEOUT else self.limits.body_timeout
            log.warning(f"api.{reason}", client=conn.peer, seconds=seconds)
            conn.close_now()


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, reporting each connection's phase to the guard's table."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        guard: ConnectionGuard,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._guard = guard

    @property
    def peer(self) -> str | None:
        return f"{self.client[0]}:{self.client[1]}" if self.client else None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        table = self._guard.table
        admission = table.admit(self, self._guard.clock())
        if not admission.admitted:
            log.warning("api.connection_refused", client=self.peer, max_connections=table.limits.max_connections)
            transport.close()
            return
        if admission.evict is not None:
            victim = admission.evict
            log.warning("api.connection_evicted", client=victim.peer, max_connections=table.limits.max_connections)
            victim.close_now()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._note_phase(progress=True)

    def on_response_complete(self) -> None:
        super().on_response_complete()  # may start a pipelined request
        self._note_phase(progress=False)

    def pause_writing(self) -> None:
        super().pause_writing()
        self._note_phase(progress=False)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._note_phase(progress=True)

    def connection_lost(self, exc: Exception | None) -> None:
        self._guard.table.forget(self)
        super().connection_lost(exc)

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        # Another protocol takes the transport over, and uvicorn stops counting it too.
        self._guard.table.forget(self)
        super().handle_websocket_upgrade(event)

    def _note_phase(self, *, progress: bool) -> None:
        if self.transport.is_closing():
            return
        table, now = self._guard.table, self._guard.clock()
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            table.waiting(self, now)
        elif self.flow.write_paused:
            table.body(self, now, progress=False)  # the client stopped reading its answer
        elif self.conn.their_state is h11.SEND_BODY:
            table.body(self, now, progress=progress)
        else:
            table.busy(self)

    def stalled_by_client(self) -> bool:
        """Whether the client, not the application, is what this connection waits for: the client
        does not read its answer, or the application waits for body bytes that do not come (not
        for bytes it has yet to take, nor for a `100 Continue` it has yet to ask for)."""
        if self.flow.write_paused:
            return True
        cycle = self.cycle
        return (
            cycle is not None
            and not cycle.response_complete
            and self.conn.their_state is h11.SEND_BODY
            and not self.flow.read_paused
            and not cycle.body
            and not cycle.waiting_for_100_continue
        )

    def close_now(self) -> None:
        self._guard.table.forget(self)
        if self.transport.is_closing():
            return
        # close() would wait for a client that does not read to take what is buffered.
        if self.transport.get_write_buffer_size():
            self.transport.abort()
        else:
            self.transport.close()
