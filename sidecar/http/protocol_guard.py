"""The connection policy of connections.py, applied to uvicorn's httptools server.

uvicorn has no deadline for a request's headers (a connection that sends half a request line is
kept forever), no bound on connections (1,100 such connections took the sidecar to its 1,024-file
limit, where /livez stopped answering), and with httptools no bound on a request's head either
(llhttp takes headers without end; h11 stopped at 16 KiB). This is the one module that knows
uvicorn's and httptools' insides; serving with another server replaces it and keeps the policy.

httptools rather than h11: its C parser (llhttp) and uvloop's transports cost a fraction of h11's
pure-Python parse, which was the largest part of what the gateway hop added (bench/custody.py).
llhttp refuses a request with both Content-Length and Transfer-Encoding by itself (strict mode).
"""

from __future__ import annotations

import asyncio
import json
import time
from http import HTTPStatus
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httptools
import structlog
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from sidecar.http.connections import (
    BODY_TIMEOUT,
    ConnectionLimits,
    ConnectionTable,
    open_files_needed,
    raise_open_file_limit,
)
from sidecar.http.errors import error_document
from sidecar.http.head_with_body import HeadWithBody

log = structlog.get_logger("sidecar.api")

# The sweep sleeps until the first deadline in the table, so that an idle server is not woken for
# nothing (a sweep every 0.25 s was four wake-ups a second, idle), but at least this long: a
# flood's deadlines are closed in batches, each at most this late.
SWEEP_GRAIN = 0.1
# The most a request line and headers may take together. h11's bound was 16 KiB; browsers send up
# to ~8 KiB of cookies, and opencode's clients far less.
MAX_HEAD_BYTES = 64 * 1024


def ignore_client_disconnect(app: ASGIApp) -> ASGIApp:
    """A client gone before its request body was whole (or closed for stalling it) leaves nobody to
    answer: no error of ours, where uvicorn would log it with a traceback."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await app(scope, receive, send)
        except ClientDisconnect:
            pass  # a flood makes thousands a second: not even a debug line each

    return wrapped


def next_sweep(now: float, deadline: float | None, limits: ConnectionLimits) -> float:
    """Seconds from `now` to the next sweep (pure): to the table's first deadline, but no further
    than the shortest timeout, since a connection stamped meanwhile falls due no sooner than that
    from now; and no sooner than SWEEP_GRAIN."""
    wake = now + min(limits.header_timeout, limits.body_timeout)
    if deadline is not None:
        wake = min(wake, deadline)
    return max(wake - now, SWEEP_GRAIN)


class ConnectionGuard:
    """The table of the API's connections, and the task that closes the overdue ones."""

    def __init__(self, limits: ConnectionLimits, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.table: ConnectionTable[GuardedProtocol] = ConnectionTable(limits)
        self.clock = clock

    def protocol(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> GuardedProtocol:
        """uvicorn's protocol factory (`uvicorn.Config(http=...)`)."""
        return GuardedProtocol(config, server_state, app_state, _loop, guard=self)

    async def run(self, *, sleep: Callable[[float], Awaitable[None]] = anyio.sleep) -> None:
        before, after = raise_open_file_limit()
        needed = open_files_needed(self.limits.max_connections, self.limits.max_streams, self.limits.max_websockets)
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
            await sleep(next_sweep(self.clock(), self.table.next_deadline(), self.limits))

    def close_overdue(self) -> None:
        now = self.clock()
        for conn, reason in self.table.overdue(now):
            if reason == BODY_TIMEOUT and not conn.stalled_by_client():
                self.table.body(conn, now)
                continue
            seconds = self.limits.header_timeout if reason != BODY_TIMEOUT else self.limits.body_timeout
            log.warning(f"api.{reason}", client=conn.peer, seconds=seconds)
            conn.close_now()


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, reporting each connection's phase to the guard's table, and
    refusing a request head longer than MAX_HEAD_BYTES."""

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
        # The bytes of a request's line and headers so far, from reads that were head alone. A read
        # in which a head ends or begins is not counted (where in it is the parser's to know), so a
        # head can pass the bound by at most one read (256 KiB), never grow without end.
        self._head_bytes = 0
        self._in_head = True
        self._heads = 0
        # Between a request's headers and the end of its body: the client owes us bytes.
        self._in_body = False

    @property
    def peer(self) -> str | None:
        return f"{self.client[0]}:{self.client[1]}" if self.client else None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # Every write of the connection, its request cycles' included (they take the protocol's).
        self.transport = HeadWithBody(transport, self.loop)  # type: ignore[assignment]
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
        # uvicorn's own, but for what a refusal answers and logs: a head too long is a 431, and
        # every refusal a line of ours (rate-limited) rather than uvicorn's.
        self._unset_keepalive_if_required()
        heads, in_head = self._heads, self._in_head
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            log.warning("api.malformed_request", client=self.peer, reason=str(exc))
            self._refuse(400, f"malformed HTTP request: {exc}")
            return
        if self._heads != heads:  # a head ended in this read
            self._head_bytes = 0
        elif in_head:  # the whole read was head (a read from a body into a next head is not counted)
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                log.warning("api.head_too_large", client=self.peer, limit=MAX_HEAD_BYTES)
                self._refuse(431, f"the request line and headers are longer than {MAX_HEAD_BYTES} bytes")
                return
        self._note_phase(progress=True)

    # The parser's callbacks, for the phase of the request.
    def on_headers_complete(self) -> None:
        self._heads += 1
        self._in_head = False
        self._in_body = True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_body = False
        self._in_head = True
        super().on_message_complete()

    def _refuse(self, status: int, message: str) -> None:
        """An error answer like the API's own, then the connection closed: where the refused
        request ends, and so where a next one would begin, is unknown."""
        document = error_document(status, message)
        body = json.dumps(document).encode()
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nrequest-id: %s\r\n"
            b"connection: close\r\n\r\n%s"
            % (status, HTTPStatus(status).phrase.encode(), len(body), document["request_id"].encode(), body)
        )
        self.transport.close()

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

    def handle_websocket_upgrade(self) -> None:
        # Another protocol takes the transport over, and uvicorn stops counting it too. It gets
        # the socket's own transport: a WebSocket's frames are not answers with heads.
        self._guard.table.forget(self)
        if isinstance(self.transport, HeadWithBody):
            self.transport.flush()
            self.transport = self.transport.transport
        super().handle_websocket_upgrade()

    def _note_phase(self, *, progress: bool) -> None:
        if self.transport.is_closing():
            return
        table, now = self._guard.table, self._guard.clock()
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            table.waiting(self, now)
        elif self.flow.write_paused:
            table.body(self, now, progress=False)  # the client stopped reading its answer
        elif self._in_body:
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
            and self._in_body
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
