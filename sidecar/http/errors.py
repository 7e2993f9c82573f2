"""Every error the API answers, in the Anthropic API's shape, whatever raised it."""

from __future__ import annotations

import secrets
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sidecar.errors import HttpError

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "request_too_large",
    431: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}


def error_document(status: int, message: str) -> dict[str, Any]:
    """The body of an error answer; also written by the server itself (protocol_guard.py) for a
    request refused before any application runs."""
    return {
        "type": "error",
        "error": {"type": ERROR_TYPES.get(status, "api_error"), "message": message},
        "request_id": f"req_{secrets.token_hex(12)}",
    }


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = error_document(status, message)
    return JSONResponse(body, status_code=status, headers={**(headers or {}), "request-id": body["request_id"]})


async def http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HttpError)
    return error_response(exc.status, exc.message, exc.headers)


async def starlette_error(request: Request, exc: Exception) -> Response:
    """Starlette's own: no route, or a method the route does not take."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return error_response(404, f"no route for {request.method} {request.url.path}")
    if exc.status_code == 405:
        return error_response(405, f"method {request.method} is not allowed on {request.url.path}")
    return error_response(exc.status_code, str(exc.detail))


async def server_error(_request: Request, _exc: Exception) -> Response:
    return error_response(500, "internal error in the sidecar; see its log")


EXCEPTION_HANDLERS = {HttpError: http_error, HTTPException: starlette_error, Exception: server_error}
