"""`GET /v1/catalogs[/{gateway_id}]`: each gateway's whole list for the sidecars that follow this
one (fleet mode), with its version as an ETag, 304 on a matching If-None-Match, and `?wait=SECONDS`
to hold that 304 until the version changes.

A held request costs an idle task and an entry on one Event per gateway (sidecar/served.py): no
timer loop and no encoding; its connection counts as busy in the connection table (it is neither
idle nor slow: the wait is ours), so it takes a place in SIDECAR_MAX_CONNECTIONS until answered.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable
from typing import Protocol

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sidecar.errors import HttpError
from sidecar.served import ServedGateway, ServedList

MAX_WAIT = 300.0
# Plain decimals only: no signs, exponents, `nan`, `inf` or digit separators to interpret.
_WAIT = re.compile(r"[0-9]{1,6}(\.[0-9]{1,6})?")
# While no poll has given a gateway a good list: when a follower may ask again.
RETRY_AFTER = "5"
MAX_SHOWN_ID = 64
# A follower sends one tag of ~36 bytes; the server's bound on a whole head (64 KiB, protocol_guard.py)
# can let more than that through in one read, so this header has a bound of its own.
MAX_IF_NONE_MATCH = 8 * 1024


class CatalogFeeds(Protocol):
    """The served lists (sidecar.served.ServedCatalogs)."""

    def get(self, gateway_id: str) -> ServedGateway | None: ...

    def index(self) -> list[dict[str, object]]: ...


class NoCatalogs:
    """No gateway served."""

    def get(self, gateway_id: str) -> ServedGateway | None:
        return None

    def index(self) -> list[dict[str, object]]:
        return []


def parse_wait(raw: str | None) -> float:
    if raw is None:
        return 0.0
    wait = float(raw) if _WAIT.fullmatch(raw) else math.nan
    if not 0 <= wait <= MAX_WAIT:
        raise HttpError(400, f"wait must be a number of seconds from 0 to {MAX_WAIT:g}")
    return wait


def matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an If-None-Match names `etag` (weakly compared, RFC 9110 section 13.1.2)."""
    if if_none_match is None:
        return False
    for tag in if_none_match.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


def _headers(served: ServedList) -> dict[str, str]:
    return {"etag": served.etag, "cache-control": "no-cache"}


def _answer(served: ServedList) -> Response:
    return Response(served.body, media_type="application/json", headers=_headers(served))


def _not_modified(served: ServedList) -> Response:
    return Response(status_code=304, headers=_headers(served))


async def _until_disconnect(request: Request) -> None:
    """Returns once the client has gone (its request has no body to read: GET and HEAD)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


Endpoint = Callable[[Request], Awaitable[Response]]


def catalog_endpoints(feeds: CatalogFeeds) -> tuple[Endpoint, Endpoint]:
    """The index of every gateway's version, and one gateway's list."""

    async def index(_request: Request) -> Response:
        return JSONResponse({"data": feeds.index()})

    async def one(request: Request) -> Response:
        gateway_id = request.path_params["gateway_id"]
        wait = parse_wait(request.query_params.get("wait"))
        feed = feeds.get(gateway_id)
        if feed is None:
            shown = gateway_id if len(gateway_id) <= MAX_SHOWN_ID else gateway_id[:MAX_SHOWN_ID] + "..."
            raise HttpError(404, f"no gateway {shown!r} on this sidecar")
        served = feed.current
        if served is None:
            raise HttpError(
                503, f"gateway {gateway_id!r} has no good list yet", headers={"retry-after": RETRY_AFTER}
            )
        if_none_match = request.headers.get("if-none-match")
        if if_none_match is not None and len(if_none_match) > MAX_IF_NONE_MATCH:
            raise HttpError(400, f"If-None-Match is longer than {MAX_IF_NONE_MATCH} bytes")
        if not matches(if_none_match, served.etag):
            return _answer(served)
        if wait <= 0:
            return _not_modified(served)
        newer: ServedList | None = None
        # One task beside the request's own: it ends the wait if the client goes first.
        async with anyio.create_task_group() as group:

            async def watch() -> None:
                await _until_disconnect(request)
                group.cancel_scope.cancel()

            group.start_soon(watch)
            with anyio.move_on_after(wait):
                newer = await feed.changed_from(served.version)
            group.cancel_scope.cancel()
        return _not_modified(served) if newer is None else _answer(newer)

    return index, one
