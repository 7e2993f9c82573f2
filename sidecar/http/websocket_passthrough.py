"""opencode's terminals (its WebSocket routes), forwarded both ways.

The upgrade has passed the same guards as any forwarded request (guards.py: Host and Origin first,
then the key, in any form the HTTP pass-through takes); here only opencode's own WebSocket routes
go on, `/pty/{id}/connect` and `/api/pty/{id}/connect` (opencode 1.18.33, whose ids are `pty_`
and letters and digits), with opencode's password added on the way. Nothing else is upgraded: a
terminal runs shell commands, so a path the sidecar does not know is refused, not guessed at.

Each direction reads a message only once the other side has taken the previous one, so a slow
reader slows its writer through TCP, and the buffers in between are bounded (uvicorn pauses reading
until a message is received; the upstream client holds at most MAX_QUEUE messages and WRITE_LIMIT
bytes). Close codes and reasons are passed on each way.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterable
from urllib.parse import parse_qsl, urlencode

import anyio
from anyio.abc import TaskGroup
import structlog
from starlette.requests import HTTPConnection
from starlette.types import Message, Receive, Scope, Send
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.frames import EXTERNAL_CLOSE_CODES, Close
from websockets.typing import Subprotocol

from sidecar.errors import HttpError
from sidecar.http.connections import HOP_BY_HOP
from sidecar.http.errors import error_response
from sidecar.http.guards import refuse
from sidecar.http.opencode_routes import request_directory
from sidecar.redact import Redactor

log = structlog.get_logger("sidecar.websocket")

# opencode's WebSocket routes, on the raw path: a percent-encoded byte or a dot segment in the id
# is refused, never decoded into another path.
TERMINAL_ROUTE = re.compile(r"^/(api/)?pty/([^/]*)/connect$")
PTY_ID = re.compile(r"^pty_[0-9A-Za-z]{1,64}$")
# A terminal's messages are keystrokes and screenfuls of output (opencode sends its replay buffer
# in pieces of 64 KiB); 1 MiB leaves a pasted file room and bounds what one message can hold.
MAX_MESSAGE = 1024 * 1024
# Messages from opencode held for a client that reads slowly, and bytes queued towards opencode.
MAX_QUEUE = 16
WRITE_LIMIT = 64 * 1024
OPEN_TIMEOUT = 10.0
# How long opencode's side may take to answer our close frame.
CLOSE_WAIT = 5.0
# The handshake's own headers and those about the caller's connection to the sidecar: the upstream
# handshake has its own, and the Origin was the sidecar's to check.
NOT_FORWARDED = HOP_BY_HOP | {"authorization", "x-api-key", "origin", "cookie", "x-opencode-directory"}
HANDSHAKE = "sec-websocket-"


class WebSocketSlots:
    """WebSockets forwarded now, against SIDECAR_MAX_WEBSOCKETS."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.open = 0

    def take(self) -> None:
        if self.open >= self.total:
            raise HttpError(
                503,
                f"the sidecar already forwards {self.total} WebSockets, the most it holds at once "
                "(SIDECAR_MAX_WEBSOCKETS); close a terminal or retry later",
                headers={"retry-after": "5"},
            )
        self.open += 1

    def give(self) -> None:
        self.open = max(self.open - 1, 0)


def terminal_path(raw_path: str) -> str:
    """The path to forward, or HttpError: 404 for any path that is not one of opencode's WebSocket
    routes, 400 for one whose pty id is not an id."""
    match = TERMINAL_ROUTE.match(raw_path)
    if match is None:
        raise HttpError(404, "the sidecar forwards WebSockets to opencode's terminals only (/pty/{id}/connect)")
    if PTY_ID.match(match.group(2)) is None:
        raise HttpError(400, "a pty id is `pty_` followed by letters and digits")
    return raw_path


def sendable(code: int | None, *, absent: int) -> int:
    """A close code that may be sent on: 1005 and 1006 only say that none came (`absent` instead),
    and the reserved ones are opencode's or the client's mistake, not the other side's to see."""
    if code is None or code in (1005, 1006):
        return absent
    if code in EXTERNAL_CLOSE_CODES or 3000 <= code <= 4999:
        return code
    return 1011


def upstream_close(connection: ClientConnection) -> tuple[int, str]:
    """What to tell the client of how opencode's side ended."""
    close: Close | None = connection.protocol.close_rcvd or connection.protocol.close_sent
    if close is None:
        return 1011, "opencode's connection ended without a close frame"
    return sendable(close.code, absent=1000), close.reason


class WebSocketPassthrough:
    """An ASGI app for the `websocket` scope: opencode's terminals, relayed."""

    def __init__(
        self,
        opencode_url: str,
        password: str | None,
        secrets: Iterable[str],
        *,
        max_websockets: int,
        max_message: int = MAX_MESSAGE,
        open_timeout: float = OPEN_TIMEOUT,
        seen_directory: Callable[[str], None] | None = None,
    ) -> None:
        self._base = re.sub(r"^http", "ws", opencode_url.rstrip("/"))
        self._auth = None if password is None else _basic("opencode", password)
        self._redact = Redactor(secrets)
        self.slots = WebSocketSlots(max_websockets)
        self.max_message = max_message
        self._open_timeout = open_timeout
        self._seen_directory = seen_directory

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        try:
            upstream = await self._open(scope)
        except HttpError as exc:
            await refuse(scope, receive, send, error_response(exc.status, exc.message, headers=exc.headers))
            return
        try:
            await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol})
            log.debug("websocket.opened", path=scope["path"], open=self.slots.open)
            ended = await self._relay(upstream, receive, send)
            log.debug("websocket.closed", path=scope["path"], code=ended[0], by=ended[1])
        finally:
            # Closed however the relay ended, a server shutting down included, but not waited on
            # for long: the slot is given back either way.
            with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_WAIT):
                await upstream.close()
            self.slots.give()

    async def _open(self, scope: Scope) -> ClientConnection:
        """opencode's side of the connection, open, holding a slot; or HttpError to refuse with."""
        raw_path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        path = terminal_path(raw_path.partition("?")[0])
        connection = HTTPConnection(scope)
        query = [
            (k, v)
            for k, v in parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
            if k != "auth_token"  # the sidecar's key, when given in the URL: never opencode's business
        ]
        directory = request_directory(connection, query)
        if directory is not None:
            query = [(k, v) for k, v in query if k != "directory"] + [("directory", directory)]
            if self._seen_directory is not None:
                self._seen_directory(directory)
        headers = [
            (k, v)
            for k, v in connection.headers.items()
            if k.lower() not in NOT_FORWARDED and not k.lower().startswith(HANDSHAKE)
        ]
        if self._auth is not None:
            headers.append(("authorization", self._auth))
        offered = [Subprotocol(p.strip()) for p in connection.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
        self.slots.take()
        try:
            return await connect(
                f"{self._base}{path}" + (f"?{urlencode(query)}" if query else ""),
                additional_headers=headers,
                subprotocols=offered or None,
                compression=None,
                user_agent_header=None,
                proxy=None,
                open_timeout=self._open_timeout,
                max_size=self.max_message,
                max_queue=MAX_QUEUE,
                write_limit=WRITE_LIMIT,
            )
        except BaseException as exc:
            self.slots.give()
            if isinstance(exc, InvalidStatus):
                # opencode's refusal (an unknown pty: 404), as it gave it, its body redacted.
                answer = exc.response
                body = self._redact.data(answer.body or b"").decode("utf-8", "replace")
                log.info("websocket.refused_by_opencode", path=path, status=answer.status_code)
                raise HttpError(answer.status_code, body or f"opencode refused the WebSocket ({answer.status_code})") from None
            if isinstance(exc, TimeoutError):
                raise HttpError(504, "opencode did not accept the WebSocket in time") from None
            if isinstance(exc, (OSError, InvalidHandshake)):
                log.warning("websocket.upstream_failed", path=path, error=type(exc).__name__)
                raise HttpError(502, "opencode is not reachable right now; it may be restarting") from None
            raise

    async def _relay(self, upstream: ClientConnection, receive: Receive, send: Send) -> tuple[int, str]:
        """Both directions until one side closes; the close is passed to the other. Returns the
        code and which side ended it."""
        ended: tuple[int, str] = (1000, "")

        async def from_client(group: TaskGroup) -> None:
            nonlocal ended
            while True:
                message: Message = await receive()
                if message["type"] == "websocket.disconnect":
                    code = sendable(message.get("code"), absent=1000 if message.get("code") == 1005 else 1001)
                    ended = (code, "client")
                    await upstream.close(code, message.get("reason") or "")
                    break
                data: str | bytes | None = message.get("text")
                if data is None:
                    data = message.get("bytes") or b""
                if _larger(data, self.max_message):
                    reason = f"message larger than the sidecar forwards ({self.max_message} bytes)"
                    ended = (1009, "client")
                    await upstream.close(1009, reason)
                    await _close_client(send, 1009, reason)
                    break
                try:
                    await upstream.send(data)  # waits while opencode reads slowly
                except ConnectionClosed:
                    break  # from_opencode passes on how it ended
            group.cancel_scope.cancel()

        async def from_opencode(group: TaskGroup) -> None:
            nonlocal ended
            try:
                async for data in upstream:  # the next is read once the client has taken this one
                    kind = "bytes" if isinstance(data, bytes) else "text"
                    await send({"type": "websocket.send", kind: data})
            except ConnectionClosed:
                pass
            except OSError:
                return  # the client is gone; from_client passes that on
            code, reason = upstream_close(upstream)
            ended = (code, "opencode")
            await _close_client(send, code, reason)
            group.cancel_scope.cancel()

        async with anyio.create_task_group() as group:
            group.start_soon(from_client, group)
            group.start_soon(from_opencode, group)
        return ended


async def _close_client(send: Send, code: int, reason: str) -> None:
    try:
        await send({"type": "websocket.close", "code": code, "reason": reason})
    except (OSError, RuntimeError):
        pass  # the client is gone already: nobody to tell


def _larger(data: str | bytes, limit: int) -> bool:
    if isinstance(data, bytes):
        return len(data) > limit
    # A character is at most 4 bytes of UTF-8: a keystroke need not be encoded to be measured.
    return len(data) * 4 > limit and len(data.encode()) > limit


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
