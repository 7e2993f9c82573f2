"""The API server's own loop: how often it wakes, and that it still renews the Date header and stops."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette

from sidecar.http.server import TICK, ApiServer, bind_socket

pytestmark = pytest.mark.anyio


async def test_the_server_loop_wakes_once_a_tick_renews_the_date_each_time_and_stops_when_asked() -> None:
    sock = bind_socket("127.0.0.1", 0)
    try:
        server = ApiServer(Starlette(), sock)
        slept: list[float] = []
        dates: list[list[tuple[bytes, bytes]]] = []

        async def sleep(seconds: float) -> None:
            slept.append(seconds)
            dates.append(server.server_state.default_headers)
            server.server_state.default_headers = []  # renewed by the next tick, not left from this one
            if len(slept) == 3:
                server.should_exit = True

        await server.main_loop(sleep=sleep)
    finally:
        sock.close()
    # uvicorn's own loop slept 0.1 s at a time: ten wake-ups a second.
    assert TICK >= 1.0 and slept == [TICK] * 3
    assert all(any(name == b"date" for name, _ in headers) for headers in dates)
