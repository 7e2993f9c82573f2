"""The one error a request can end in: an HTTP status, a message safe to show the caller, and the
headers that go with it (Retry-After, Allow).

Raised by the API's own routes and guards, by the pass-through and by the resolver, and answered in
one shape by sidecar/http/errors.py. It lives below both the HTTP package and the resolver so that
the resolver, which the HTTP package calls, does not import it back.
"""

from __future__ import annotations


class HttpError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
