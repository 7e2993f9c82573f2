"""The sidecar's local HTTP API: the catalog in the Anthropic Models API shape, resolve, health and
status, the gateway route (gateway_proxy.py), the MCP server (mcp.py); every other path goes to the pass-through."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute

from sidecar.errors import HttpError
from sidecar.http.announce import ANNOUNCE_PATH, announce_endpoint
from sidecar.http.catalogs import catalog_endpoints
from sidecar.http.errors import EXCEPTION_HANDLERS
from sidecar.http.exposure import BrowserPolicy
from sidecar.http.guards import (
    OPEN_METHODS,
    OWN_BODY_LIMIT,
    RefuseAmbiguousLength,
    RefuseForeignBrowsers,
    RequireKey,
    limited,
)
from sidecar.http.fast_reads import FastReads, Page
from sidecar.http.mcp import McpOrOpencode
from sidecar.http.mcp_route import MCP_PATH
from sidecar.http.openapi import openapi_document
from sidecar.http.pages import AnswerCache, Prepared, page_of, parse_limit
from sidecar.http.passthrough_limits import FORWARDED_BODY_LIMIT
from sidecar.http.view import SidecarView

EVERY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def create_app(view: SidecarView, browsers: BrowserPolicy = BrowserPolicy()) -> FastReads:
    """`browsers`: which Host and Origin headers to serve. The default is a sidecar's beyond
    loopback without listed hosts (no Host check, the Origin check); the supervisor passes its own.
    The hot reads are answered in front of the Starlette app (fast_reads.py), past the same guards."""
    answers = AnswerCache()

    def models_page(page: Page) -> Prepared:
        limit, after_id, before_id = page
        catalog = view.models.catalog

        def build() -> dict[str, Any]:
            chosen = page_of(catalog, limit=limit, after_id=after_id, before_id=before_id).model_dump(mode="json")
            for entry in chosen["data"]:
                entry.update(view.statuses.of(entry["id"]) or {})
            return chosen

        return answers.prepared(catalog, ("page", limit, after_id, before_id), build, view.statuses.version)

    async def list_models(request: Request) -> Response:
        params = request.query_params
        after_id, before_id = params.get("after_id"), params.get("before_id")
        if after_id is not None and before_id is not None:
            raise HttpError(400, "after_id and before_id cannot be used together")
        body, _ = models_page((parse_limit(params.get("limit")), after_id, before_id))
        return Response(body, media_type="application/json")

    async def get_model(request: Request) -> Response:
        model_id = request.path_params["model_id"]
        model = view.models.catalog.get(model_id)
        if model is None:
            raise HttpError(404, f"model {model_id!r} is not listed by this sidecar")
        return JSONResponse({**model.model_dump(mode="json"), **(view.statuses.of(model_id) or {})})

    async def delete_model(request: Request) -> Response:
        model_id = request.path_params["model_id"]
        model = view.models.catalog.get(model_id)
        if model is None:
            raise HttpError(404, f"model {model_id!r} is not listed by this sidecar")
        if not model.registered:
            raise HttpError(409, f"model {model_id!r} is listed by the gateway; only registered models can be removed")
        await view.models.unregister(model_id)
        return JSONResponse({"id": model_id, "type": "model_deleted"})

    async def resolve_model(request: Request) -> Response:
        try:
            body = await request.json()
        except (ValueError, RecursionError):  # RecursionError: a body of thousands of nested `[`
            raise HttpError(400, "the body must be JSON") from None
        if not isinstance(body, dict) or "model" not in body:
            raise HttpError(400, 'the body must be an object with "model"')
        resolution = await view.resolver.resolve(body["model"], body.get("directory"))
        return JSONResponse(resolution.as_json())

    async def refresh(request: Request) -> Response:
        body = await request.body()
        gateway_id = None
        if body.strip():
            try:
                parsed = json.loads(body)
            except (ValueError, RecursionError):
                raise HttpError(400, "the body must be JSON") from None
            if not isinstance(parsed, dict) or set(parsed) - {"gateway"}:
                raise HttpError(400, 'the body must be an object with at most "gateway"')
            gateway_id = parsed.get("gateway")
            if gateway_id is not None and not isinstance(gateway_id, str):
                raise HttpError(400, '"gateway" must be a gateway\'s id')
        return JSONResponse(await view.refresher.refresh(gateway_id))

    async def forward(request: Request) -> Response:
        return await view.passthrough.forward(request)

    async def livez(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def metrics(_request: Request) -> Response:
        return Response(view.metrics(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def startupz(_request: Request) -> Response:
        if view.started():
            return JSONResponse({"status": "started"})
        return JSONResponse({"status": "starting"}, status_code=503)

    async def readyz(_request: Request) -> Response:
        report = view.readiness()
        return JSONResponse(report, status_code=200 if report["ready"] else 503)

    async def status(_request: Request) -> Response:
        return JSONResponse(view.status())

    document = openapi_document(protected=view.api_key is not None)

    async def openapi(_request: Request) -> Response:
        return JSONResponse(document)

    catalogs_index, one_catalog = catalog_endpoints(view.catalogs)

    own = OWN_BODY_LIMIT
    forwarded = limited(forward, FORWARDED_BODY_LIMIT)

    def probe(path: str, endpoint: Callable[[Request], Any]) -> Route:
        """A read-only path (the probes, the catalogs) takes every method, so that no method of it
        falls through to opencode."""

        async def only_reads(request: Request) -> Response:
            if request.method not in OPEN_METHODS:
                raise HttpError(
                    405, f"{request.url.path} answers GET and HEAD only", headers={"allow": "GET, HEAD"}
                )
            return await endpoint(request)

        return Route(path, limited(only_reads, own), methods=EVERY_METHOD)

    middleware = [
        Middleware(RefuseForeignBrowsers, policy=browsers),
        Middleware(RefuseAmbiguousLength),
        Middleware(RequireKey, api_key=view.api_key or None, gateway_token=view.gateways.token),
    ]
    app = Starlette(
        routes=[
            # opencode's model requests, to the real gateway with the real key; the app bounds and
            # streams its body itself. First, since they are most of the traffic (routes are tried
            # in order), and before the fallback, so that none of it reaches opencode.
            Route("/gateway", view.gateways, methods=EVERY_METHOD),
            Route("/gateway/{rest:path}", view.gateways, methods=EVERY_METHOD),
            # Every method, so that nothing at /mcp falls through to the fallback below unasked.
            Route(MCP_PATH, McpOrOpencode(view.mcp, forwarded), methods=EVERY_METHOD),
            Route("/v1/models", limited(list_models, own), methods=["GET"]),
            Route("/v1/models/resolve", limited(resolve_model, own), methods=["POST"]),
            Route("/v1/models/refresh", limited(refresh, own), methods=["POST"]),
            Route("/v1/models/{model_id:path}", limited(get_model, own), methods=["GET"]),
            Route("/v1/models/{model_id:path}", limited(delete_model, own), methods=["DELETE"]),
            probe("/v1/catalogs", catalogs_index),
            # `:path`, so that an id with a slash in it (`..%2f`) is this route's 404, never opencode's.
            probe("/v1/catalogs/{gateway_id:path}", one_catalog),
            probe("/livez", livez),
            probe("/readyz", readyz),
            probe("/startupz", startupz),
            probe("/metrics", metrics),
            Route("/openapi.json", limited(openapi, own), methods=["GET"]),
            Route("/v1/status", limited(status, own), methods=["GET"]),
            # Every method, so that none falls through to opencode with the token (guards.py lets it in).
            Route(ANNOUNCE_PATH, limited(announce_endpoint(view.instances), own), methods=EVERY_METHOD),
            Route("/{path:path}", forwarded, methods=EVERY_METHOD),
            # Every upgrade, past the same guards; the pass-through forwards opencode's terminals alone.
            WebSocketRoute("/{path:path}", view.websockets),
        ],
        middleware=middleware,
        exception_handlers=EXCEPTION_HANDLERS,
    )
    return FastReads(
        app,
        policy=browsers,
        api_key=view.api_key or None,
        gateway_token=view.gateways.token,
        models_page=models_page,
        readiness=view.readiness,
    )
