"""What a request must pass before a route sees it: Host and Origin (exposure.py decides), one
framing of its body, the key, and a bound on the body's bytes.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Callable
from typing import Any

from starlette.datastructures import Headers
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.routing import request_response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sidecar.errors import HttpError
from sidecar.http.announce import ANNOUNCE_PATH
from sidecar.http.errors import error_response
from sidecar.http.exposure import BrowserPolicy
from sidecar.http.gateway_request import in_gateway_zone
from sidecar.http.mcp_route import is_mcp_request

# Request bodies, counted as they arrive, never read whole first. The sidecar's own routes take a
# model name; what goes on to opencode may carry a prompt with files attached (FORWARDED_BODY_LIMIT,
# sidecar/http/passthrough_limits.py, which also bounds the prompts held at once).
OWN_BODY_LIMIT = 64 * 1024

# Probes answer without a key, so that a kubelet needs none; they only read, so only GET and HEAD.
OPEN_PATHS = frozenset({"/livez", "/readyz", "/startupz", "/metrics"})
OPEN_METHODS = frozenset({"GET", "HEAD"})


def authorised(request: HTTPConnection, api_key: str) -> bool:
    """`x-api-key`, `Authorization: Bearer`, HTTP Basic (any user), or opencode's `?auth_token=`."""
    offered: list[str] = []
    if "x-api-key" in request.headers:
        offered.append(request.headers["x-api-key"])
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        offered.append(credentials.strip())
    elif scheme.lower() == "basic":
        offered.append(_basic_password(credentials.strip()))
    if "auth_token" in request.query_params:
        offered.append(_basic_password(request.query_params["auth_token"]))
    return any(hmac.compare_digest(o.encode(), api_key.encode()) for o in offered)


def _basic_password(token: str) -> str:
    try:
        return base64.b64decode(token, validate=True).decode().partition(":")[2]
    except (ValueError, UnicodeDecodeError):
        return ""


async def refuse(scope: Scope, receive: Receive, send: Send, response: Response) -> None:
    """Answer instead of the app: over HTTP, or as the refused handshake of a websocket (with the
    body where the server can send one, a bare 403 where it can't)."""
    if scope["type"] == "websocket" and "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008})
        return
    await response(scope, receive, send)


def open_probe(scope: Scope) -> bool:
    return scope["type"] == "http" and scope["path"] in OPEN_PATHS and scope["method"] in OPEN_METHODS


def offers_token(request: HTTPConnection, token: str) -> bool:
    """The internal token, as opencode's providers send it: `Authorization: Bearer`
    (@ai-sdk/openai-compatible) or `x-api-key` (@ai-sdk/anthropic). Compared in constant time."""
    offered = request.headers.getlist("x-api-key")
    for value in request.headers.getlist("authorization"):
        scheme, _, credentials = value.partition(" ")
        if scheme.lower() == "bearer":
            offered.append(credentials.strip())
    return any(hmac.compare_digest(o.encode(), token.encode()) for o in offered)


class RequireKey:
    """Who may use which route: `/gateway/` paths (gateway_request.in_gateway_zone) take the
    internal token and nothing else, SIDECAR_API_KEY least of all, and so does the instance
    announcement (announce.ANNOUNCE_PATH); the MCP server (mcp.is_mcp_request) takes either, since
    opencode's agents reach it with the token; every other route takes the API key (when one is set)
    and never the token, which anyone with opencode's shell can read.
    Plain ASGI, so that streamed answers (server-sent events) pass untouched."""

    def __init__(self, app: ASGIApp, api_key: str | None, gateway_token: str) -> None:
        self.app = app
        self.api_key = api_key
        self.gateway_token = gateway_token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            refusal = self.refusal(scope)
            if refusal is not None:
                await refuse(scope, receive, send, error_response(401, refusal))
                return
        await self.app(scope, receive, send)

    def refusal(self, scope: Scope) -> str | None:
        connection = HTTPConnection(scope)
        if in_gateway_zone(scope["path"]):
            if scope["type"] == "http" and offers_token(connection, self.gateway_token):
                return None
            return "gateway routes take the sidecar's internal token (x-api-key or Bearer), and nothing else"
        if scope["path"] == ANNOUNCE_PATH:
            # opencode's instances name their directories here (announce.py): the token it holds.
            if scope["type"] == "http" and offers_token(connection, self.gateway_token):
                return None
            return "instance announcements take the sidecar's internal token, and nothing else"
        if offers_token(connection, self.gateway_token):
            if is_mcp_request(scope):
                return None
            return (
                "the internal token is for the gateway routes (/gateway/...), the MCP server (/mcp) and "
                "instance announcements only"
            )
        if open_probe(scope) or self.api_key is None or authorised(connection, self.api_key):
            return None
        return "missing or wrong API key (x-api-key, Bearer or Basic)"


class RefuseForeignBrowsers:
    """Before anything else, the key included: a web page must not reach a sidecar on loopback by
    DNS rebinding (a foreign Host), nor send requests to any sidecar from another site (Origin)."""

    def __init__(self, app: ASGIApp, policy: BrowserPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            headers = Headers(scope=scope)
            refusal = self.policy.refusal(headers.getlist("host"), headers.getlist("origin"))
            if refusal is not None:
                await refuse(scope, receive, send, error_response(403, refusal))
                return
        await self.app(scope, receive, send)


class RefuseAmbiguousLength:
    """Content-Length beside Transfer-Encoding is refused (RFC 9112 section 6.3): two framings of one
    body are how requests are smuggled past a proxy. llhttp (the server's parser) refuses them
    before any application runs; this stays for a server whose parser accepts them, as h11 did (it
    follows the chunks). The connection closes after the answer, since where this body ends is
    exactly what is in doubt."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = Headers(scope=scope)
            if "content-length" in headers and "transfer-encoding" in headers:
                response = error_response(
                    400, "a request may not have both Content-Length and Transfer-Encoding (RFC 9112 section 6.3)",
                    headers={"connection": "close"},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodyLimit:
    """One route's bound on its request body. A declared length over it is refused before a byte is
    read; a chunked body is counted as it arrives and refused as soon as it passes the bound."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = Request(scope).headers.get("content-length")
        if declared is not None:
            if not (declared.isascii() and declared.isdigit()):
                raise HttpError(400, "content-length must be a number of bytes")
            if int(declared) > self.limit:
                raise self.too_large()
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise self.too_large()
            return message

        await self.app(scope, counted, send)

    def too_large(self) -> HttpError:
        return HttpError(413, f"the request body is larger than this route takes ({self.limit} bytes)")


def limited(endpoint: Callable[[Request], Any], limit: int) -> ASGIApp:
    return BodyLimit(request_response(endpoint), limit)
