"""The OpenAPI 3.1 document of the sidecar's own routes (`GET /openapi.json`)."""

from __future__ import annotations

from typing import Any

from sidecar.http.catalogs import MAX_WAIT
from sidecar.http.guards import OWN_BODY_LIMIT
from sidecar.http.openapi_schemas import (
    CATALOG_INDEX_SCHEMA,
    CATALOG_SCHEMA,
    STARTUP_SCHEMA,
    STATUS_SCHEMA,
    component_schemas,
)
from sidecar.http.pages import DEFAULT_LIMIT, MAX_LIMIT
from sidecar.http.passthrough_limits import FORWARDED_BODY_LIMIT


def openapi_document(*, protected: bool) -> dict[str, Any]:
    """The OpenAPI 3.1 description of the sidecar's own routes; `protected` says whether
    SIDECAR_API_KEY is set, and with it whether 401 can happen."""
    schemas = component_schemas()

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
                "Match a model name to a listed model (or accept an unlisted one as SIDECAR_UNLISTED_MODELS says) "
                "and wait until opencode can use it",
                {
                    "200": answer("Usable now", "Resolution"),
                    "400": ref["400"],
                    "404": ref["404"],
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
        "/v1/models/refresh": {
            "post": operation(
                "Poll every gateway now (or one), and answer once opencode's idle directories have the result",
                {"200": answer("What each poll found", "Refresh"), "400": ref["400"], "404": ref["404"], "413": ref["413"]},
                operationId="refreshModels",
                requestBody={
                    "required": False,
                    "content": {"application/json": {"schema": {
                        "type": "object", "additionalProperties": False,
                        "properties": {"gateway": {"type": ["string", "null"], "description": "One gateway's id."}},
                    }}},
                },
            )
        },
        "/v1/status": {
            "get": operation(
                "What the sidecar is doing",
                {"200": answer("The sidecar's state: each gateway's polls and catalog, opencode's process, the "
                               "reloads still to do, the model requests forwarded to each gateway, the state "
                               "directory", STATUS_SCHEMA)},
                operationId="getStatus",
            )
        },
        "/v1/catalogs": {
            "get": operation(
                "Each gateway's served list: its version (null before a good list) and its number of models",
                {"200": answer("The gateways", CATALOG_INDEX_SCHEMA)},
                operationId="listCatalogs",
            )
        },
        "/v1/catalogs/{gateway_id}": {
            "get": operation(
                "One gateway's whole list for the sidecars that follow this one (fleet mode). ETag: the "
                "version; If-None-Match naming it answers 304, held with `wait` until the version changes "
                "(then 200) or the seconds pass (then 304)",
                {
                    "200": answer("The list", CATALOG_SCHEMA),
                    "304": {"description": "Not modified: If-None-Match names the current version"},
                    "400": ref["400"],
                    "404": error("No such gateway (not_found_error)"),
                    "503": error("The gateway has no good list yet; Retry-After says when to ask again (overloaded_error)"),
                },
                operationId="getCatalog",
                parameters=[
                    {"name": "gateway_id", "in": "path", "required": True, "schema": {"type": "string"},
                     "example": "litellm"},
                    {"name": "wait", "in": "query", "description": "Seconds to hold a 304 for a new version",
                     "schema": {"type": "number", "minimum": 0, "maximum": MAX_WAIT, "default": 0}},
                ],
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
                "resolve latency, model requests through the gateway route, build info",
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
