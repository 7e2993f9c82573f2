"""The hot reads (`GET /v1/models`, `/livez`, `/readyz`) answered before Starlette's stack.

Starlette's middleware (three guards, each a class instance and a coroutine frame), its router
(tried route by route down to the pass-through's fallback), its Request and Response objects and
their headers took most of what a served page cost beyond the server itself (py-spy, bench/serving.py).
This front answers exactly those method and path pairs itself, and only when every guard of
guards.py would let the request through: the same Host and Origin verdict, no body framing, the
key where one is needed and no internal token. Anything else, a refusal included, goes to the
Starlette app unchanged, which answers it as before: the front can only answer a request the app
would have answered the same way, never refuse one or let one through that the app would not.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import QueryParams
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from sidecar.errors import HttpError
from sidecar.http.exposure import BrowserPolicy
from sidecar.http.guards import OPEN_METHODS, OPEN_PATHS
from sidecar.http.pages import Prepared, parse_limit

# A request head that declares a body is not a plain read: the app's guards decide on it
# (RefuseAmbiguousLength, BodyLimit).
_BODY_HEADERS = frozenset({b"content-length", b"transfer-encoding"})
# Distinct Host/Origin pairs and query strings remembered; a client that sends a new one each time
# only evicts its own. Only short ones: a head may be 64 KiB (protocol_guard.MAX_HEAD_BYTES), and
# 256 of those kept would be 16 MiB.
_REMEMBERED = 256
_SHORT = 512

Page = tuple[int, str | None, str | None]


def page_query(query_string: bytes) -> Page | None:
    """`(limit, after_id, before_id)` of a `/v1/models` query, read as Starlette reads it; None for
    a query the app must answer (an error)."""
    return _read_page_query(query_string) if len(query_string) > _SHORT else _remembered_page_query(query_string)


def _read_page_query(query_string: bytes) -> Page | None:
    params = QueryParams(query_string)
    after_id, before_id = params.get("after_id"), params.get("before_id")
    if after_id is not None and before_id is not None:
        return None
    try:
        limit = parse_limit(params.get("limit"))
    except HttpError:
        return None
    return limit, after_id, before_id


_remembered_page_query = functools.lru_cache(maxsize=_REMEMBERED)(_read_page_query)


class FastReads:
    """The ASGI application the server runs: the hot reads, else the Starlette app."""

    def __init__(
        self,
        app: Starlette,
        *,
        policy: BrowserPolicy,
        api_key: str | None,
        gateway_token: str,
        models_page: Callable[[Page], Prepared],
        readiness: Callable[[], dict[str, Any]],
    ) -> None:
        self.app = app
        self._api_key = api_key.encode() if api_key else None
        self._token = gateway_token.encode()
        self._models_page = models_page
        self._readiness = readiness
        self._livez = _prepared(JSONResponse({"status": "ok"}))
        self._policy = policy
        self._remembered_verdict = functools.lru_cache(maxsize=_REMEMBERED)(self._verdict)

    @property
    def routes(self) -> list[Any]:
        """The Starlette app's, for whoever lists what is served."""
        return self.app.routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in OPEN_METHODS:
            try:
                answer = self._answer(scope)
            except Exception:  # the app answers it, in its error shape, and logs it
                answer = None
            if answer is not None:
                status, headers, body = answer
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    def _answer(self, scope: Scope) -> tuple[int, list[tuple[bytes, bytes]], bytes] | None:
        path = scope["path"]
        if path != "/v1/models" and path not in OPEN_PATHS:
            return None
        hosts: list[str] = []
        origins: list[str] = []
        keys: list[str] = []
        authorizations: list[str] = []
        # Decoded and split exactly as guards.py does (latin-1, str.strip), so that a value reads
        # the same here as there.
        for name, value in scope["headers"]:
            if name == b"host":
                hosts.append(value.decode("latin-1"))
            elif name == b"origin":
                origins.append(value.decode("latin-1"))
            elif name == b"x-api-key":
                keys.append(value.decode("latin-1"))
            elif name == b"authorization":
                authorizations.append(value.decode("latin-1"))
            elif name in _BODY_HEADERS:
                return None
        if not self._browser_allowed(tuple(hosts), tuple(origins)):
            return None  # RefuseForeignBrowsers answers
        # RequireKey refuses the internal token everywhere but /gateway/, /mcp and announcements.
        bearers = [_bearer(value) for value in authorizations]
        if any(offered is not None and _same(offered, self._token) for offered in [*keys, *bearers]):
            return None
        if path == "/v1/models":
            page = page_query(scope["query_string"])
            if page is None:
                return None
            if self._api_key is not None and not self._key_offered(keys, bearers[:1]):
                # Basic, `?auth_token=`, a wrong key or none: RequireKey decides.
                return None
            try:
                body, headers = self._models_page(page)
            except HttpError:
                return None  # an after_id or before_id not listed: the app's 400
            return 200, headers, body
        if path == "/livez":
            body, headers = self._livez
            return 200, headers, body
        if path == "/readyz":
            report = self._readiness()
            body, headers = _prepared(JSONResponse(report))
            return (200 if report["ready"] else 503), headers, body
        return None  # /startupz and /metrics: rarely asked, the app answers

    def _browser_allowed(self, hosts: tuple[str, ...], origins: tuple[str, ...]) -> bool:
        """RefuseForeignBrowsers' verdict, remembered: nearly every request has the same headers."""
        if sum(map(len, hosts)) + sum(map(len, origins)) > _SHORT:
            return self._verdict(hosts, origins)
        return self._remembered_verdict(hosts, origins)

    def _verdict(self, hosts: tuple[str, ...], origins: tuple[str, ...]) -> bool:
        return self._policy.refusal(hosts, origins) is None

    def _key_offered(self, keys: list[str], first_authorization: list[str | None]) -> bool:
        """What guards.authorised compares: the first x-api-key, the first Authorization if it is
        Bearer. Either matching lets the app's check through too; Basic and `?auth_token=` are
        left to the app."""
        assert self._api_key is not None
        offered = keys[:1] + [value for value in first_authorization if value is not None]
        return any(_same(value, self._api_key) for value in offered)


def _bearer(authorization: str) -> str | None:
    scheme, _, credentials = authorization.partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else None


def _same(offered: str, secret: bytes) -> bool:
    return hmac.compare_digest(offered.encode(), secret)


def _prepared(response: JSONResponse) -> Prepared:
    return response.body, response.raw_headers
