"""Catalog-only mode (SIDECAR_CATALOG_ONLY=true): a sidecar with no opencode at all, typically a
fleet's hub, serving the catalogs (/v1/models, /v1/catalogs, resolve, MCP's tools) and nothing of
opencode's. The stand-ins here take the places the supervisor fills with opencode's parts: no
process is started or watched, nothing waits on one, and opencode's routes answer 404.
"""

from __future__ import annotations

from typing import Any

import anyio
from anyio.abc import TaskStatus
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from sidecar.errors import HttpError
from sidecar.http.errors import error_response
from sidecar.http.guards import refuse
from sidecar.naming import ModelRef

NOT_HERE = "this sidecar runs in catalog-only mode (SIDECAR_CATALOG_ONLY): it has no opencode"


def refusal(path: str) -> str:
    return f"no route for {path[:128]!r}: {NOT_HERE}"


class NoOpencode:
    """The OpencodeHandle of catalog-only mode: never healthy, nothing to run or stop."""

    healthy = False
    generation = 0
    restarts = 0
    pid = None

    async def wait_healthy(self) -> None:
        await anyio.sleep_forever()

    def request_restart(self) -> None:
        pass  # settings refuse SIDECAR_RELOAD=restart in this mode

    def report(self) -> dict[str, Any]:
        return {"state": "catalog_only", "pid": None, "healthy": False, "uptime": None, "restarts": 0,
                "backoff_until": None}

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()

    async def stop(self) -> None:
        pass


class NoDirectories:
    """What the resolver asks of the applier: with no opencode, a model is usable once matched."""

    def __init__(self, default_directory: str) -> None:
        self.default_directory = default_directory

    async def wait_usable(self, directory: str, ref: ModelRef, timeout: float) -> bool:
        return True


class OpencodeRoutes:
    """The pass-through, the WebSocket relay and the gateway route of catalog-only mode: each
    request that passed the guards answers 404 naming the mode, and nothing is forwarded."""

    # The gateway route's token (guards.py lets only it into /gateway/): random, and handed to no
    # opencode here, so those paths are refused with 401 before they could reach this 404.
    def __init__(self, token: str) -> None:
        self.token = token

    async def forward(self, request: Request) -> Response:
        raise HttpError(404, refusal(request.url.path))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A WebSocket is refused before its handshake is accepted: a 404 where the server can send one.
        await refuse(scope, receive, send, error_response(404, refusal(scope["path"])))
