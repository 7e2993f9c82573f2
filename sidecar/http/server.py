"""The API's listening socket and its server: uvicorn, its connections bounded and timed."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Awaitable, Callable

import anyio
import uvicorn
from starlette.applications import Starlette

from sidecar.http.connections import LISTEN_BACKLOG, ConnectionLimits, accept_batch
from sidecar.http.protocol_guard import ConnectionGuard, ignore_client_disconnect
from sidecar.http.websocket_passthrough import MAX_MESSAGE as WEBSOCKET_MAX_MESSAGE

# uvicorn's own loop wakes every 0.1 s to see whether it should stop and to renew its Date header
# once a second: idle, those ten wake-ups a second were a third of the sidecar's CPU. The supervisor
# stops the server by cancelling it, so once a second does all that loop is for.
TICK = 1.0


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
    connections are bounded and their requests timed by a ConnectionGuard (protocol_guard.py)."""

    def __init__(self, app: Starlette, sock: socket.socket, limits: ConnectionLimits = ConnectionLimits()) -> None:
        self.guard = ConnectionGuard(limits)
        config = uvicorn.Config(
            ignore_client_disconnect(app),
            log_config=None,
            access_log=False,
            lifespan="off",
            # Nobody is in front of us to trust: X-Forwarded-For from a local client would rename
            # the peer in our logs (uvicorn trusts it from 127.0.0.1 by default).
            proxy_headers=False,
            # A WebSocket message is refused past the relay's bound, before uvicorn buffers more
            # (its default is 16 MiB per message).
            ws_max_size=WEBSOCKET_MAX_MESSAGE,
            http=self.guard.protocol,  # type: ignore[arg-type]
            # asyncio accepts up to `backlog` connections per turn of its loop, and listens with it.
            backlog=accept_batch(limits.max_connections),
        )
        super().__init__(config)
        self._sock = sock

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self._sock.listen(LISTEN_BACKLOG)  # a longer queue in the kernel than the batch asyncio takes

    async def main_loop(self, *, sleep: Callable[[float], Awaitable[None]] = anyio.sleep) -> None:
        # on_tick renews the Date header when its counter is a multiple of 10: 0, every tick.
        while not await self.on_tick(0):
            await sleep(TICK)

    def capture_signals(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    async def run_until_stopped(self) -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(self.guard.run)
            await self.serve(sockets=[self._sock])
            group.cancel_scope.cancel()
