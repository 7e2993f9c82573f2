"""An answer's head goes out with its body in one write, and never later than one turn of the loop
(sidecar/http/head_with_body.py): on a recording transport, then on the real server and socket."""

from __future__ import annotations

import asyncio

import anyio
import pytest
from starlette.types import Receive, Scope, Send

from sidecar.http.head_with_body import HeadWithBody
from sidecar.http.server import ApiServer, bind_socket

pytestmark = pytest.mark.anyio

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n"


class Recording(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, tuple[bytes, ...]]] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.calls.append(("write", (bytes(data),)))

    def writelines(self, chunks) -> None:  # type: ignore[no-untyped-def]
        self.calls.append(("writelines", tuple(chunks)))

    def close(self) -> None:
        self.calls.append(("close", ()))
        self.closing = True

    def abort(self) -> None:
        self.calls.append(("abort", ()))
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0


async def next_turn() -> None:
    await asyncio.sleep(0)
    await asyncio.sleep(0)


async def test_a_head_and_the_body_written_after_it_go_out_in_one_write() -> None:
    transport = Recording()
    held = HeadWithBody(transport, asyncio.get_running_loop())
    held.write(HEAD)
    held.write(b"body")
    assert transport.calls == [("writelines", (HEAD, b"body"))]
    await next_turn()
    assert transport.calls == [("writelines", (HEAD, b"body"))]  # nothing left to send


async def test_a_head_without_a_body_yet_goes_out_at_the_next_turn_of_the_loop() -> None:
    transport = Recording()
    held = HeadWithBody(transport, asyncio.get_running_loop())
    held.write(HEAD)
    assert transport.calls == []
    await next_turn()
    assert transport.calls == [("write", (HEAD,))]
    held.write(b"body")
    assert transport.calls[-1] == ("write", (b"body",))


async def test_what_is_not_an_answers_head_is_written_at_once_and_in_order() -> None:
    transport = Recording()
    held = HeadWithBody(transport, asyncio.get_running_loop())
    held.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # the client waits for it before sending its body
    held.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\nno")
    assert transport.calls == [
        ("write", (b"HTTP/1.1 100 Continue\r\n\r\n",)),
        ("write", (b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\nno",)),
    ]


async def test_closing_sends_a_held_head_first_and_aborting_drops_it() -> None:
    transport = Recording()
    held = HeadWithBody(transport, asyncio.get_running_loop())
    held.write(HEAD)
    held.close()
    assert transport.calls == [("write", (HEAD,)), ("close", ())]
    aborted = Recording()
    held = HeadWithBody(aborted, asyncio.get_running_loop())
    held.write(HEAD)
    assert held.get_write_buffer_size() == len(HEAD)
    held.abort()
    await next_turn()
    assert aborted.calls == [("abort", ())]


async def test_on_the_real_server_a_streams_head_arrives_before_its_late_body() -> None:
    release = anyio.Event()

    async def stream(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await release.wait()
        await send({"type": "http.response.body", "body": b"late"})

    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = ApiServer(stream, sock)  # type: ignore[arg-type]
    async with anyio.create_task_group() as group:
        group.start_soon(server.run_until_stopped)
        while not server.started:
            await anyio.sleep(0.01)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        with anyio.fail_after(10):
            head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"transfer-encoding: chunked" in head
        release.set()
        with anyio.fail_after(10):
            assert await reader.readuntil(b"0\r\n\r\n") == b"4\r\nlate\r\n0\r\n\r\n"
        writer.close()
        server.should_exit = True
