"""The `/gateway/<id>/v1/...` route: opencode's model requests, sent on to the real gateway with the
real key (key custody, issue 15). opencode holds only the internal token, which guards.py accepts
on these paths alone; where a request goes and with which headers is decided in gateway_request.py.

Both bodies stream: the request's bytes go upstream as they arrive (counted against the body
limit), the answer's go back as they come, server-sent events included, never held whole. There is
no deadline on an answer, only on silence (the idle timeout, between any two reads, and while the
gateway takes no bytes of the request body). The client going away cancels the upstream request at
once, while its answer is awaited as well as while it streams. A redirect is never followed: the key
would go with it.

The client is aiohttp's: its C-accelerated HTTP/1.1 client costs a quarter of httpx's CPU per
proxied request (measured on the custody benchmark's gateway under uvloop: 102 us against 444 us),
and the hop is on every model request. It is imported by the route's first request (~9 MiB
resident), not by a sidecar whose opencode has made none yet, or never will (no key custody).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from functools import partial
from urllib.parse import quote
from typing import TYPE_CHECKING
from urllib.request import getproxies, proxy_bypass

import structlog
from starlette.types import Receive, Scope, Send
from yarl import URL

from sidecar.errors import HttpError
from sidecar.http.errors import error_response
from sidecar.http.gateway_request import (
    CONNECT_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    GATEWAY_CONNECTIONS,
    GatewaySilent,
    ModelPeek,
    PoolBusy,
    Target,
    failure,
    request_headers,
    response_headers,
    target_of,
)
from sidecar.http.passthrough_limits import FORWARDED_BODY_LIMIT, POOL_WAIT
from sidecar.http.view import GatewayUpstream, TrafficRecorder
from sidecar.reasons import reason_in
from sidecar.redact import Redactor

if TYPE_CHECKING:
    import aiohttp

log = structlog.get_logger("sidecar.gateway_proxy")

# Of an error answer, what is kept to find the gateway's reason for the traffic record.
ERROR_HEAD_BYTES = 4096

# A body that came whole in one message and is no larger than this goes with the request's headers
# in one write: it fits under the socket's write buffer mark (64 KiB in asyncio and uvloop, and
# aiohttp's own drain point), so writing it never waits on the gateway. A larger one is streamed,
# its stalls bounded by the idle timeout.
ONE_WRITE = 64 * 1024

# An idle kept-alive connection to a gateway is closed after this: httpx's default, which the route
# had before; uvicorn-served gateways (LiteLLM) close theirs after 5 s anyway.
KEEPALIVE = 5.0

REDIRECTS = frozenset({301, 302, 303, 307, 308})

# Targets of recent paths, checked: opencode asks for the same few (`/chat/completions`), and
# checking a path and making its URL cost more than finding them again.
TARGETS_KEPT = 256

# Headers aiohttp would add of its own: the client's pass as they are (request_headers), nothing
# more. Content-Type too: aiohttp would say application/octet-stream for a body without one.
NOT_OURS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")

# The URL characters sent as they are: everything printable in ASCII (target_of has refused the
# rest but for bytes above 0x7F, which are percent-encoded as the bytes they are).
URL_SAFE = "".join(chr(c) for c in range(0x21, 0x7F))


@dataclass(slots=True)
class _Outcome:
    """What the traffic record says of one request, filled in as it goes, and the exchange's own
    state: who may still interrupt it."""

    model: ModelPeek
    status: int | None = None
    first_byte: float | None = None
    streamed_bytes: int = 0
    error: str | None = None
    complete: bool = False
    client_gone: bool = False
    recorded: bool = True  # False for a request the sidecar itself refused
    too_large: bool = False
    stalled: bool = False  # the gateway took no bytes of the body for the idle timeout
    body_whole: bool = False
    answering: bool = False  # http.response.start was sent: too late for an error answer
    live: bool = False  # the exchange may still be interrupted (cancelled) by the watcher or the stall timer
    interrupted: bool = False
    watcher: asyncio.Task[None] | None = None
    stall: asyncio.TimerHandle | None = None


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
        connect_timeout: float = CONNECT_TIMEOUT,
        connections: int = GATEWAY_CONNECTIONS,
        pool_wait: float = POOL_WAIT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._token = token
        self.gateways = {gateway.id: gateway for gateway in gateways}
        self._redactors = {gateway.id: Redactor(gateway.secrets) for gateway in self.gateways.values()}
        self._proxies = {gateway.id: env_proxy(gateway.api_base) for gateway in self.gateways.values()}
        self._traffic = traffic
        self.idle_timeout = idle_timeout
        self.body_limit = body_limit
        self.connect_timeout = connect_timeout
        self.connections = connections
        self.pool_wait = pool_wait
        self._clock = clock
        # Requests in flight to the gateways, each holding one connection: aiohttp's own wait for a
        # free connection is bounded only together with the connect (ClientTimeout.connect), and
        # ends in the same error, so the route counts its own to answer 503, not 504.
        self._slots = asyncio.Semaphore(connections)
        self._targets: dict[tuple[bytes, bytes], tuple[Target, URL]] = {}
        # Made on the first request: aiohttp binds a session to the running loop.
        self._session: aiohttp.ClientSession | None = None

    @property
    def token(self) -> str:
        return self._token

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _open(self) -> aiohttp.ClientSession:
        import aiohttp

        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.connections, keepalive_timeout=KEEPALIVE),
            # No deadline on an answer: sock_read is the longest silence between two reads.
            timeout=aiohttp.ClientTimeout(
                total=None, connect=self.connect_timeout, sock_connect=self.connect_timeout, sock_read=self.idle_timeout
            ),
            # The gateway's bytes as they are: measured, checked for the key, passed on.
            auto_decompress=False,
            # No cookie jar: a cookie one answer sets must not ride along on every later request.
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=NOT_OURS,
        )
        return self._session

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in scope["headers"]]
        try:
            target, url = self._target(scope)
            declared, chunked = self._framing(headers)
        except HttpError as exc:
            await error_response(exc.status, exc.message, exc.headers)(scope, receive, send)
            return
        outcome = _Outcome(ModelPeek())
        try:
            await self._forward(scope, receive, send, target, url, headers, declared, chunked, outcome)
        finally:
            if outcome.recorded:
                self._record(target.gateway.id, outcome)

    def _target(self, scope: Scope) -> tuple[Target, URL]:
        raw_path = (scope.get("raw_path") or scope["path"].encode()).partition(b"?")[0]
        key = (raw_path, scope.get("query_string", b""))
        known = self._targets.get(key)
        if known is None:
            target = target_of(*key, self.gateways)
            known = target, upstream_url(target.url)
            if len(self._targets) >= TARGETS_KEPT:
                self._targets.clear()
            self._targets[key] = known
        return known

    def _framing(self, headers: list[tuple[str, str]]) -> tuple[str | None, bool]:
        """The request body's declared length, and whether it is chunked instead."""
        declared = None
        chunked = False
        for name, value in headers:
            lower = name.lower()
            if lower == "content-length":
                declared = value
            elif lower == "transfer-encoding":
                chunked = True
        if declared is None:
            return None, chunked
        if not (declared.isascii() and declared.isdigit()):
            raise HttpError(400, "content-length must be a number of bytes")
        if int(declared) > self.body_limit:
            raise self._too_large()
        return str(int(declared)), False

    def _too_large(self) -> HttpError:
        return HttpError(413, f"the request body is larger than the gateway route takes ({self.body_limit} bytes)")

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        target: Target,
        url: URL,
        headers: list[tuple[str, str]],
        declared: str | None,
        chunked: bool,
        outcome: _Outcome,
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        data: bytes | AsyncIterator[bytes] | None = None
        streamed = False
        if declared not in (None, "0") or chunked:
            # The first part of the body before the request: most bodies come whole in it.
            message = await receive()
            if message["type"] == "http.disconnect":
                outcome.client_gone = True
                return
            chunk: bytes = message.get("body", b"")
            more = message.get("more_body", False)
            if len(chunk) > self.body_limit:
                await self._refuse_too_large(scope, receive, send, outcome)
                return
            outcome.model.feed(chunk)
            if not more and len(chunk) <= ONE_WRITE:
                data = chunk
            else:
                data = self._body(receive, chunk, more, outcome, task)
                streamed = True
        outcome.body_whole = not streamed
        outcome.live = True
        try:
            if outcome.body_whole:
                self._watch(receive, outcome, task)
            await self._take_slot()
            try:
                await self._exchange(scope, receive, send, target, url, headers, declared, chunked, data, outcome)
            finally:
                self._slots.release()
        except PoolBusy as exc:
            await self._fail(scope, receive, send, target, exc, outcome)
        except asyncio.CancelledError:
            # Ours (the client left, or the gateway stopped taking the body) ends the request here;
            # anyone else's goes on up.
            if not outcome.interrupted or task.uncancel() > 0:
                raise
            if outcome.stalled:
                await self._fail(scope, receive, send, target, GatewaySilent(), outcome)
        finally:
            outcome.live = False
            if outcome.watcher is not None:
                outcome.watcher.cancel()
            if outcome.stall is not None:
                outcome.stall.cancel()

    async def _take_slot(self) -> None:
        if not self._slots.locked():
            await self._slots.acquire()  # returns at once, without a timer
            return
        try:
            async with asyncio.timeout(self.pool_wait):
                await self._slots.acquire()
        except TimeoutError:
            raise PoolBusy(self.connections) from None

    async def _body(
        self, receive: Receive, chunk: bytes, more: bool, outcome: _Outcome, task: asyncio.Task[None]
    ) -> AsyncIterator[bytes]:
        """The request body as the client sends it, its model peeked at on the way. aiohttp bounds
        no write, so each chunk the gateway does not take within the idle timeout ends the request."""
        loop = asyncio.get_running_loop()
        received = len(chunk)
        while True:
            if chunk:
                stall = loop.call_later(self.idle_timeout, self._interrupt, outcome, task, "stalled")
                try:
                    yield chunk
                finally:
                    stall.cancel()
            if not more:
                break
            message = await receive()
            if message["type"] == "http.disconnect":
                outcome.client_gone = True
                raise _ClientGone
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.body_limit:
                outcome.too_large = True
                raise _TooLarge
            outcome.model.feed(chunk)
            more = message.get("more_body", False)
        outcome.body_whole = True
        if outcome.live:
            # The last bytes and the body's end may still wait on the gateway, and aiohttp starts
            # its read timeout only once they are written: bounded here until the answer comes.
            outcome.stall = loop.call_later(self.idle_timeout, self._interrupt, outcome, task, "stalled")
            self._watch(receive, outcome, task)

    def _watch(self, receive: Receive, outcome: _Outcome, task: asyncio.Task[None]) -> None:
        """Once the body is whole, the only message left is the client's disconnect: it cancels the
        upstream request, whether its answer is awaited or streaming. One task, no task group: the
        hop pays for every object it makes."""
        outcome.watcher = asyncio.get_running_loop().create_task(_disconnect(receive))
        outcome.watcher.add_done_callback(partial(self._client_left, outcome, task))

    def _client_left(self, outcome: _Outcome, task: asyncio.Task[None], watcher: asyncio.Task[None]) -> None:
        if watcher.cancelled() or watcher.exception() is not None or outcome.complete:
            return
        self._interrupt(outcome, task, "client_gone")

    @staticmethod
    def _interrupt(outcome: _Outcome, task: asyncio.Task[None], why: str) -> None:
        if not outcome.live:
            return
        outcome.live = False
        outcome.interrupted = True
        if why == "stalled":
            outcome.stalled = True
        else:
            outcome.client_gone = True
        task.cancel()

    async def _exchange(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        target: Target,
        url: URL,
        headers: list[tuple[str, str]],
        declared: str | None,
        chunked: bool,
        data: bytes | AsyncIterator[bytes] | None,
        outcome: _Outcome,
    ) -> None:
        gateway = target.gateway.id
        proxy, proxy_headers = self._proxies[gateway]
        session = self._session or self._open()
        import aiohttp  # imported by _open
        started = self._clock()
        try:
            answer = await session.request(
                scope["method"],
                url,
                headers=request_headers(headers, target.gateway, declared_length=declared),
                data=data,
                chunked=chunked or None,
                allow_redirects=False,
                proxy=proxy,
                proxy_headers=proxy_headers,
            )
        except aiohttp.ClientError as exc:
            # The body's own ends first: aiohttp wraps what the body raised in its own error.
            if outcome.too_large:
                await self._refuse_too_large(scope, receive, send, outcome)
            elif not outcome.client_gone:
                await self._fail(scope, receive, send, target, exc, outcome)
            return
        if outcome.stall is not None:
            outcome.stall.cancel()  # the answer came: aiohttp's read timeout has taken over
        try:
            outcome.status = answer.status
            if answer.status in REDIRECTS and "location" in answer.headers:
                message = (
                    f"gateway {gateway!r} answered with a redirect (HTTP {answer.status}); not followed, "
                    "since the gateway's key would go with it"
                )
                outcome.error = message
                log.warning("gateway_proxy.redirect_refused", gateway=gateway, status=answer.status)
                await error_response(502, message)(scope, receive, send)
                return
            await self._relay(answer, send, target, outcome, started)
        finally:
            if outcome.complete and outcome.body_whole:
                answer.release()  # back to the pool
            else:
                answer.close()  # cut short: the connection is closed, never reused

    async def _fail(
        self, scope: Scope, receive: Receive, send: Send, target: Target, exc: BaseException, outcome: _Outcome
    ) -> None:
        error = failure(exc, target.gateway.id, self.idle_timeout, self.connect_timeout)
        outcome.error = error.message
        log.warning("gateway_proxy.failed", gateway=target.gateway.id, error=type(exc).__name__, status=error.status)
        if not outcome.answering:
            await error_response(error.status, error.message, error.headers)(scope, receive, send)

    async def _refuse_too_large(self, scope: Scope, receive: Receive, send: Send, outcome: _Outcome) -> None:
        outcome.recorded = False
        error = self._too_large()
        await error_response(error.status, error.message)(scope, receive, send)

    async def _relay(
        self, answer: aiohttp.ClientResponse, send: Send, target: Target, outcome: _Outcome, started: float
    ) -> None:
        """The gateway's answer, as it comes. An error answer (status 400 and up) has the gateway's
        secrets blanked, in case it echoes what it was sent; a good one passes untouched."""
        import aiohttp  # imported by _open, as the answer was asked

        headers = response_headers((k.decode("latin-1"), v.decode("latin-1")) for k, v in answer.raw_headers)
        redactor = self._redactors[target.gateway.id]
        failed = answer.status >= 400
        redacting = failed and bool(redactor) and not answer.headers.get("content-encoding")
        if redacting:
            headers = [(k, v) for k, v in headers if k != "content-length"]
        if redactor:
            headers = [(k, redactor.text(v)) for k, v in headers]
        outcome.answering = True
        await send(
            {
                "type": "http.response.start",
                "status": answer.status,
                "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers],
            }
        )
        stream = redactor.stream() if redacting else None
        head = bytearray()
        content = answer.content
        try:
            while chunk := await content.readany():
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
        except aiohttp.ClientError as exc:
            # Too late for an error answer: the connection is closed without the body's end, so
            # that the client knows it is cut short.
            error = failure(exc, target.gateway.id, self.idle_timeout, self.connect_timeout)
            outcome.error = error.message
            log.warning("gateway_proxy.answer_cut", gateway=target.gateway.id, error=type(exc).__name__)
            return
        finally:
            if failed:
                reason = reason_in(bytes(head), redactor.secrets)
                outcome.error = outcome.error or reason or f"HTTP {answer.status}"
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


class _ClientGone(Exception):
    """The client closed its connection before its request body was whole."""


class _TooLarge(Exception):
    pass


async def _disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def upstream_url(url: str) -> URL:
    """The target as target_of checked it, sent as it is (`encoded`: yarl would otherwise re-quote
    the path the gateway is to read)."""
    if not url.isascii():
        url = quote(url.encode("latin-1"), safe=URL_SAFE)
    return URL(url, encoded=True)


def env_proxy(api_base: str) -> tuple[URL | None, dict[str, str] | None]:
    """The HTTP proxy the environment names for a gateway (HTTP_PROXY, HTTPS_PROXY, NO_PROXY), read
    once, as httpx did for the route before and still does for the gateway's poll; and its
    credentials as a header (aiohttp deprecates its proxy_auth)."""
    url = URL(api_base)
    if url.host is None or proxy_bypass(url.host):
        return None, None
    named = getproxies().get(url.scheme)
    if not named:
        return None, None
    proxy = URL(named)
    if proxy.user is None:
        return proxy, None
    import aiohttp

    credentials = aiohttp.BasicAuth(proxy.user, proxy.password or "")
    return proxy.with_user(None), {"proxy-authorization": credentials.encode()}
