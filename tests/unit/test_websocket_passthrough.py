"""The WebSocket relay between a real client and a stand-in opencode (a `websockets` server), under
uvicorn in this process: frames, close codes, back-pressure and bounds. The guards in front of it
and the real opencode behind it are tested in tests/security/test_terminal.py and
tests/integration/test_real_clients.py."""

from __future__ import annotations

import base64
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
import uvicorn
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.http11 import Request, Response

from sidecar.errors import HttpError
from sidecar.http.websocket_passthrough import WebSocketPassthrough, sendable, terminal_path

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

PTY = "pty_0123456789abcdefABCDEF"
# The kernel's buffers on the sockets a test makes: loopback TCP otherwise grows them to megabytes,
# which would hide how much the relay itself holds.
SOCKET_BUFFER = 64 * 1024
PASSWORD = "opencode-password-for-the-relay"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.parametrize(
    ("path", "status"),
    [
        (f"/pty/{PTY}/connect", None),
        (f"/api/pty/{PTY}/connect", None),
        ("/pty/pty_a/connect", None),
        ("/event", 404),
        ("/pty", 404),
        (f"/pty/{PTY}/connect/more", 404),
        (f"/pty/{PTY}", 404),
        (f"//pty/{PTY}/connect", 404),
        ("/pty/../event/connect", 404),
        ("/pty/..%2Fsession/connect", 400),
        (f"/pty/{PTY}%00/connect", 400),
        ("/pty/pty_/connect", 400),
        ("/pty/ses_123/connect", 400),
        ("/pty/pty_a-b/connect", 400),
        ("/pty//connect", 400),
        ("/pty/pty_" + "a" * 65 + "/connect", 400),
    ],
)
def test_only_opencode_terminal_routes_with_a_pty_id_go_on(path: str, status: int | None) -> None:
    if status is None:
        assert terminal_path(path) == path
    else:
        with pytest.raises(HttpError) as refused:
            terminal_path(path)
        assert refused.value.status == status


@pytest.mark.parametrize(
    ("code", "absent", "sent"),
    [(1000, 1000, 1000), (4001, 1000, 4001), (3000, 1000, 3000), (1005, 1000, 1000), (1006, 1001, 1001),
     (None, 1011, 1011), (1015, 1000, 1011), (1004, 1000, 1011), (2999, 1000, 1011), (5000, 1000, 1011)],
)
def test_close_codes_that_can_be_sent_pass_and_the_rest_are_named(code: int | None, absent: int, sent: int) -> None:
    assert sendable(code, absent=absent) == sent


class Opencode:
    """A stand-in opencode: records each handshake, then runs `behave` on the connection."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.closed: list[tuple[int | None, str | None]] = []
        self.behave: Callable[[ServerConnection], Awaitable[None]] = self.echo
        self.refuse: Response | None = None

    async def echo(self, ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    def process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        self.requests.append(request)
        return self.refuse

    async def handler(self, ws: ServerConnection) -> None:
        try:
            await self.behave(ws)
        except ConnectionClosed:
            pass
        finally:
            await ws.wait_closed()
            self.closed.append((ws.close_code, ws.close_reason))


def small_socket(listen: bool) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
    if listen:
        sock.bind(("127.0.0.1", 0))  # accepted sockets inherit the sizes
    return sock


def client_socket(url: str) -> socket.socket:
    sock = small_socket(listen=False)
    sock.connect(("127.0.0.1", int(url.split(":")[2].split("/")[0])))
    sock.setblocking(False)
    return sock


@asynccontextmanager
async def relay(opencode: Opencode, **kwargs: Any) -> AsyncIterator[tuple[str, WebSocketPassthrough]]:
    """The relay served by uvicorn on a free port, in front of `opencode`: yields its ws:// base."""
    listening = small_socket(listen=True)
    async with serve(opencode.handler, sock=listening, process_request=opencode.process_request, max_size=None) as upstream:
        port = upstream.sockets[0].getsockname()[1]
        app = WebSocketPassthrough(f"http://127.0.0.1:{port}", PASSWORD, [PASSWORD], max_websockets=kwargs.pop("max_websockets", 8), **kwargs)
        sock = small_socket(listen=True)
        server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off"))
        async with anyio.create_task_group() as group:
            group.start_soon(server.serve, [sock])
            while not server.started:
                await anyio.sleep(0.01)
            try:
                yield f"ws://127.0.0.1:{sock.getsockname()[1]}", app
            finally:
                server.should_exit = True


async def test_frames_pass_both_ways_with_opencode_password_and_without_the_callers_key() -> None:
    opencode = Opencode()
    async with relay(opencode) as (base, _):
        url = f"{base}/pty/{PTY}/connect?directory=/work//project/&cursor=-1&auth_token=c2VjcmV0"
        async with connect(url, additional_headers={"x-api-key": "the-callers-key", "origin": "http://127.0.0.1"}, proxy=None) as ws:
            await ws.send("echo hi\n")
            assert await ws.recv() == "echo hi\n"
            await ws.send(b"\x00\x01binary")
            assert await ws.recv() == b"\x00\x01binary"
    (request,) = opencode.requests
    assert request.headers["authorization"] == "Basic " + base64.b64encode(f"opencode:{PASSWORD}".encode()).decode()
    assert "x-api-key" not in request.headers and "origin" not in request.headers
    # The sidecar's key never goes on; the directory goes on in its one checked spelling.
    assert request.path == f"/pty/{PTY}/connect?cursor=-1&directory=%2Fwork%2Fproject"


async def test_close_codes_and_reasons_pass_both_ways() -> None:
    opencode = Opencode()
    async with relay(opencode) as (base, app):
        async with connect(f"{base}/pty/{PTY}/connect", proxy=None) as ws:
            await ws.send("x")
            await ws.recv()
            await ws.close(4001, "the client is done")
        with anyio.fail_after(5):
            while not opencode.closed:
                await anyio.sleep(0.01)
        assert opencode.closed == [(4001, "the client is done")]

        async def close_first(ws: ServerConnection) -> None:
            await ws.close(4002, "the pty exited")

        opencode.behave = close_first
        async with connect(f"{base}/pty/{PTY}/connect", proxy=None) as ws:
            with pytest.raises(ConnectionClosed):
                await ws.recv()
        assert (ws.close_code, ws.close_reason) == (4002, "the pty exited")
        with anyio.fail_after(5):
            while app.slots.open:
                await anyio.sleep(0.01)


async def test_opencode_refusal_passes_as_its_status_and_body() -> None:
    opencode = Opencode()
    opencode.refuse = Response(404, "Not Found", Headers(), b'{"name":"PtyNotFound"}')
    async with relay(opencode) as (base, app):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"{base}/pty/{PTY}/connect", proxy=None):
                pass
        assert refused.value.response.status_code == 404
        assert b"PtyNotFound" in refused.value.response.body
        assert app.slots.open == 0


async def test_an_opencode_that_is_not_there_is_a_502() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    app = WebSocketPassthrough(f"http://127.0.0.1:{port}", None, [], max_websockets=1)
    listen = socket.socket()
    listen.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off"))
    async with anyio.create_task_group() as group:
        group.start_soon(server.serve, [listen])
        while not server.started:
            await anyio.sleep(0.01)
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"ws://127.0.0.1:{listen.getsockname()[1]}/pty/{PTY}/connect", proxy=None):
                pass
        server.should_exit = True
    assert refused.value.response.status_code == 502 and app.slots.open == 0


async def test_a_client_that_does_not_read_holds_opencode_back() -> None:
    # opencode writes 400 messages of 64 KiB (25 MiB) to a client that reads none: the relay stops
    # reading opencode, whose own socket then backs up, long before all are sent.
    count, size = 400, 64 * 1024
    sent = 0
    backed_up = anyio.Event()

    async def flood(ws: ServerConnection) -> None:
        nonlocal sent
        for i in range(count):
            await ws.send(i.to_bytes(4, "big") + b"x" * (size - 4))
            sent += 1
            if ws.transport.get_write_buffer_size() > 0:
                backed_up.set()  # the kernel's buffers towards the relay are full
        await ws.wait_closed()

    opencode = Opencode()
    opencode.behave = flood
    async with relay(opencode) as (base, _):
        url = f"{base}/pty/{PTY}/connect"
        async with connect(url, proxy=None, max_size=None, max_queue=1, sock=client_socket(url)) as ws:
            with anyio.fail_after(10):
                await backed_up.wait()
            held = sent
            assert held < count / 2, f"opencode sent {held} of {count} messages to a client that read none"
            for i in range(count):  # then every message arrives, in order
                message = await ws.recv()
                assert message[:4] == i.to_bytes(4, "big") and len(message) == size


async def test_messages_past_the_bound_close_with_1009_either_way() -> None:
    opencode = Opencode()
    async with relay(opencode, max_message=1024) as (base, _):
        async with connect(f"{base}/pty/{PTY}/connect", proxy=None) as ws:
            await ws.send("é" * 512)  # 1,024 bytes of UTF-8: at the bound
            assert await ws.recv() == "é" * 512
            await ws.send("é" * 513)
            with pytest.raises(ConnectionClosed):
                await ws.recv()
        assert ws.close_code == 1009
        with anyio.fail_after(5):
            while not opencode.closed:
                await anyio.sleep(0.01)
        assert opencode.closed[0][0] == 1009

        async def too_big(ws: ServerConnection) -> None:
            await ws.send(b"z" * 1025)
            await ws.wait_closed()

        opencode.behave = too_big
        async with connect(f"{base}/pty/{PTY}/connect", proxy=None) as ws:
            with pytest.raises(ConnectionClosed):
                await ws.recv()
        assert ws.close_code == 1009


async def test_websockets_past_the_bound_are_refused_and_slots_given_back() -> None:
    opencode = Opencode()
    async with relay(opencode, max_websockets=2) as (base, app):
        url = f"{base}/pty/{PTY}/connect"
        async with connect(url, proxy=None), connect(url, proxy=None):
            with pytest.raises(InvalidStatus) as refused:
                async with connect(url, proxy=None):
                    pass
            assert refused.value.response.status_code == 503
            assert b"SIDECAR_MAX_WEBSOCKETS" in refused.value.response.body
        with anyio.fail_after(5):
            while app.slots.open:
                await anyio.sleep(0.01)
        async with connect(url, proxy=None) as ws:
            await ws.send("again")
            assert await ws.recv() == "again"
