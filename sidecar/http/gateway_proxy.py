"""The `/gateway/<id>/v1/...` route: opencode's model requests, sent on to the real gateway with the
real key (key custody, issue 15). opencode holds only the internal token, which guards.py accepts
on these paths alone; where a request goes and with which headers is decided in gateway_request.py.

Both bodies stream: the request's bytes go upstream as they arrive (counted against the body
limit), the answer's go back as they come, server-sent events included, never held whole. There is
no deadline on an answer, only on silence (the idle timeout, between any two reads). The client
going away cancels the upstream request at once, while its answer is awaited as well as while it
streams. A redirect is never followed: the key would go with it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy

import anyio
import httpx
import structlog
from starlette.datastructures import Headers
from starlette.types import Message, Receive, Scope, Send

from sidecar.errors import HttpError
from sidecar.http.errors import error_response
from sidecar.http.gateway_request import (
    CONNECT_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    GATEWAY_CONNECTIONS,
    ModelPeek,
    Target,
    failure,
    request_headers,
    response_headers,
    target_of,
)
from sidecar.http.passthrough_limits import FORWARDED_BODY_LIMIT, POOL_WAIT
from sidecar.http.view import GatewayUpstream, TrafficRecorder
from sidecar.reasons import server_reason
from sidecar.redact import Redactor

log = structlog.get_logger("sidecar.gateway_proxy")

# Of an error answer, what is kept to find the gateway's reason for the traffic record.
ERROR_HEAD_BYTES = 4096


class _ClientGone(Exception):
    """The client closed its connection before its request body was whole."""


class _TooLarge(Exception):
    pass


@dataclass
class _Outcome:
    """What the traffic record says of one request, filled in as it goes."""

    model: ModelPeek
    status: int | None = None
    first_byte: float | None = None
    streamed_bytes: int = 0
    error: str | None = None
    complete: bool = False
    client_gone: bool = False
    recorded: bool = True  # False for a request the sidecar itself refused


class NoTraffic:
    """A recorder that keeps nothing, until one is wired (sidecar.traffic.ModelTraffic)."""

    def request_done(
        self,
        gateway: str,
        model: str,
        *,
        status: int | None,
        first_byte: float | None,
        streamed_bytes: int,
        error: str | None,
        cancelled: bool = False,
    ) -> None:
        pass


class GatewayProxy:
    def __init__(
        self,
        gateways: Iterable[GatewayUpstream],
        *,
        token: str,
        traffic: TrafficRecorder,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        body_limit: int = FORWARDED_BODY_LIMIT,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._token = token
        self.gateways = {gateway.id: gateway for gateway in gateways}
        self._redactors = {gateway.id: Redactor(gateway.secrets) for gateway in self.gateways.values()}
        self._traffic = traffic
        self.idle_timeout = idle_timeout
        self.body_limit = body_limit
        self._clock = clock
        self._http = httpx.AsyncClient(
            # read and write are per operation: the longest silence, not a bound on the answer.
            timeout=httpx.Timeout(CONNECT_TIMEOUT, read=idle_timeout, write=idle_timeout, pool=POOL_WAIT),
            limits=httpx.Limits(max_connections=GATEWAY_CONNECTIONS, max_keepalive_connections=64),
            follow_redirects=False,
            # No cookie jar: a cookie one answer sets must not ride along on every later request.
            cookies=CookieJar(DefaultCookiePolicy(allowed_domains=[])),
            transport=transport,
        )

    @property
    def token(self) -> str:
        return self._token

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope)
        try:
            raw_path = (scope.get("raw_path") or scope["path"].encode()).partition(b"?")[0]
            target = target_of(raw_path, scope.get("query_string", b""), self.gateways)
            declared = self._declared_length(headers)
        except HttpError as exc:
            await error_response(exc.status, exc.message, exc.headers)(scope, receive, send)
            return
        outcome = _Outcome(ModelPeek())
        try:
            await self._forward(scope, receive, send, target, declared, outcome)
        finally:
            if outcome.recorded:
                self._record(target.gateway.id, outcome)

    def _declared_length(self, headers: Headers) -> str | None:
        declared = headers.get("content-length")
        if declared is None:
            return None
        if not (declared.isascii() and declared.isdigit()):
            raise HttpError(400, "content-length must be a number of bytes")
        if int(declared) > self.body_limit:
            raise self._too_large()
        return str(int(declared))

    def _too_large(self) -> HttpError:
        return HttpError(413, f"the request body is larger than the gateway route takes ({self.body_limit} bytes)")

    async def _forward(
        self, scope: Scope, receive: Receive, send: Send, target: Target, declared: str | None, outcome: _Outcome
    ) -> None:
        body_done = anyio.Event()
        headers = Headers(scope=scope)
        content: AsyncIterator[bytes] | None = None
        if declared not in (None, "0") or "transfer-encoding" in headers:
            content = self._body(receive, outcome.model, body_done)
        else:
            body_done.set()
        request = self._http.build_request(
            scope["method"],
            target.url,
            headers=request_headers(scope_headers(scope), target.gateway, declared_length=declared),
            content=content,
        )
        async with anyio.create_task_group() as group:
            group.start_soon(self._watch_client, receive, body_done, group.cancel_scope, outcome)
            await self._exchange(scope, receive, send, target, request, outcome)
            group.cancel_scope.cancel()

    async def _body(self, receive: Receive, model: ModelPeek, done: anyio.Event) -> AsyncIterator[bytes]:
        """The request body as the client sends it, its model peeked at on the way."""
        received = 0
        while True:
            message: Message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.body_limit:
                raise _TooLarge
            if chunk:
                model.feed(chunk)
                yield chunk
            if not message.get("more_body", False):
                done.set()
                return

    async def _watch_client(
        self, receive: Receive, body_done: anyio.Event, scope: anyio.CancelScope, outcome: _Outcome
    ) -> None:
        """Once the body is whole, the only message left is the client's disconnect: it cancels the
        upstream request, whether its answer is awaited or streaming."""
        await body_done.wait()
        while (await receive())["type"] != "http.disconnect":
            pass
        if not outcome.complete:
            outcome.client_gone = True
        scope.cancel()

    async def _exchange(
        self, scope: Scope, receive: Receive, send: Send, target: Target, request: httpx.Request, outcome: _Outcome
    ) -> None:
        gateway = target.gateway.id
        started = self._clock()
        try:
            answer = await self._http.send(request, stream=True)
        except _TooLarge:
            outcome.recorded = False
            error = self._too_large()
            await error_response(error.status, error.message)(scope, receive, send)
            return
        except _ClientGone:
            outcome.client_gone = True
            return
        except httpx.HTTPError as exc:
            error = failure(exc, gateway, self.idle_timeout)
            outcome.error = error.message
            log.warning("gateway_proxy.failed", gateway=gateway, error=type(exc).__name__, status=error.status)
            await error_response(error.status, error.message, error.headers)(scope, receive, send)
            return
        try:
            outcome.status = answer.status_code
            if answer.is_redirect:
                message = (
                    f"gateway {gateway!r} answered with a redirect (HTTP {answer.status_code}); not followed, "
                    "since the gateway's key would go with it"
                )
                outcome.error = message
                log.warning("gateway_proxy.redirect_refused", gateway=gateway, status=answer.status_code)
                await error_response(502, message)(scope, receive, send)
                return
            await self._relay(answer, send, target, outcome, started)
        finally:
            with anyio.CancelScope(shield=True):
                await answer.aclose()  # before the end of the body: the connection is closed, not reused

    async def _relay(
        self, answer: httpx.Response, send: Send, target: Target, outcome: _Outcome, started: float
    ) -> None:
        """The gateway's answer, as it comes. An error answer (status 400 and up) has the gateway's
        secrets blanked, in case it echoes what it was sent; a good one passes untouched."""
        headers = response_headers((k.decode("latin-1"), v.decode("latin-1")) for k, v in answer.headers.raw)
        redactor = self._redactors[target.gateway.id]
        failed = answer.status_code >= 400
        redacting = failed and bool(redactor) and not answer.headers.get("content-encoding")
        if redacting:
            headers = [(k, v) for k, v in headers if k != "content-length"]
        headers = [(k, redactor.text(v)) for k, v in headers]
        await send(
            {
                "type": "http.response.start",
                "status": answer.status_code,
                "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers],
            }
        )
        stream = redactor.stream() if redacting else None
        head = bytearray()
        try:
            async for chunk in answer.aiter_raw():
                if outcome.first_byte is None:
                    outcome.first_byte = self._clock() - started
                if failed and len(head) < ERROR_HEAD_BYTES:
                    head += chunk[: ERROR_HEAD_BYTES - len(head)]
                if stream is not None:
                    chunk = stream.feed(chunk)
                if chunk:
                    outcome.streamed_bytes += len(chunk)
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if stream is not None and (tail := stream.end()):
                outcome.streamed_bytes += len(tail)
                await send({"type": "http.response.body", "body": tail, "more_body": True})
        except httpx.HTTPError as exc:
            # Too late for an error answer: the connection is closed without the body's end, so
            # that the client knows it is cut short.
            error = failure(exc, target.gateway.id, self.idle_timeout)
            outcome.error = error.message
            log.warning("gateway_proxy.answer_cut", gateway=target.gateway.id, error=type(exc).__name__)
            return
        finally:
            if failed:
                reason = server_reason(httpx.Response(answer.status_code, content=bytes(head)), redactor.secrets)
                outcome.error = outcome.error or reason or f"HTTP {answer.status_code}"
        if outcome.first_byte is None:
            outcome.first_byte = self._clock() - started
        outcome.complete = True
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _record(self, gateway: str, outcome: _Outcome) -> None:
        self._traffic.request_done(
            gateway,
            outcome.model.model,
            status=outcome.status,
            first_byte=outcome.first_byte,
            streamed_bytes=outcome.streamed_bytes,
            error=outcome.error,
            cancelled=outcome.client_gone,
        )


def scope_headers(scope: Scope) -> list[tuple[str, str]]:
    return [(name.decode("latin-1"), value.decode("latin-1")) for name, value in scope["headers"]]
