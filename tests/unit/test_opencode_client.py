"""OpencodeClient against a small HTTP server of the test's own: what it costs opencode per call."""

from __future__ import annotations

import asyncio
import json
import types

import httpcore._async.http11 as http11
import httpx
import pytest

from sidecar.opencode.client import OpencodeClient, OpencodeError
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


def providers_client(body: bytes) -> OpencodeClient:
    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/config/providers" and request.url.params["directory"] == "/p"
        return httpx.Response(200, content=body, headers={"content-type": "application/json"})

    return OpencodeClient("http://opencode", None, transport=httpx.MockTransport(answer))


MODEL = {"id": "x", "name": "X", "limit": {"context": 1000, "output": 100}, "cost": {"input": 1.5}, "options": {}}


@pytest.mark.parametrize(
    ("answer", "ids"),
    [
        # opencode's shape: only the ids are read, each model's record skipped.
        ({"providers": [{"id": "litellm", "name": "L", "models": {"a": MODEL, "b/c": MODEL}}, {"id": "o", "models": {}}],
          "default": {"litellm": "a"}}, {"litellm": {"a", "b/c"}, "o": set()}),
        ({"providers": [{"id": "litellm"}, {"id": "n", "models": None}]}, {"litellm": set(), "n": set()}),
        # Other shapes, read whole as before: what is not a provider with a string id is passed over.
        ({"providers": [{"id": "litellm", "models": {"a": MODEL}}, "junk", {"id": 7, "models": {"b": {}}}]},
         {"litellm": {"a"}}),
        ({"providers": [{"id": "litellm", "models": ["a", "b"]}]}, {"litellm": {"a", "b"}}),
    ],
)
async def test_the_model_ids_opencode_lists(answer: dict, ids: dict[str, set[str]]) -> None:
    client = providers_client(json.dumps(answer).encode())
    try:
        assert await client.provider_model_ids("/p") == ids
    finally:
        await client.aclose()


@pytest.mark.parametrize("body", [b'{"providers": {"id": "x"}}', b"[]", b"not json", b'{"other": []}'])
async def test_an_answer_without_a_provider_list_is_an_error(body: bytes) -> None:
    client = providers_client(body)
    try:
        with pytest.raises(OpencodeError):
            await client.provider_model_ids("/p")
    finally:
        await client.aclose()


async def test_a_lone_surrogate_in_a_model_record_reads_as_before() -> None:
    # JavaScript writes one escaped; orjson and msgspec refuse it where json takes it.
    body = b'{"providers": [{"id": "litellm", "models": {"a": {"name": "\\ud800"}}}]}'
    client = providers_client(body)
    try:
        assert await client.provider_model_ids("/p") == {"litellm": {"a"}}
    finally:
        await client.aclose()
