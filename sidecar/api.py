"""The sidecar's local HTTP API: the catalog in the Anthropic Models API shape, and health."""

from __future__ import annotations

import base64
import contextlib
import hmac
import secrets
import socket
from collections.abc import Callable
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sidecar.catalog import Catalog, ModelList
from sidecar.passthrough import Passthrough, PassthroughError
from sidecar.reconcile import Reconciler
from sidecar.resolve import ResolveError, Resolver

DEFAULT_LIMIT = 20
MAX_LIMIT = 1000

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    429: "rate_limit_error",
    503: "overloaded_error",
}


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def page_of(catalog: Catalog, *, limit: int, after_id: str | None, before_id: str | None) -> ModelList:
    """One page of the catalog, newest first, paginated by model id like Anthropic's API."""
    models = list(catalog)
    if after_id is not None:
        start = _position(catalog, after_id, "after_id") + 1
        chosen = models[start : start + limit]
        has_more = start + limit < len(models)
    elif before_id is not None:
        end = _position(catalog, before_id, "before_id")
        chosen = models[max(0, end - limit) : end]
        has_more = end - limit > 0
    else:
        chosen = models[:limit]
        has_more = limit < len(models)
    return ModelList(
        data=chosen,
        has_more=has_more,
        first_id=chosen[0].id if chosen else None,
        last_id=chosen[-1].id if chosen else None,
    )


def _position(catalog: Catalog, model_id: str, name: str) -> int:
    if model_id not in catalog:
        raise ApiError(400, f"{name} {model_id!r} is not the id of a listed model")
    return catalog.index(model_id)


def _parse_limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        raise ApiError(400, f"limit must be an integer from 1 to {MAX_LIMIT}") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise ApiError(400, f"limit must be an integer from 1 to {MAX_LIMIT}")
    return limit


def error_response(status: int, message: str) -> JSONResponse:
    request_id = f"req_{secrets.token_hex(12)}"
    body = {
        "type": "error",
        "error": {"type": ERROR_TYPES.get(status, "api_error"), "message": message},
        "request_id": request_id,
    }
    return JSONResponse(body, status_code=status, headers={"request-id": request_id})


class HealthView:
    """What the API asks of the rest of the sidecar; the supervisor fills it in."""

    def __init__(
        self,
        catalog: Callable[[], Catalog],
        readiness: Callable[[], dict[str, Any]],
        *,
        resolver: Resolver | None = None,
        reconciler: Reconciler | None = None,
        passthrough: Passthrough | None = None,
        api_key: str | None = None,
    ):
        self.catalog = catalog
        self.readiness = readiness
        self.resolver = resolver
        self.reconciler = reconciler
        self.passthrough = passthrough
        self.api_key = api_key


# Probes answer without a key, so that a kubelet needs none.
OPEN_PATHS = frozenset({"/livez", "/readyz"})


def authorised(request: Request, api_key: str) -> bool:
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


class RequireKey:
    """Plain ASGI, so that streamed answers (server-sent events) pass untouched."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self.api_key = api_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS:
            if not authorised(Request(scope), self.api_key):
                response = error_response(401, "missing or wrong API key (x-api-key, Bearer or Basic)")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(view: HealthView) -> Starlette:
    async def list_models(request: Request) -> Response:
        params = request.query_params
        after_id, before_id = params.get("after_id"), params.get("before_id")
        if after_id is not None and before_id is not None:
            raise ApiError(400, "after_id and before_id cannot be used together")
        page = page_of(
            view.catalog(), limit=_parse_limit(params.get("limit")), after_id=after_id, before_id=before_id
        )
        return JSONResponse(page.model_dump(mode="json"))

    async def get_model(request: Request) -> Response:
        model_id = request.path_params["model_id"]
        model = view.catalog().get(model_id)
        if model is None:
            raise ApiError(404, f"model {model_id!r} is not listed by this sidecar")
        return JSONResponse(model.model_dump(mode="json"))

    async def delete_model(request: Request) -> Response:
        model_id = request.path_params["model_id"]
        model = view.catalog().get(model_id)
        if model is None:
            raise ApiError(404, f"model {model_id!r} is not listed by this sidecar")
        if not model.registered:
            raise ApiError(409, f"model {model_id!r} is listed by the gateway; only registered models can be removed")
        assert view.reconciler is not None
        await view.reconciler.unregister(model_id)
        return JSONResponse({"id": model_id, "type": "model_deleted"})

    async def resolve_model(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            raise ApiError(400, "the body must be JSON") from None
        if not isinstance(body, dict) or "model" not in body:
            raise ApiError(400, 'the body must be an object with "model"')
        assert view.resolver is not None
        resolution = await view.resolver.resolve(body["model"], body.get("directory"))
        return JSONResponse(resolution.as_json())

    async def forward(request: Request) -> Response:
        if view.passthrough is None:
            raise ApiError(404, f"no route for {request.method} {request.url.path}")
        return await view.passthrough.forward(request)

    async def livez(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_request: Request) -> Response:
        report = view.readiness()
        return JSONResponse(report, status_code=200 if report["ready"] else 503)

    async def api_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, (ApiError, ResolveError, PassthroughError))
        return error_response(exc.status, exc.message)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            return error_response(404, f"no route for {request.method} {request.url.path}")
        if exc.status_code == 405:
            return error_response(405, f"method {request.method} is not allowed on {request.url.path}")
        return error_response(exc.status_code, str(exc.detail))

    async def server_error(_request: Request, _exc: Exception) -> Response:
        return error_response(500, "internal error in the sidecar; see its log")

    every_method = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    return Starlette(
        routes=[
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/v1/models/resolve", resolve_model, methods=["POST"]),
            Route("/v1/models/{model_id:path}", get_model, methods=["GET"]),
            Route("/v1/models/{model_id:path}", delete_model, methods=["DELETE"]),
            Route("/livez", livez, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/{path:path}", forward, methods=every_method),
        ],
        middleware=[Middleware(RequireKey, api_key=view.api_key)] if view.api_key else [],
        exception_handlers={
            ApiError: api_error,
            ResolveError: api_error,
            PassthroughError: api_error,
            HTTPException: http_error,
            Exception: server_error,
        },
    )


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind the API's listening socket ourselves, so that a taken port is a clear error, not an exit."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class ApiServer(uvicorn.Server):
    """uvicorn without its own signal handling: the supervisor owns signals and stops it."""

    def __init__(self, app: Starlette, sock: socket.socket) -> None:
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")
        super().__init__(config)
        self._sock = sock

    def capture_signals(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    async def run_until_stopped(self) -> None:
        await self.serve(sockets=[self._sock])
