"""A gateway that answers too much, too slowly, or somewhere else: refused, in bounded time and memory."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import httpx
import pytest
from structlog.testing import capture_logs

from sidecar.gateway.client import (
    MAX_LIST_BYTES,
    MAX_LIST_OBJECTS,
    MAX_PROBE_BYTES,
    GatewayClient,
    GatewayError,
    ModelRejected,
)
from sidecar.gateway.config import load_gateways_file

pytestmark = pytest.mark.anyio

KEY = "sk-gw-secret"
CHUNK = b" " * (1024 * 1024)  # one megabyte, allocated once and sent again and again
FIFTY_MB = 50 * len(CHUNK)
MODELS = b'{"object": "list", "data": [{"id": "m1", "object": "model"}]}'


async def no_sleep(_delay: float) -> None:
    return None


def client(
    tmp_path: Path, handler: Callable, entry: str = "format = 'openai'", *, timeout: float = 10.0, retries: int = 0
) -> GatewayClient:
    path = tmp_path / "sidecar.toml"
    path.write_text(f"[[gateways]]\nid = 'gw'\nurl = 'http://gw'\napi_key_env = 'GW_KEY'\n{entry}\n")
    (gateway,) = load_gateways_file(path, default_poll_interval=30, environ={"GW_KEY": KEY})
    return GatewayClient(
        gateway, timeout=timeout, retries=retries, max_models=5_000, transport=httpx.MockTransport(handler), sleep=no_sleep
    )


class Counted(httpx.AsyncByteStream):
    """A body of `total` bytes in one-megabyte chunks, counting what was taken from it."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.sent < self.total:
            self.sent += len(CHUNK)
            yield CHUNK


class Dripping(httpx.AsyncByteStream):
    """A valid model list, one byte every `interval` seconds: each read is quick, the whole is not."""

    def __init__(self, interval: float) -> None:
        self.interval = interval

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for byte in MODELS:
            await anyio.sleep(self.interval)
            yield bytes([byte])


# --- Size --------------------------------------------------------------------------------------


async def test_a_50_mb_answer_is_refused_after_reading_no_more_than_the_bound(tmp_path: Path) -> None:
    body = Counted(FIFTY_MB)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=body)

    with pytest.raises(GatewayError, match=f"/v1/models: model list larger than {MAX_LIST_BYTES} bytes"):
        await client(tmp_path, handler).fetch_catalog()
    assert MAX_LIST_BYTES < body.sent <= MAX_LIST_BYTES + len(CHUNK)


async def test_a_declared_length_over_the_bound_is_refused_before_the_body_is_read(tmp_path: Path) -> None:
    body = Counted(FIFTY_MB)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-length": str(FIFTY_MB)}, stream=body)

    with pytest.raises(GatewayError, match="larger than"):
        await client(tmp_path, handler).fetch_catalog()
    assert body.sent == 0


async def test_a_list_of_too_many_tiny_entries_is_refused_before_it_is_decoded(tmp_path: Path) -> None:
    # Under the byte bound, but each decoded entry costs memory before the model cap applies.
    entries = ",".join(f'{{"id":"m{i:07d}"}}' for i in range(MAX_LIST_OBJECTS))
    body = f'{{"object":"list","data":[{entries}]}}'.encode()
    assert len(body) < MAX_LIST_BYTES

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body)

    with pytest.raises(GatewayError, match=f"model list of {MAX_LIST_OBJECTS + 1} JSON objects, more than the"):
        await client(tmp_path, handler).fetch_catalog()


async def test_a_list_at_the_object_bound_is_read(tmp_path: Path) -> None:
    entries = ",".join(f'{{"id":"m{i:07d}"}}' for i in range(MAX_LIST_OBJECTS - 1))
    body = f'{{"object":"list","data":[{entries}]}}'.encode()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body)

    catalog = await client(tmp_path, handler).fetch_catalog()
    assert len(catalog) > 0


async def test_a_probe_reads_no_more_than_its_bound_of_an_error_answer(tmp_path: Path) -> None:
    body = Counted(FIFTY_MB)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, stream=body)

    with pytest.raises(ModelRejected, match="HTTP 400"):
        await client(tmp_path, handler).probe("m1")
    assert body.sent <= MAX_PROBE_BYTES + len(CHUNK)


# --- Time --------------------------------------------------------------------------------------


async def test_a_dripping_body_times_out_as_a_whole_and_is_retried(tmp_path: Path) -> None:
    # Without a deadline for the whole request this list arrives, complete, after about 3 s.
    attempts = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal attempts
        attempts += 1
        return httpx.Response(200, stream=Dripping(interval=0.05))

    started = time.monotonic()
    with pytest.raises(GatewayError, match=r"^/v1/models timed out after 0\.2s$"):
        await client(tmp_path, handler, timeout=0.2, retries=1).fetch_catalog()
    assert time.monotonic() - started < 1.5
    assert attempts == 2  # a timeout is retryable


async def test_slow_headers_count_against_the_same_deadline(tmp_path: Path) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(3)
        return httpx.Response(200, content=MODELS)

    started = time.monotonic()
    with pytest.raises(GatewayError, match="timed out after 0.2s"):
        await client(tmp_path, handler, timeout=0.2).fetch_catalog()
    assert time.monotonic() - started < 1.5


async def test_a_dripping_probe_answer_times_out(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, stream=Dripping(interval=0.05))

    started = time.monotonic()
    with pytest.raises(GatewayError, match="the gateway could not be asked: timed out after 0.2s"):
        await client(tmp_path, handler, timeout=0.2).probe("m1")
    assert time.monotonic() - started < 1.5


async def test_a_list_within_the_deadline_is_read(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Dripping(interval=0))

    assert (await client(tmp_path, handler, timeout=5).fetch_catalog()).ids == ["m1"]


# --- Redirects ---------------------------------------------------------------------------------

REDIRECTS = [301, 302, 303, 307, 308]
ELSEWHERE = "http://elsewhere.example:9999/steal?token=x"


def redirecting(seen: list[httpx.Request], status: int, paths: set[str]) -> Callable:
    """A gateway that answers a plain list except on `paths`, which it redirects to another host."""

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path in paths:
            return httpx.Response(status, headers={"location": ELSEWHERE})
        if request.url.path == "/v1/models":
            return httpx.Response(200, content=MODELS)
        return httpx.Response(404)

    return handler


def assert_safe(message: str, status: int) -> None:
    assert f"redirected to another address (HTTP {status}); not followed" in message
    assert KEY not in message and "elsewhere" not in message and "token" not in message


@pytest.mark.parametrize("status", REDIRECTS)
async def test_a_redirected_list_is_not_followed(tmp_path: Path, status: int) -> None:
    seen: list[httpx.Request] = []
    gw = client(tmp_path, redirecting(seen, status, {"/v1/models"}))
    with pytest.raises(GatewayError) as caught:
        await gw.fetch_catalog()
    assert_safe(str(caught.value), status)
    assert str(caught.value).startswith("/v1/models ")
    assert {request.url.host for request in seen} == {"gw"}


@pytest.mark.parametrize("status", REDIRECTS)
async def test_a_redirected_model_info_is_not_followed_and_the_list_still_counts(tmp_path: Path, status: int) -> None:
    seen: list[httpx.Request] = []
    gw = client(tmp_path, redirecting(seen, status, {"/model/info"}), "format = 'litellm'")
    with capture_logs() as logs:
        catalog = await gw.fetch_catalog()
    assert catalog.ids == ["m1"]
    assert [request.url.path for request in seen] == ["/v1/models", "/model/info"]
    assert {request.url.host for request in seen} == {"gw"}
    (unavailable,) = [event for event in logs if event["event"] == "gateway.model_info_unavailable"]
    assert_safe(unavailable["error"], status)


@pytest.mark.parametrize("status", REDIRECTS)
@pytest.mark.parametrize("entry", ["format = 'openai'", "format = 'anthropic'"])
async def test_a_redirected_probe_is_not_followed(tmp_path: Path, status: int, entry: str) -> None:
    seen: list[httpx.Request] = []
    gw = client(tmp_path, redirecting(seen, status, {"/v1/chat/completions", "/v1/messages"}), entry)
    with pytest.raises(GatewayError) as caught:
        await gw.probe("m1")
    assert not isinstance(caught.value, ModelRejected)
    assert_safe(str(caught.value), status)
    assert len(seen) == 1 and seen[0].url.host == "gw"
