"""What can go wrong when asking a runtime for its models, as types a caller can catch.

Messages are safe to print and log: they name the runtime and what happened, never a key.
"""

from __future__ import annotations

from collections.abc import Iterable

import httpx

from sidecar.reasons import server_reason
from sidecar.retry import Transient

# The longest part of a server's own error message passed on to a caller.


class ModelsError(Exception):
    """The runtime could not give its model list. Every SDK error is one of these."""

    def __init__(self, runtime: str, message: str, *, status: int | None = None) -> None:
        super().__init__(f"{runtime}: {message}")
        self.runtime = runtime
        self.message = message
        self.status = status


class AuthenticationError(ModelsError):
    """The runtime refused the key (401), or the key may not list models (403)."""


class NotFoundError(ModelsError):
    """The runtime has no model list at that address (404): a wrong base URL, or an API version it lacks."""


class RateLimitedError(ModelsError, Transient):
    """Still 429 after the allowed retries, or asked to wait longer than the SDK may."""

    def __init__(self, runtime: str, message: str, *, status: int | None = 429, retry_after: float | None = None):
        super().__init__(runtime, message, status=status)
        self.retry_after = retry_after


class UnavailableError(ModelsError, Transient):
    """The runtime could not be reached, timed out, or failed (5xx), even after the allowed retries."""


class MalformedResponseError(ModelsError):
    """The runtime answered, but not with a model list this SDK understands."""


def error_for_status(
    runtime: str, response: httpx.Response, *, retry_after: float | None = None, secrets: Iterable[str] = ()
) -> ModelsError:
    """The typed error for a response that is not a success."""
    status = response.status_code
    reason = server_reason(response, secrets)
    detail = f"HTTP {status}" + (f": {reason}" if reason else "")
    if status in (401, 403):
        return AuthenticationError(runtime, f"the key was refused ({detail})", status=status)
    if status == 404:
        return NotFoundError(runtime, f"no model list at {where(response.request)} ({detail})", status=status)
    if status == 429:
        wait = f"; Retry-After {retry_after:g} s" if retry_after is not None else ""
        return RateLimitedError(runtime, f"rate limited ({detail}){wait}", retry_after=retry_after)
    if status >= 500 or status == 408:
        return UnavailableError(runtime, f"the server failed ({detail})", status=status)
    return ModelsError(runtime, f"unexpected answer ({detail})", status=status)


def where(request: httpx.Request) -> str:
    """The request's address without credentials or query, for messages."""
    url = request.url
    return str(url.copy_with(username=None, password=None, query=None, fragment=None))
