"""`POST /sidecar/instances`: an opencode instance names its directory as it boots.

opencode announces instance disposals but not loads, so a directory loaded by a read straight on
opencode's port (a TUI attached there, a script with the password) would never be reloaded. The
plugin the sidecar names in opencode's config (sidecar/opencode/plugin.py) posts each instance's
directory here. The route takes the internal token and nothing else (guards.py): opencode holds
it, a client with the API key has no business here. The directory is checked like any other
(sidecar/directories.py); a bad one is refused and nothing is tracked.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from starlette.requests import Request
from starlette.responses import Response

from sidecar.directories import InvalidDirectory, check_directory
from sidecar.errors import HttpError

ANNOUNCE_PATH = "/sidecar/instances"


class InstanceDirectories(Protocol):
    """Told of a directory opencode has loaded (sidecar.opencode.apply.Applier)."""

    def note_directory(self, directory: str) -> None: ...


def announce_endpoint(instances: InstanceDirectories) -> Callable[[Request], Awaitable[Response]]:
    async def announce(request: Request) -> Response:
        if request.method != "POST":
            raise HttpError(405, f"{ANNOUNCE_PATH} answers POST only", headers={"allow": "POST"})
        try:
            body = await request.json()
        except (ValueError, RecursionError):
            raise HttpError(400, "the body must be JSON") from None
        if not isinstance(body, dict) or set(body) != {"directory"}:
            raise HttpError(400, 'the body must be an object with "directory" alone')
        try:
            directory = check_directory(body["directory"])
        except InvalidDirectory as exc:
            raise HttpError(400, str(exc)) from None
        instances.note_directory(directory)
        return Response(status_code=204)

    return announce
