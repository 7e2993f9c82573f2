"""OpencodeClient against a small HTTP server of the test's own: what it costs opencode per call."""

from __future__ import annotations

import asyncio
import types

import httpcore._async.http11 as http11
import pytest

from sidecar.opencode.client import OpencodeClient
from sidecar.settings import Settings

pytestmark = pytest.mark.anyio

HEALTHY = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 16\r\n\r\n{"healthy":true}'


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_health_checks_at_the_default_interval_keep_one_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    # httpx's default keep-alive expiry was 5 s, the health interval too: every check found its
    # connection just expired and opened a new one, most of what a check cost us.
    clock = Clock()
    monkeypatch.setattr(http11, "time", types.SimpleNamespace(monotonic=clock.monotonic))
    connections = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(HEALTHY)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = OpencodeClient(f"http://127.0.0.1:{port}", "password")
    try:
        interval = Settings.model_fields["health_interval"].default
        for _ in range(3):
            assert await client.healthy()
            clock.now += interval + 0.5  # a little late, as a loaded machine is
    finally:
        await client.aclose()
        server.close()
        await server.wait_closed()
    assert connections == 1
