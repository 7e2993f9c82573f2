"""Forward everything that is not the sidecar's own API to opencode.

The caller never needs opencode's password: the sidecar adds it. Because of that, what only the
password protected must not leak through: opencode shows the gateway key in `/config`,
`/config/providers` and `/provider`, so every secret the sidecar holds for others (gateway keys,
opencode's password) is redacted from answers. The caller's own API key is not: they know it.
Requests that carry a model have it resolved first, by the resolver the pass-through is handed
(the same one `POST /v1/models/resolve` asks), never through the supervisor.

Bounded under load (issue 13): what it holds at once is counted in passthrough_limits.py.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import structlog
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from sidecar.errors import HttpError
from sidecar.http.connections import HOP_BY_HOP as CONNECTION_HEADERS
from sidecar.http.opencode_routes import (
    model_form,
    request_directory,
    requested_model,
    prompt_session,
    wants_stream,
    with_model,
)
from sidecar.http.passthrough_limits import POOL_WAIT, ByteBudget, PassthroughLimits, StreamSlots
from sidecar.http.view import ModelResolver, PromptGate
from sidecar.redact import Redactor

log = structlog.get_logger("sidecar.passthrough")


# Per connection, or the sidecar's own business: never forwarded either way.
HOP_BY_HOP = CONNECTION_HEADERS | {"content-encoding", "authorization", "x-api-key"}


def failure(exc: httpx.HTTPError, connections: int) -> HttpError:
    """What went wrong between the sidecar and opencode, in words that tell the caller what to do:
    a pool with no free connection is not an opencode that is down."""
    if isinstance(exc, httpx.PoolTimeout):
        return HttpError(
            503,
            f"all {connections} connections from the sidecar to opencode are busy with other requests; retry shortly",
            headers={"retry-after": "1"},
        )
    if isinstance(exc, httpx.ConnectTimeout):
        return HttpError(504, "opencode did not accept a connection in time; it may be overloaded or restarting")
    if isinstance(exc, httpx.ConnectError):
        return HttpError(502, "opencode is not reachable right now (connection refused); it may be restarting")
    if isinstance(exc, httpx.TimeoutException):
        return HttpError(504, "opencode did not answer in time")
    if isinstance(exc, httpx.RemoteProtocolError):
        return HttpError(502, "opencode closed the connection before it answered; it may have restarted")
    if isinstance(exc, httpx.ProtocolError):
        return HttpError(502, "opencode's answer was not valid HTTP")
    return HttpError(502, f"the connection to opencode failed during the request ({type(exc).__name__})")


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
        resolver: ModelResolver,
        secrets: Iterable[str],
        *,
        limits: PassthroughLimits = PassthroughLimits(),
        transport: httpx.AsyncBaseTransport | None = None,
        stream_transport: httpx.AsyncBaseTransport | None = None,
        seen_directory: Callable[[str], None] | None = None,
        prompt_gate: PromptGate | None = None,
    ) -> None:
        self._resolver = resolver
        # Prompt starts wait while their directory is reloaded, so that none is aborted by it.
        self._prompt_gate = prompt_gate
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
        directory = request_directory(request, query)
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
            # After the model is resolved (which may wait for this directory's reload), right
            # before it goes: the prompt counts as started until its answer is complete.
            leave = await self._enter_gate(request.method, path, directory)
            try:
                answer, stream = await self._send(client, upstream, peer, stream)
            except BaseException:
                leave()
                raise
        finally:
            self.bodies.give(held)  # sent (or failed): the bytes are opencode's now, or nobody's

        async def close() -> None:
            leave()
            await answer.aclose()
            if stream:
                self.streams.give(peer)
                log.debug("passthrough.stream_closed", path=path, peer=peer, open=self.streams.open)

        response_headers = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP}
        body = self._events(answer) if _is_stream(answer) else self._body(answer)
        return ForwardedResponse(body, status_code=answer.status_code, headers=response_headers, on_close=close)

    async def _enter_gate(self, method: str, path: str, directory: str | None) -> Callable[[], None]:
        session = prompt_session(method, path)
        if self._prompt_gate is None or session is None:
            return _nothing
        return await self._prompt_gate.enter_prompt(directory, session)

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
            except HttpError:
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
        redacted = self._redact.stream()
        try:
            async for chunk in answer.aiter_bytes():
                if data := redacted.feed(chunk):
                    yield data
            if tail := redacted.end():
                yield tail
        finally:
            await answer.aclose()

    async def _events(self, answer: httpx.Response) -> AsyncIterator[bytes]:
        """Server-sent events, passed on line by line as opencode sends them."""
        try:
            async for line in answer.aiter_lines():
                yield self._redact.data(line.encode()) + b"\n"
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
        ref = (await self._resolver.resolve(requested, directory)).ref
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


def _nothing() -> None:
    pass


def _is_stream(answer: httpx.Response) -> bool:
    return answer.headers.get("content-type", "").startswith("text/event-stream")
