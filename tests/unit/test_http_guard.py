"""The guard on uvicorn's real httptools protocol, fed bytes by hand, with a fake transport and an
injected clock: which connection is closed, and when."""

from __future__ import annotations

import asyncio

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from sidecar.http.connections import ConnectionLimits
from sidecar.http.protocol_guard import (
    MAX_HEAD_BYTES,
    SWEEP_GRAIN,
    ConnectionGuard,
    GuardedProtocol,
    ignore_client_disconnect,
    next_sweep,
)

pytestmark = pytest.mark.anyio


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeTransport(asyncio.Transport):
    def __init__(self, port: int) -> None:
        super().__init__()
        self.port = port
        self.written = b""
        self.closed = False
        self.aborted = False
        self.buffered = 0

    def get_extra_info(self, name: str, default=None):
        return {"peername": ("127.0.0.1", self.port), "sockname": ("127.0.0.1", 4097)}.get(name, default)

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return self.buffered


async def echo_body(request: Request) -> PlainTextResponse:
    return PlainTextResponse(str(len(await request.body())))


async def hello(_request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


APP = Starlette(routes=[Route("/livez", hello), Route("/upload", echo_body, methods=["POST"])])


def make_guard(max_connections: int = 3) -> tuple[ConnectionGuard, FakeClock, uvicorn.Config]:
    clock = FakeClock()
    guard = ConnectionGuard(ConnectionLimits(max_connections, header_timeout=10.0, body_timeout=30.0), clock=clock)
    config = uvicorn.Config(ignore_client_disconnect(APP), log_config=None, access_log=False, lifespan="off", http=guard.protocol)
    config.load()
    return guard, clock, config


def connect(guard: ConnectionGuard, config: uvicorn.Config, port: int) -> tuple[GuardedProtocol, FakeTransport]:
    protocol = guard.protocol(config, uvicorn.server.ServerState(), {})
    transport = FakeTransport(port)
    protocol.connection_made(transport)
    return protocol, transport


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def hang_up(*protocols: GuardedProtocol) -> None:
    """What the event loop does once a transport is closed; lets the application's tasks end."""
    for protocol in protocols:
        protocol.connection_lost(None)
    await settle()


async def test_half_a_request_line_is_closed_at_the_header_deadline() -> None:
    guard, clock, config = make_guard()
    protocol, transport = connect(guard, config, 1)
    protocol.data_received(b"GET /li")
    clock.now += 5
    protocol.data_received(b"v")  # a byte now and then does not buy time
    clock.now += 4.9
    guard.close_overdue()
    assert not transport.closed
    clock.now += 0.1
    guard.close_overdue()
    assert transport.closed and transport.written == b""


async def test_a_complete_request_is_answered_and_its_connection_waits_anew() -> None:
    guard, clock, config = make_guard()
    protocol, transport = connect(guard, config, 1)
    clock.now += 9
    protocol.data_received(b"GET /livez HTTP/1.1\r\nhost: x\r\n\r\n")
    await settle()
    assert transport.written.startswith(b"HTTP/1.1 200") and not transport.closed
    clock.now += 9.9  # the header clock restarted with the answer
    guard.close_overdue()
    assert not transport.closed
    clock.now += 0.1
    guard.close_overdue()
    assert transport.closed


async def test_at_the_bound_the_longest_waiting_is_evicted_and_the_probe_served() -> None:
    guard, clock, config = make_guard(max_connections=3)
    flood = []
    for port in range(3):
        protocol, transport = connect(guard, config, port)
        protocol.data_received(b"GET /li")
        flood.append(transport)
        clock.now += 1
    probe, probe_transport = connect(guard, config, 99)
    assert flood[0].closed and not flood[1].closed and not flood[2].closed
    probe.data_received(b"GET /livez HTTP/1.1\r\nhost: x\r\n\r\n")
    await settle()
    assert probe_transport.written.startswith(b"HTTP/1.1 200")


async def test_a_stalled_body_is_closed_after_the_body_timeout_and_progress_renews_it() -> None:
    guard, clock, config = make_guard()
    protocol, transport = connect(guard, config, 1)
    protocol.data_received(b"POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nabc")
    await settle()  # the application now waits for the rest
    clock.now += 20
    protocol.data_received(b"def")
    await settle()
    clock.now += 29.9
    guard.close_overdue()
    assert not transport.closed
    clock.now += 0.1
    guard.close_overdue()
    assert transport.closed and transport.written == b""
    protocol.connection_lost(None)
    await settle()  # the application sees the client gone, and nothing is logged as an error
    assert len(guard.table) == 0


async def test_a_body_the_application_has_not_taken_yet_is_not_the_clients_stall() -> None:
    guard, clock, config = make_guard()
    protocol, transport = connect(guard, config, 1)
    # No event-loop turn: the application has not started reading the body it was sent.
    protocol.data_received(b"POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\nexpect: 100-continue\r\n\r\n")
    clock.now += 31
    guard.close_overdue()
    assert not transport.closed
    assert not protocol.stalled_by_client()
    await hang_up(protocol)


async def test_a_client_that_stops_reading_its_answer_is_closed_after_the_body_timeout() -> None:
    guard, clock, config = make_guard()
    protocol, transport = connect(guard, config, 1)
    protocol.data_received(b"POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nab")
    protocol.pause_writing()  # the transport's buffer is full: the client does not read
    transport.buffered = 70_000
    clock.now += 30
    guard.close_overdue()
    assert transport.aborted  # close() would wait for the buffer to drain
    await hang_up(protocol)


async def test_when_every_connection_is_at_work_a_new_one_is_refused() -> None:
    guard, clock, config = make_guard(max_connections=2)
    working = []
    for port in range(2):
        protocol, _ = connect(guard, config, port)
        # Complete: the application is at work on it until its next turn of the loop.
        protocol.data_received(b"POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc")
        working.append(protocol)
    refused, transport = connect(guard, config, 3)
    assert transport.closed
    await hang_up(*working, refused)


async def test_a_head_longer_than_the_bound_is_431_and_closed_before_the_application_runs() -> None:
    guard, _clock, config = make_guard()
    protocol, transport = connect(guard, config, 1)
    protocol.data_received(b"GET /livez HTTP/1.1\r\nhost: x\r\n")
    filler = b"x-filler: " + b"a" * 1000 + b"\r\n"
    for _ in range(MAX_HEAD_BYTES // len(filler) + 1):
        if transport.closed:
            break
        protocol.data_received(filler)
    assert transport.written.startswith(b"HTTP/1.1 431 ") and b"connection: close" in transport.written
    assert transport.closed
    await hang_up(protocol)
    assert len(guard.table) == 0


async def test_a_head_within_the_bound_is_served_and_the_count_starts_anew_per_request() -> None:
    guard, _clock, config = make_guard()
    protocol, transport = connect(guard, config, 1)
    headers = b"x-filler: " + b"a" * (MAX_HEAD_BYTES // 2) + b"\r\n"
    for _ in range(3):  # together three times the bound, each request under it
        transport.written = b""
        protocol.data_received(b"GET /livez HTTP/1.1\r\nhost: x\r\n" + headers + b"\r\n")
        await settle()
        assert transport.written.startswith(b"HTTP/1.1 200"), transport.written[:60]
    assert not transport.closed
    await hang_up(protocol)


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"GET /livez HTTP/1.1\r\nhost: x\r\nbad header\r\n\r\n",
        b"GET /li vez HTTP/1.1\r\nhost: x\r\n\r\n",
    ],
    ids=["content-length-and-chunked", "header-without-colon", "space-in-target"],
)
async def test_a_malformed_request_is_400_and_closed_before_the_application_runs(request_bytes: bytes) -> None:
    guard, _clock, config = make_guard()
    protocol, transport = connect(guard, config, 1)
    protocol.data_received(request_bytes)
    await settle()
    assert transport.written.startswith(b"HTTP/1.1 400 ") and b"connection: close" in transport.written
    assert b"HTTP/1.1 200" not in transport.written  # /upload and /livez never ran
    assert transport.closed
    await hang_up(protocol)


async def test_body_bytes_never_count_against_the_head_bound() -> None:
    guard, _clock, config = make_guard()
    protocol, transport = connect(guard, config, 1)
    size = 4 * MAX_HEAD_BYTES
    protocol.data_received(b"POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % (2 * size))
    protocol.data_received(b"a" * size)
    await settle()
    # The read that ends the body also begins the next request's head.
    protocol.data_received(b"a" * size + b"GET /livez HTTP/1.1\r\n")
    protocol.data_received(b"host: x\r\n\r\n")
    await settle()
    assert transport.written.startswith(b"HTTP/1.1 200") and b"%d" % (2 * size) in transport.written
    assert transport.written.count(b"HTTP/1.1 200") == 2 and not transport.closed
    await hang_up(protocol)


def test_the_sweep_sleeps_to_the_first_deadline_within_the_shortest_timeout_and_at_least_a_grain() -> None:
    limits = ConnectionLimits(3, header_timeout=10.0, body_timeout=30.0)
    assert next_sweep(100.0, None, limits) == 10.0  # idle: one wake-up per header timeout
    assert next_sweep(100.0, 104.0, limits) == 4.0
    assert next_sweep(100.0, 125.0, limits) == 10.0  # what opens meanwhile is due no sooner
    assert next_sweep(100.0, 100.01, limits) == SWEEP_GRAIN
    assert next_sweep(100.0, 90.0, limits) == SWEEP_GRAIN


async def test_the_sweep_wakes_when_a_connection_falls_due_and_not_every_quarter_second() -> None:
    guard, clock, config = make_guard()
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 1:  # half a request line, 2 s into the first sleep
            clock.now += 2
            connect(guard, config, 50001)[0].data_received(b"GET /li")
            clock.now += seconds - 2
        else:
            clock.now += seconds
        if len(slept) == 3:
            raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await guard.run(sleep=sleep)
    # Idle, 10 s; then to the connection's header deadline (opened at 102: due at 112), where the
    # sweep closes it, and idle again.
    assert slept == [10.0, 2.0, 10.0]
    assert len(guard.table) == 0
