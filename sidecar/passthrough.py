"""Forward everything that is not the sidecar's own API to opencode.

The caller never needs opencode's password: the sidecar adds it. Because of that, what only the
password protected must not leak through: opencode shows the gateway key in `/config`,
`/config/providers` and `/provider`, so every secret the sidecar holds for others (gateway keys,
opencode's password) is redacted from answers. The caller's own API key is not: they know it.
Requests that carry a model have it normalised and resolved first.

Bounded under load (issue 13): event streams (`GET /event`, `/global/event`) last as long as their
client, so they have connections to opencode of their own and a bound per client and in total;
100 of them on one shared pool once left every other request waiting 30 s for a connection. The
bodies of model-carrying routes are held whole to rewrite the model, so the bytes held at once
are bounded too (prompts carry pasted images and PDFs inline, as base64 `data:` URLs: a smaller
per-body bound would refuse real prompts).
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode

import anyio
import httpx
import structlog
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from sidecar.directories import InvalidDirectory, check_directory
from sidecar.naming import ModelRef

log = structlog.get_logger("sidecar.passthrough")

REDACTED = b"[redacted]"

# Per connection, or the sidecar's own business: never forwarded either way.
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
        "content-encoding",
        "accept-encoding",
        "authorization",
        "x-api-key",
    }
)

# Where opencode's requests carry a model, and in which form it expects it.
MODEL_ROUTES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^/session/[^/]+/(message|prompt_async|shell)$"), "pair"),
    (re.compile(r"^/session/[^/]+/command$"), "string"),
    (re.compile(r"^/session/[^/]+/(init|summarize)$"), "fields"),
    (re.compile(r"^/(api/)?session$"), "id"),
    (re.compile(r"^/api/session/[^/]+/model$"), "id"),
]

# opencode 1.18.33's routes that answer `text/event-stream` (measured from its `GET /doc`).
STREAM_ROUTES = re.compile(r"^/(event|global/event|api/event|api/session/[^/]+/event)$")

MIB = 1024 * 1024
# What the pass-through takes in one request body: a prompt may carry files (pasted images and PDFs
# travel inline as base64 `data:` URLs; a 4K screenshot is 3 to 8 MiB of base64).
FORWARDED_BODY_LIMIT = 10 * MIB
# Ordinary requests' connections to opencode (httpx's default), and how long one waits for a free
# one: a blocking prompt holds its connection for minutes, so the wait is bounded, not the prompt.
ORDINARY_CONNECTIONS = 100
POOL_WAIT = 10.0

Resolve = Callable[[Any, str | None], Awaitable[ModelRef]]


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
            raise PassthroughError(
                429,
                f"this client already holds {self.per_client} event streams, the most one client may "
                "(SIDECAR_MAX_STREAMS_PER_CLIENT); close one first",
                headers={"retry-after": "5"},
            )
        if self.open >= self.total:
            raise PassthroughError(
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
                raise PassthroughError(
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


def failure(exc: httpx.HTTPError, connections: int) -> PassthroughError:
    """What went wrong between the sidecar and opencode, in words that tell the caller what to do:
    a pool with no free connection is not an opencode that is down."""
    if isinstance(exc, httpx.PoolTimeout):
        return PassthroughError(
            503,
            f"all {connections} connections from the sidecar to opencode are busy with other requests; retry shortly",
            headers={"retry-after": "1"},
        )
    if isinstance(exc, httpx.ConnectTimeout):
        return PassthroughError(504, "opencode did not accept a connection in time; it may be overloaded or restarting")
    if isinstance(exc, httpx.ConnectError):
        return PassthroughError(502, "opencode is not reachable right now (connection refused); it may be restarting")
    if isinstance(exc, httpx.TimeoutException):
        return PassthroughError(504, "opencode did not answer in time")
    if isinstance(exc, httpx.RemoteProtocolError):
        return PassthroughError(502, "opencode closed the connection before it answered; it may have restarted")
    if isinstance(exc, httpx.ProtocolError):
        return PassthroughError(502, "opencode's answer was not valid HTTP")
    return PassthroughError(502, f"the connection to opencode failed during the request ({type(exc).__name__})")


def wants_stream(method: str, path: str, accept: str) -> bool:
    return method == "GET" and (STREAM_ROUTES.match(path) is not None or "text/event-stream" in accept)


def model_form(method: str, path: str) -> str | None:
    if method != "POST":
        return None
    for pattern, form in MODEL_ROUTES:
        if pattern.match(path):
            return form
    return None


def requested_model(body: dict[str, Any], form: str) -> Any:
    """The model in a request body, as the caller wrote it, or None when it names none."""
    if form == "fields":
        if body.get("modelID") is None:
            return None
        return {"providerID": body.get("providerID"), "modelID": body["modelID"]}
    return body.get("model")


def with_model(body: dict[str, Any], form: str, ref: ModelRef) -> dict[str, Any]:
    """The body with the resolved model, in the form opencode wants at that route."""
    body = dict(body)
    if form == "pair":
        body["model"] = ref.as_pair()
    elif form == "string":
        body["model"] = str(ref)
    elif form == "fields":
        body["providerID"], body["modelID"] = ref.provider_id, ref.model_id
    else:
        original = body.get("model")
        model = {"id": ref.model_id, "providerID": ref.provider_id}
        if isinstance(original, dict) and isinstance(original.get("variant"), str):
            model["variant"] = original["variant"]
        body["model"] = model
    return body


class Redactor:
    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = sorted({s.encode() for s in secrets if s}, key=len, reverse=True)
        self.longest = len(self._secrets[0]) if self._secrets else 0

    def __call__(self, data: bytes) -> bytes:
        for secret in self._secrets:
            data = data.replace(secret, REDACTED)
        return data


class ForwardedResponse(StreamingResponse):
    """An answer streamed from opencode; `on_close` runs however it ends (done, the client gone,
    or never started), so that a stream's slot and connection are always given back."""

    def __init__(self, *args: Any, on_close: Callable[[], Awaitable[None]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.on_close()


class Passthrough:
    def __init__(
        self,
        opencode_url: str,
        password: str | None,
        resolve: Resolve,
        secrets: Iterable[str],
        *,
        limits: PassthroughLimits = PassthroughLimits(),
        transport: httpx.AsyncBaseTransport | None = None,
        stream_transport: httpx.AsyncBaseTransport | None = None,
        seen_directory: Callable[[str], None] | None = None,
    ) -> None:
        self._resolve = resolve
        # Told of each directory a request goes to, so that one loaded without any event is kept current.
        self._seen_directory = seen_directory
        self._redact = Redactor(secrets)
        self.limits = limits
        self.streams = StreamSlots(limits.max_streams, limits.max_streams_per_client)
        self.bodies = ByteBudget(limits.body_memory, limits.body_wait)
        auth = httpx.BasicAuth("opencode", password) if password is not None else None
        self._http = httpx.AsyncClient(
            base_url=opencode_url,
            auth=auth,
            timeout=httpx.Timeout(30.0, read=None, pool=POOL_WAIT),
            limits=httpx.Limits(max_connections=limits.connections, max_keepalive_connections=20),
            transport=transport,
        )
        # Streams have a pool of their own, as large as their bound: a stream never waits for a
        # connection, and never takes one an ordinary request needs.
        self._streams_http = httpx.AsyncClient(
            base_url=opencode_url,
            auth=auth,
            timeout=httpx.Timeout(30.0, read=None),
            limits=httpx.Limits(max_connections=limits.max_streams, max_keepalive_connections=20),
            transport=stream_transport or transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()
        await self._streams_http.aclose()

    async def forward(self, request: Request) -> Response:
        path = request.url.path
        query = [(k, v) for k, v in parse_qsl(request.url.query, keep_blank_values=True) if k != "auth_token"]
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP]
        headers.append(("accept-encoding", "identity"))  # redaction needs the plain text
        content: bytes | AsyncIterator[bytes] | None = None
        directory = _directory(request, query)
        if directory is not None:
            # opencode reads the query before the header: one checked value, where it looks first,
            # so that the directory it works in is the one tracked here.
            query = [(k, v) for k, v in query if k != "directory"] + [("directory", directory)]
            headers = [(k, v) for k, v in headers if k.lower() != "x-opencode-directory"]
            if self._seen_directory is not None:
                self._seen_directory(directory)
        form = model_form(request.method, path)
        held = 0
        try:
            if form is not None:
                body, held = await self._hold_body(request)
                if body:
                    rewritten = await self._rewrite_model(body, form, directory)
                    del body
                    content = _slices(rewritten)
                    headers.append(("content-length", str(len(rewritten))))
            elif "content-length" in request.headers or "transfer-encoding" in request.headers:
                content = request.stream()
                # A chunked body's length is known only at its end: a Content-Length beside it (refused
                # before here as a smuggling attempt) would tell opencode to cut the stream elsewhere.
                if "transfer-encoding" not in request.headers:
                    headers.append(("content-length", request.headers["content-length"]))
            raw_path = request.scope.get("raw_path") or path.encode()
            target = raw_path.decode("latin-1") + (f"?{urlencode(query)}" if query else "")
            peer = request.client.host if request.client is not None else "unknown"
            stream = wants_stream(request.method, path, request.headers.get("accept", ""))
            client = self._streams_http if stream else self._http
            upstream = client.build_request(request.method, target, headers=headers, content=content)
            answer, stream = await self._send(client, upstream, peer, stream)
        finally:
            self.bodies.give(held)  # sent (or failed): the bytes are opencode's now, or nobody's

        async def close() -> None:
            await answer.aclose()
            if stream:
                self.streams.give(peer)
                log.debug("passthrough.stream_closed", path=path, peer=peer, open=self.streams.open)

        response_headers = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP}
        body = self._events(answer) if _is_stream(answer) else self._body(answer)
        return ForwardedResponse(body, status_code=answer.status_code, headers=response_headers, on_close=close)

    async def _send(
        self, client: httpx.AsyncClient, upstream: httpx.Request, peer: str, stream: bool
    ) -> tuple[httpx.Response, bool]:
        """opencode's answer, its body still to come, and whether it holds one of the peer's stream
        slots (to give back when it ends)."""
        path = upstream.url.path
        if stream:
            self.streams.take(peer)
        try:
            answer = await client.send(upstream, stream=True)
        except BaseException as exc:
            if stream:
                self.streams.give(peer)
            if isinstance(exc, httpx.HTTPError):
                error = failure(exc, self.limits.connections)
                log.warning("passthrough.failed", path=path, error=type(exc).__name__, status=error.status, stream=stream)
                raise error from None
            raise
        if _is_stream(answer) and not stream:
            # A stream from a route not known to answer one still counts, though on the other pool.
            try:
                self.streams.take(peer)
            except PassthroughError:
                await answer.aclose()
                raise
            stream = True
        if stream:
            log.debug("passthrough.stream_opened", path=path, peer=peer, open=self.streams.open)
        return answer, stream

    async def _hold_body(self, request: Request) -> tuple[bytearray, int]:
        """A model-carrying body, whole, with the bytes of the budget it holds (given back once sent).
        A declared length is reserved before a byte is read; a chunked body as it arrives."""
        declared = request.headers.get("content-length")
        held = 0
        if declared is not None and declared.isdigit():
            await self.bodies.take(int(declared))
            held = int(declared)
        data = bytearray()
        try:
            async for chunk in request.stream():
                if len(data) + len(chunk) > held:
                    more = len(data) + len(chunk) - held
                    await self.bodies.take(more)
                    held += more
                data += chunk
        except BaseException:
            self.bodies.give(held)
            raise
        return data, held

    async def _body(self, answer: httpx.Response) -> AsyncIterator[bytes]:
        """Any other answer, streamed; the last bytes of each chunk wait for the next one, so that
        a secret split between two chunks is still redacted."""
        hold = self._redact.longest - 1
        tail = b""
        try:
            async for chunk in answer.aiter_bytes():
                data = self._redact(tail + chunk)
                cut = max(len(data) - hold, 0)
                tail = data[cut:]
                if cut:
                    yield data[:cut]
            if tail:
                yield tail
        finally:
            await answer.aclose()

    async def _events(self, answer: httpx.Response) -> AsyncIterator[bytes]:
        """Server-sent events, passed on line by line as opencode sends them."""
        try:
            async for line in answer.aiter_lines():
                yield self._redact(line.encode()) + b"\n"
        except httpx.HTTPError:
            pass  # opencode closed the stream (a reload, a restart): the caller reconnects
        finally:
            await answer.aclose()

    async def _rewrite_model(self, body: bytearray, form: str, directory: str | None) -> bytes:
        """The body with its model resolved. Each copy of a 10 MiB prompt is 10 MiB more: the bytes
        read are dropped before the rewritten ones are made, so that at most three copies live."""
        try:
            parsed = json.loads(body)
        except (ValueError, RecursionError):
            return bytes(body)  # opencode answers a bad (or absurdly nested) body itself
        if not isinstance(parsed, dict) or (requested := requested_model(parsed, form)) is None:
            del parsed
            return bytes(body)
        ref = await self._resolve(requested, directory)
        body.clear()
        return json.dumps(with_model(parsed, form, ref)).encode()


# What is written to opencode's socket at a time. Written whole, a 10 MiB body was copied into the
# connection's write buffer (a bytearray in Python 3.11's asyncio), which kept its 10 MiB after
# draining, on every kept-alive connection: 16 prompts left the sidecar at 316 MiB.
WRITE_SLICE = 64 * 1024


async def _slices(data: bytes) -> AsyncIterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(data), WRITE_SLICE):
        yield bytes(view[start : start + WRITE_SLICE])


def _is_stream(answer: httpx.Response) -> bool:
    return answer.headers.get("content-type", "").startswith("text/event-stream")


class PassthroughError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def _directory(request: Request, query: list[tuple[str, str]]) -> str | None:
    """The directory a request works in, as opencode 1.18.33 picks it (the first non-empty of
    `?directory=` and the percent-encoded `x-opencode-directory` header), checked and normalised;
    a bad one is refused here and never reaches opencode."""
    given = [value for key, value in query if key == "directory"]
    if len(given) > 1:
        raise PassthroughError(400, "directory must be given once")
    value: str | None = given[0] if given and given[0] else None
    if value is None:
        header = request.headers.get("x-opencode-directory")
        if not header:
            return None
        try:
            # Header bytes arrive as latin-1; clients percent-encode the UTF-8 path.
            value = unquote(header.encode("latin-1").decode(), errors="strict")
        except UnicodeError:
            raise PassthroughError(400, "x-opencode-directory must be a percent-encoded UTF-8 path") from None
    try:
        return check_directory(value)
    except InvalidDirectory as exc:
        raise PassthroughError(400, str(exc)) from None
