"""The sidecar's local HTTP API: the catalog in the Anthropic Models API shape, and health."""

from __future__ import annotations

import base64
import contextlib
import hmac
import secrets
import socket
from collections.abc import Callable
from typing import Any

import anyio
import uvicorn
from pydantic.json_schema import models_json_schema
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, request_response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sidecar.catalog import Catalog, ModelInfo, ModelList
from sidecar.exposure import BrowserPolicy
from sidecar.connections import LISTEN_BACKLOG, ConnectionLimits, accept_batch
from sidecar.http_guard import ConnectionGuard, ignore_client_disconnect
from sidecar.passthrough import FORWARDED_BODY_LIMIT, Passthrough, PassthroughError
from sidecar.reconcile import Reconciler
from sidecar.resolve import ResolveError, Resolver

DEFAULT_LIMIT = 20
MAX_LIMIT = 1000

# Request bodies, counted as they arrive, never read whole first. The sidecar's own routes take a
# model name; what goes on to opencode may carry a prompt with files attached (FORWARDED_BODY_LIMIT,
# sidecar/passthrough.py, which also bounds the prompts held at once).
OWN_BODY_LIMIT = 64 * 1024

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


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


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    request_id = f"req_{secrets.token_hex(12)}"
    body = {
        "type": "error",
        "error": {"type": ERROR_TYPES.get(status, "api_error"), "message": message},
        "request_id": request_id,
    }
    return JSONResponse(body, status_code=status, headers={**(headers or {}), "request-id": request_id})


STARTUP_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["status"],
    "properties": {"status": {"enum": ["started", "starting"]}},
}

STATUS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["ready", "models", "gateways", "opencode", "reloads", "state_dir"],
    "properties": {
        "ready": {"type": "boolean"},
        "models": {"type": "integer", "minimum": 0},
        "gateways": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": [
                    "models", "catalog_age", "stale", "last_poll_ok", "last_error", "last_success", "shrink_guard", "capped",
                ],
            },
        },
        "opencode": {"type": "object", "required": ["state", "pid", "healthy", "uptime", "restarts", "backoff_until"]},
        "reloads": {"type": "object", "required": ["config_version", "applied_version", "pending_reloads"]},
        "state_dir": {"type": "object", "required": ["path", "write_error"]},
    },
}


def openapi_document(*, protected: bool) -> dict[str, Any]:
    """The OpenAPI 3.1 description of the sidecar's own routes. The model schemas are the pydantic
    models' own, so the document cannot drift from what the API serves; `protected` says whether
    SIDECAR_API_KEY is set, and with it whether 401 can happen."""
    _, generated = models_json_schema(
        [(ModelList, "serialization"), (ModelInfo, "serialization")], ref_template="#/components/schemas/{model}"
    )
    # Answers are whole model_dump()s: every field is there, defaults included.
    schemas = {name: {**schema, "required": list(schema["properties"])} for name, schema in generated["$defs"].items()}
    schemas["Error"] = {
        "description": "An Anthropic API error.",
        "type": "object",
        "required": ["type", "error", "request_id"],
        "properties": {
            "type": {"const": "error"},
            "error": {
                "type": "object",
                "required": ["type", "message"],
                "properties": {
                    "type": {"enum": sorted({*ERROR_TYPES.values(), "api_error"})},
                    "message": {"type": "string"},
                },
            },
            "request_id": {"type": "string"},
        },
    }
    schemas["Resolution"] = {
        "description": "The model's record, and how opencode names it.",
        "allOf": [
            {"$ref": "#/components/schemas/ModelInfo"},
            {
                "type": "object",
                "required": ["opencode"],
                "properties": {"opencode": {"$ref": "#/components/schemas/OpencodeModel"}},
            },
        ],
    }
    schemas["OpencodeModel"] = {
        "type": "object",
        "required": ["providerID", "modelID"],
        "properties": {"providerID": {"type": "string"}, "modelID": {"type": "string"}},
    }
    schemas["ResolveRequest"] = {
        "type": "object",
        "required": ["model"],
        "properties": {
            "model": {
                "description": "As the agent names it: `name`, `provider/name`, or opencode's pair.",
                "oneOf": [{"type": "string"}, {"$ref": "#/components/schemas/OpencodeModel"}],
            },
            "directory": {"type": "string", "description": "The absolute path the agent works in."},
        },
        "example": {"model": "anthropic/claude-sonnet-4-5", "directory": "/work/project"},
    }
    schemas["ModelDeleted"] = {
        "type": "object",
        "required": ["id", "type"],
        "properties": {"id": {"type": "string"}, "type": {"const": "model_deleted"}},
    }
    schemas["Readiness"] = {
        "description": "What readiness depends on; more fields than `ready` may come and go.",
        "type": "object",
        "required": ["ready"],
        "properties": {"ready": {"type": "boolean"}},
    }

    def error(description: str) -> dict[str, Any]:
        return {
            "description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }

    def answer(description: str, schema: str | dict[str, Any]) -> dict[str, Any]:
        if isinstance(schema, str):
            schema = {"$ref": f"#/components/schemas/{schema}"}
        return {"description": description, "content": {"application/json": {"schema": schema}}}

    # Any request may come from a browser page of another site, or by DNS rebinding.
    forbidden = {"403": {"$ref": "#/components/responses/Forbidden"}}

    def operation(summary: str, responses: dict[str, Any], **more: Any) -> dict[str, Any]:
        if protected:
            responses = responses | {"401": {"$ref": "#/components/responses/Unauthorized"}}
        return {"summary": summary, "responses": responses | forbidden, **more}

    def probe(summary: str, responses: dict[str, Any]) -> dict[str, Any]:
        return {"summary": summary, "responses": responses | forbidden, "security": []}

    ref = {
        code: {"$ref": f"#/components/responses/{name}"}
        for code, name in [
            ("400", "BadRequest"),
            ("404", "NotFound"),
            ("409", "Conflict"),
            ("413", "TooLarge"),
            ("502", "BadGateway"),
        ]
    }
    model_id = {
        "name": "model_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": "A model id as listed; it may contain `/`.",
        "example": "claude-sonnet-4-5",
    }
    paths = {
        "/v1/models": {
            "get": operation(
                "The catalog, newest first, in the Anthropic Models API shape",
                {"200": answer("One page", "ModelList"), "400": ref["400"]},
                operationId="listModels",
                parameters=[
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
                    },
                    {
                        "name": "after_id",
                        "in": "query",
                        "schema": {"type": "string"},
                        "description": "The page after this model; not with before_id.",
                    },
                    {
                        "name": "before_id",
                        "in": "query",
                        "schema": {"type": "string"},
                        "description": "The page before this model; not with after_id.",
                    },
                ],
            )
        },
        "/v1/models/{model_id}": {
            "get": operation(
                "One model",
                {"200": answer("The model", "ModelInfo"), "404": ref["404"]},
                operationId="getModel",
                parameters=[model_id],
            ),
            "delete": operation(
                "Remove a registered model",
                {"200": answer("Removed", "ModelDeleted"), "404": ref["404"], "409": ref["409"]},
                operationId="deleteModel",
                parameters=[model_id],
            ),
        },
        "/v1/models/resolve": {
            "post": operation(
                "Normalise a model name, register it when the gateway doesn't list it, and wait until opencode can use it",
                {
                    "200": answer("Usable now", "Resolution"),
                    "400": ref["400"],
                    "409": ref["409"],
                    "413": ref["413"],
                    "502": ref["502"],
                },
                operationId="resolveModel",
                requestBody={
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ResolveRequest"}}},
                },
            )
        },
        "/v1/status": {
            "get": operation(
                "What the sidecar is doing",
                {"200": answer("The sidecar's state: each gateway's polls and catalog, opencode's process, the "
                               "reloads still to do, the state directory", STATUS_SCHEMA)},
                operationId="getStatus",
            )
        },
        "/openapi.json": {
            "get": operation("This document", {"200": answer("OpenAPI 3.1", {"type": "object"})}, operationId="getOpenapi")
        },
        "/livez": {
            "get": probe(
                "Liveness",
                {
                    "200": answer(
                        "Running", {"type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}}
                    )
                },
            )
        },
        "/readyz": {
            "get": probe("Readiness", {"200": answer("Ready", "Readiness"), "503": answer("Not ready", "Readiness")})
        },
        "/metrics": {
            "get": probe(
                "Prometheus metrics: polls, catalog sizes, config writes, reloads, aborted prompts, restarts, "
                "resolve latency, build info",
                {
                    "200": {
                        "description": "Prometheus text exposition format 0.0.4",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            )
        },
        "/startupz": {
            "get": probe(
                "Start-up: 200 once opencode's config is written (a pod starts opencode after it)",
                {
                    "200": answer("Config written", STARTUP_SCHEMA),
                    "503": answer("Not written yet", STARTUP_SCHEMA),
                },
            )
        },
    }
    components: dict[str, Any] = {
        "schemas": schemas,
        "responses": {
            "BadRequest": error("A bad parameter or body (invalid_request_error)"),
            "Unauthorized": error("Missing or wrong API key (authentication_error)"),
            "Forbidden": error(
                "A Host or Origin header this sidecar does not serve: a foreign name while it listens on "
                "loopback (DNS rebinding), or a page of another site; SIDECAR_ALLOWED_HOSTS and "
                "SIDECAR_ALLOWED_ORIGINS list more (permission_error)"
            ),
            "NotFound": error("No such model (not_found_error)"),
            "Conflict": error("Not possible in this state (invalid_request_error)"),
            "TooLarge": error(f"The body is over {OWN_BODY_LIMIT} bytes (request_too_large)"),
            "BadGateway": error("The gateway did not answer as it should (api_error)"),
        },
    }
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "opencode-sidecar",
            "version": "1",
            "description": (
                "The sidecar's own routes. Every other request is forwarded to opencode (bodies up to "
                f"{FORWARDED_BODY_LIMIT} bytes) and answered by opencode; see opencode's own `/doc`."
            ),
        },
        "paths": paths,
        "components": components,
    }
    if protected:
        components["securitySchemes"] = {
            "ApiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
            "Bearer": {"type": "http", "scheme": "bearer"},
            "Basic": {"type": "http", "scheme": "basic", "description": "Any user; the key is the password."},
        }
        document["security"] = [{"ApiKey": []}, {"Bearer": []}, {"Basic": []}]
    return document


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
        status: Callable[[], dict[str, Any]] | None = None,
        started: Callable[[], bool] | None = None,
        metrics: Callable[[], bytes] | None = None,
    ):
        self.catalog = catalog
        self.readiness = readiness
        self.status = status
        self.started = started or (lambda: True)
        self.metrics = metrics
        self.resolver = resolver
        self.reconciler = reconciler
        self.passthrough = passthrough
        self.api_key = api_key


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


class RequireKey:
    """Plain ASGI, so that streamed answers (server-sent events) pass untouched."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self.api_key = api_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and not open_probe(scope):
            if not authorised(HTTPConnection(scope), self.api_key):
                response = error_response(401, "missing or wrong API key (x-api-key, Bearer or Basic)")
                await refuse(scope, receive, send, response)
                return
        await self.app(scope, receive, send)


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
    body are how requests are smuggled past a proxy, and h11 accepts them (it follows the chunks).
    The connection closes after the answer, since where this body ends is exactly what is in doubt."""

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
                raise ApiError(400, "content-length must be a number of bytes")
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

    def too_large(self) -> ApiError:
        return ApiError(413, f"the request body is larger than this route takes ({self.limit} bytes)")


def limited(endpoint: Callable[[Request], Any], limit: int) -> ASGIApp:
    return BodyLimit(request_response(endpoint), limit)


class AnswerCache:
    """Encoded answers of one catalog: the catalog changes once per poll at most, and it is read
    far more often than that, so each page is serialised once per catalog, not once per request."""

    MAX_ENTRIES = 512

    def __init__(self) -> None:
        self._catalog: Catalog | None = None
        self._answers: dict[tuple[object, ...], bytes] = {}

    def get(self, catalog: Catalog, key: tuple[object, ...], build: Callable[[], Any]) -> Response:
        if catalog is not self._catalog or len(self._answers) >= self.MAX_ENTRIES:
            self._catalog, self._answers = catalog, {}
        body = self._answers.get(key)
        if body is None:
            body = self._answers[key] = JSONResponse(build()).body
        return Response(body, media_type="application/json")


def create_app(view: HealthView, browsers: BrowserPolicy = BrowserPolicy()) -> Starlette:
    """`browsers`: which Host and Origin headers to serve. The default is a sidecar's beyond
    loopback without listed hosts (no Host check, the Origin check); the supervisor passes its own."""
    answers = AnswerCache()

    async def list_models(request: Request) -> Response:
        params = request.query_params
        after_id, before_id = params.get("after_id"), params.get("before_id")
        if after_id is not None and before_id is not None:
            raise ApiError(400, "after_id and before_id cannot be used together")
        limit = _parse_limit(params.get("limit"))
        catalog = view.catalog()
        return answers.get(
            catalog,
            ("page", limit, after_id, before_id),
            lambda: page_of(catalog, limit=limit, after_id=after_id, before_id=before_id).model_dump(mode="json"),
        )

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
        except (ValueError, RecursionError):  # RecursionError: a body of thousands of nested `[`
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

    async def metrics(_request: Request) -> Response:
        if view.metrics is None:
            raise ApiError(404, "no metrics in this sidecar")
        return Response(view.metrics(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def startupz(_request: Request) -> Response:
        if view.started():
            return JSONResponse({"status": "started"})
        return JSONResponse({"status": "starting"}, status_code=503)

    async def readyz(_request: Request) -> Response:
        report = view.readiness()
        return JSONResponse(report, status_code=200 if report["ready"] else 503)

    async def status(_request: Request) -> Response:
        if view.status is None:
            raise ApiError(404, "no status in this sidecar")
        return JSONResponse(view.status())

    async def api_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, (ApiError, ResolveError, PassthroughError))
        return error_response(exc.status, exc.message, getattr(exc, "headers", None))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            return error_response(404, f"no route for {request.method} {request.url.path}")
        if exc.status_code == 405:
            return error_response(405, f"method {request.method} is not allowed on {request.url.path}")
        return error_response(exc.status_code, str(exc.detail))

    async def server_error(_request: Request, _exc: Exception) -> Response:
        return error_response(500, "internal error in the sidecar; see its log")

    document = openapi_document(protected=view.api_key is not None)

    async def openapi(_request: Request) -> Response:
        return JSONResponse(document)

    own = OWN_BODY_LIMIT
    every_method = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

    def probe(path: str, endpoint: Callable[[Request], Any]) -> Route:
        """A probe path takes every method, so that no method of it falls through to opencode."""

        async def only_reads(request: Request) -> Response:
            if request.method not in OPEN_METHODS:
                raise ApiError(
                    405, f"{request.url.path} answers GET and HEAD only", headers={"allow": "GET, HEAD"}
                )
            return await endpoint(request)

        return Route(path, limited(only_reads, own), methods=every_method)

    middleware = [Middleware(RefuseForeignBrowsers, policy=browsers), Middleware(RefuseAmbiguousLength)]
    if view.api_key:
        middleware.append(Middleware(RequireKey, api_key=view.api_key))
    return Starlette(
        routes=[
            Route("/v1/models", limited(list_models, own), methods=["GET"]),
            Route("/v1/models/resolve", limited(resolve_model, own), methods=["POST"]),
            Route("/v1/models/{model_id:path}", limited(get_model, own), methods=["GET"]),
            Route("/v1/models/{model_id:path}", limited(delete_model, own), methods=["DELETE"]),
            probe("/livez", livez),
            probe("/readyz", readyz),
            probe("/startupz", startupz),
            probe("/metrics", metrics),
            Route("/openapi.json", limited(openapi, own), methods=["GET"]),
            Route("/v1/status", limited(status, own), methods=["GET"]),
            Route("/{path:path}", limited(forward, FORWARDED_BODY_LIMIT), methods=every_method),
        ],
        middleware=middleware,
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
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and
    # without it every answer waits out the client's delayed ACK (about 40 ms on Linux).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class ApiServer(uvicorn.Server):
    """uvicorn without its own signal handling: the supervisor owns signals and stops it. Its
    connections are bounded and their requests timed by a ConnectionGuard (sidecar/http_guard.py)."""

    def __init__(self, app: Starlette, sock: socket.socket, limits: ConnectionLimits = ConnectionLimits()) -> None:
        self.guard = ConnectionGuard(limits)
        config = uvicorn.Config(
            ignore_client_disconnect(app),
            log_config=None,
            access_log=False,
            lifespan="off",
            http=self.guard.protocol,  # type: ignore[arg-type]
            # asyncio accepts up to `backlog` connections per turn of its loop, and listens with it.
            backlog=accept_batch(limits.max_connections),
        )
        super().__init__(config)
        self._sock = sock

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self._sock.listen(LISTEN_BACKLOG)  # a longer queue in the kernel than the batch asyncio takes

    def capture_signals(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    async def run_until_stopped(self) -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(self.guard.run)
            await self.serve(sockets=[self._sock])
            group.cancel_scope.cancel()
