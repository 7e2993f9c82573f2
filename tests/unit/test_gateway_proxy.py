"""The gateway route in process: its pure parts, and GatewayProxy in front of a real gateway (an
aiohttp server on a free loopback port), its client side driven through the app or as uvicorn drives it."""

from __future__ import annotations

import gzip
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import anyio
import httpx
import pytest
from aiohttp import web
from multidict import CIMultiDictProxy
from pydantic import SecretStr
from starlette.types import Message

from sidecar.errors import HttpError
from sidecar.http.gateway_proxy import GatewayProxy
from sidecar.http.gateway_request import (
    ModelPeek,
    credential_headers,
    in_gateway_zone,
    model_in,
    proxied_base_url,
    request_headers,
    response_headers,
    target_of,
)
from sidecar.http.routes import create_app
from sidecar.http.view import GatewayUpstream
from tests.support.api_view import view_of

TOKEN = "internal-token-0123456789abcdef0123456789abcdef"
API_KEY = "sidecar-api-key-0123456789abcdef0123456789abcdef"
REAL_KEY = "sk-real-gateway-key-42"
OPENAI = GatewayUpstream(
    id="litellm", api_base="http://gw.test:4000/v1", api_key=SecretStr(REAL_KEY), secrets=(REAL_KEY,)
)
ANTHROPIC = GatewayUpstream(
    id="claude",
    api_base="https://anthropic.test/v1",
    api_key=SecretStr("sk-ant-real"),
    anthropic=True,
    headers={"X-Team": "blue"},
    secrets=("sk-ant-real",),
)
GATEWAYS = {g.id: g for g in (OPENAI, ANTHROPIC)}
MIB = 1024 * 1024


# --- where a request goes -------------------------------------------------------------------


def test_the_path_under_v1_goes_under_the_api_base_with_its_query() -> None:
    target = target_of(b"/gateway/litellm/v1/chat/completions", b"beta=true", GATEWAYS)
    assert target.gateway is OPENAI
    assert target.url == "http://gw.test:4000/v1/chat/completions?beta=true"
    assert target_of(b"/gateway/claude/v1/messages", b"", GATEWAYS).url == "https://anthropic.test/v1/messages"
    assert target_of(b"/gateway/litellm/v1", b"", GATEWAYS).url == "http://gw.test:4000/v1"
    assert target_of(b"/gateway/litellm/v1/models/", b"", GATEWAYS).url == "http://gw.test:4000/v1/models/"


def test_the_rendered_base_url_lands_where_the_proxy_maps() -> None:
    base = proxied_base_url("http://127.0.0.1:4097/", "litellm")
    assert base == "http://127.0.0.1:4097/gateway/litellm/v1"
    # @ai-sdk/openai-compatible appends /chat/completions to it.
    path = httpx.URL(base + "/chat/completions").raw_path
    assert target_of(path, b"", GATEWAYS).url == "http://gw.test:4000/v1/chat/completions"


def test_an_unknown_gateway_is_404() -> None:
    with pytest.raises(HttpError) as refused:
        target_of(b"/gateway/nope/v1/chat/completions", b"", GATEWAYS)
    assert refused.value.status == 404 and "nope" in refused.value.message


@pytest.mark.parametrize("rest", ["key/generate", "model/info", "", "v2/chat"])
def test_nothing_outside_the_api_base_is_reachable(rest: str) -> None:
    # LiteLLM's key management lives at its root: the token must not mint keys with the real one.
    with pytest.raises(HttpError) as refused:
        target_of(f"/gateway/litellm/{rest}".encode(), b"", GATEWAYS)
    assert refused.value.status == 404


@pytest.mark.parametrize(
    "path",
    [
        b"/gateway/litellm/v1/../key/generate",
        b"/gateway/litellm/v1/%2e%2e/key/generate",
        b"/gateway/litellm/v1/%2E%2E/%2e%2e/admin",
        b"/gateway/litellm/v1/./models",
        b"/gateway/litellm/v1//evil.test/x",
        b"/gateway/litellm/v1/a%2fb",
        b"/gateway/litellm/v1/a%5cb",
        b"/gateway/litellm/v1/a\\b",
        b"/gateway/litellm/v1/a%00b",
        b"/gateway/../gateway/litellm/v1/models",
        b"/gateway//litellm/v1/models",
        b"/gateway/nope/v1/%2e%2e/x",  # refused as traversal before the id is looked up
    ],
)
def test_traversal_is_refused_with_400(path: bytes) -> None:
    with pytest.raises(HttpError) as refused:
        target_of(path, b"", GATEWAYS)
    assert refused.value.status == 400


def test_the_gateway_zone_is_the_prefix_alone() -> None:
    assert in_gateway_zone("/gateway/litellm/v1/x") and in_gateway_zone("/gateway") and in_gateway_zone("/gateway/")
    assert not in_gateway_zone("/gateways") and not in_gateway_zone("/v1/gateway/x")


# --- which headers go with it ---------------------------------------------------------------


def test_the_token_and_hop_by_hop_headers_are_replaced_by_the_real_key() -> None:
    incoming = [
        ("Authorization", f"Bearer {TOKEN}"),
        ("x-api-key", TOKEN),
        ("Connection", "keep-alive, X-Hop"),
        ("X-Hop", "1"),
        ("Keep-Alive", "timeout=5"),
        ("Transfer-Encoding", "chunked"),
        ("Host", "127.0.0.1:4097"),
        ("Content-Length", "12"),
        ("Accept-Encoding", "gzip"),
        ("Expect", "100-continue"),
        ("Content-Type", "application/json"),
        ("anthropic-version", "2023-06-01"),
        ("X-Team", "red"),  # a configured header of ANTHROPIC: the sidecar's value wins
    ]
    sent = request_headers(incoming, OPENAI, declared_length="12")
    assert sent == [
        ("content-type", "application/json"),
        ("anthropic-version", "2023-06-01"),
        ("x-team", "red"),
        ("content-length", "12"),
        ("accept-encoding", "identity"),
        ("authorization", f"Bearer {REAL_KEY}"),
    ]
    sent = dict(request_headers(incoming, ANTHROPIC, declared_length=None))
    assert sent["x-api-key"] == "sk-ant-real" and sent["x-team"] == "blue"
    assert "authorization" not in sent and "content-length" not in sent
    assert TOKEN not in json.dumps(sent)


def test_each_format_gets_its_key_where_it_wants_it() -> None:
    assert credential_headers(OPENAI) == {"authorization": f"Bearer {REAL_KEY}"}
    assert credential_headers(ANTHROPIC) == {"x-api-key": "sk-ant-real"}
    portkey = GatewayUpstream(id="pk", api_base="https://pk.test/v1", api_key=SecretStr("pk-1"), portkey=True)
    assert credential_headers(portkey) == {"authorization": "Bearer pk-1", "x-portkey-api-key": "pk-1"}
    assert credential_headers(GatewayUpstream(id="open", api_base="http://o.test/v1")) == {}


def test_answer_headers_lose_hop_by_hop_ones_and_keep_their_length() -> None:
    headers = response_headers(
        [("Content-Type", "text/event-stream"), ("Connection", "close, X-Drop"), ("X-Drop", "1"),
         ("Transfer-Encoding", "chunked"), ("Content-Length", "5"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]
    )
    assert headers == [("content-type", "text/event-stream"), ("content-length", "5"), ("set-cookie", "a=1"), ("set-cookie", "b=2")]


# --- which model it asks for ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "model"),
    [
        (b'{"model": "gpt-5", "messages": []}', "gpt-5"),
        (b' {\n "stream": true, "max_tokens": 12, "model":"claude-x", "messages": [{"role": "user", "content": "hi', "claude-x"),
        (b'{"model": "gpt-', None),
        (b'{"messages": [{"content": "a very long conversation', None),
        (b'{"messages": [], "model": 5}', "unknown"),
        (b'{"model": "' + b"x" * 500 + b'"}', "unknown"),
        (b'{"model": "a\\u0000b"}', "unknown"),
        (b'["model", "gpt-5"]', None),
        (b'{"options": {"model": "inner"}, "model": "outer"}', "outer"),
        (b'{"model": "caf\xc3\xa9", "x": "\xc3', "café"),
        (b"", None),
    ],
)
def test_the_model_is_read_from_the_first_bytes(head: bytes, model: str | None) -> None:
    assert model_in(head) == model


def test_the_peek_finds_the_model_across_chunks_and_stops_at_its_bound() -> None:
    peek = ModelPeek(limit=64)
    for chunk in (b'{"mo', b'del": "gp', b't-5", "messages": [', b"]}"):
        peek.feed(chunk)
    assert peek.model == "gpt-5"
    late = ModelPeek(limit=64)
    late.feed(b'{"messages": "' + b"x" * 100 + b'", "model": "late"}')
    assert late.model == "unknown"


# --- the proxy, in front of a real gateway on loopback ---------------------------------------


@dataclass
class Recorder:
    done: list[dict[str, Any]] = field(default_factory=list)

    def request_done(self, gateway: str, model: str, **outcome: Any) -> None:
        self.done.append({"gateway": gateway, "model": model, **outcome})


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Seen:
    """A request as the gateway received it."""

    method: str
    path: str
    headers: CIMultiDictProxy[str]
    raw_headers: tuple[tuple[bytes, bytes], ...]
    body: bytes = b""


def seen_of(request: web.BaseRequest, body: bytes = b"") -> Seen:
    return Seen(request.method, request.path_qs, request.headers, request.raw_headers, body)


Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


def answer_of(status: int, payload: Any = None, headers: dict[str, str] | None = None) -> web.Response:
    data = json.dumps(payload).encode() if payload is not None else b""
    return web.Response(status=status, body=data, headers={"content-type": "application/json", **(headers or {})})


def free_socket(backlog: int | None = None) -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    if backlog is not None:
        sock.listen(backlog)
    return sock


def upstreams_at(base: str) -> list[GatewayUpstream]:
    return [replace(OPENAI, api_base=base), replace(ANTHROPIC, api_base=base)]


@asynccontextmanager
async def proxy_of(
    handler: Handler, recorder: Recorder | None = None, host: str = "127.0.0.1", **kwargs: Any
) -> AsyncIterator[GatewayProxy]:
    """A GatewayProxy whose gateways (litellm, claude) are an aiohttp server on a free loopback port,
    answering with `handler`; the server cancels the handler when the proxy closes its connection."""
    runner = web.ServerRunner(web.Server(handler, handler_cancellation=True), handle_signals=False)
    await runner.setup()
    sock = free_socket()
    site = web.SockSite(runner, sock)
    await site.start()
    base = f"http://{host}:{sock.getsockname()[1]}/v1"
    proxy = GatewayProxy(upstreams_at(base), token=TOKEN, traffic=recorder or Recorder(), **kwargs)
    try:
        yield proxy
    finally:
        await proxy.aclose()
        await runner.cleanup()


def client_of(proxy: GatewayProxy, api_key: str | None = None) -> httpx.AsyncClient:
    app = create_app(view_of(gateways=proxy, api_key=api_key))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:4097")


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@pytest.mark.anyio
async def test_a_completion_goes_to_the_gateway_with_the_real_key_and_is_recorded() -> None:
    seen: list[Seen] = []
    clock = Clock()

    async def gateway(request: web.BaseRequest) -> web.StreamResponse:
        body = await request.read()
        seen.append(seen_of(request, body))
        clock.now += 0.25
        return answer_of(200, {"id": "chatcmpl-1", "echo": json.loads(body)})

    recorder = Recorder()
    async with proxy_of(gateway, recorder, clock=clock) as proxy, client_of(proxy) as client:
        answer = await client.post(
            "/gateway/litellm/v1/chat/completions?beta=true",
            json={"model": "gpt-5", "messages": [{"role": "user", "content": "hi"}]},
            headers={**bearer(), "x-custom": "kept"},
        )
    assert answer.status_code == 200 and answer.json()["echo"]["model"] == "gpt-5"
    (request,) = seen
    assert request.method == "POST" and request.path == "/v1/chat/completions?beta=true"
    assert request.headers["authorization"] == f"Bearer {REAL_KEY}" and request.headers["x-custom"] == "kept"
    assert TOKEN.encode() not in b"".join(k + v for k, v in request.raw_headers)
    # The client's own headers and the sidecar's, none of aiohttp's (its User-Agent, Accept-Encoding).
    assert request.headers["user-agent"].startswith("python-httpx/")
    assert request.headers.getall("accept-encoding") == ["identity"]
    assert request.headers["content-type"] == "application/json"
    assert request.headers["content-length"] == str(len(request.body))
    assert recorder.done == [
        {"gateway": "litellm", "model": "gpt-5", "status": 200, "first_byte": 0.25,
         "streamed_bytes": len(answer.content), "error": None, "cancelled": False}
    ]


@pytest.mark.anyio
async def test_the_path_goes_as_it_was_sent() -> None:
    paths: list[str] = []

    async def gateway(request: web.BaseRequest) -> web.StreamResponse:
        paths.append(request.raw_path)
        return answer_of(200, {})

    async with proxy_of(gateway) as proxy:
        for path in (b"/gateway/litellm/v1/models/a%41b%20c?x=%2F", b"/gateway/litellm/v1/models/caf\xc3\xa9"):
            client = Client([])
            scope = {**scope_of("", b"", []), "method": "GET", "path": path.decode("latin-1"), "raw_path": path}
            scope["raw_path"], _, scope["query_string"] = path.partition(b"?")
            await proxy(scope, client.receive, client.send)
            assert client.sent[0]["status"] == 200
    # Not re-quoted (%41 stays, not A); bytes beyond ASCII percent-encoded as the bytes they are.
    assert paths == ["/v1/models/a%41b%20c?x=%2F", "/v1/models/caf%C3%A9"]


@pytest.mark.anyio
async def test_a_cookie_the_gateway_sets_is_not_kept_for_later_requests() -> None:
    seen: list[Seen] = []

    async def gateway(request: web.BaseRequest) -> web.StreamResponse:
        seen.append(seen_of(request))
        return answer_of(200, {}, headers={"set-cookie": "affinity=node-7; Path=/"})

    # A host name, not an address: a cookie jar keeps no cookie of an IP address anyway.
    async with proxy_of(gateway, host="localhost") as proxy:
        async with client_of(proxy) as client:
            first = await client.post("/gateway/litellm/v1/chat/completions", json={}, headers=bearer())
        assert first.headers["set-cookie"].startswith("affinity=")  # the client's to keep, not ours
        async with client_of(proxy) as another:
            await another.post("/gateway/litellm/v1/chat/completions", json={}, headers=bearer())
    assert "cookie" not in seen[1].headers


@pytest.mark.anyio
async def test_the_anthropic_format_gets_x_api_key_and_the_configured_headers() -> None:
    seen: list[Seen] = []

    async def gateway(request: web.BaseRequest) -> web.StreamResponse:
        seen.append(seen_of(request))
        return answer_of(200, {"type": "message"})

    async with proxy_of(gateway) as proxy, client_of(proxy) as client:
        answer = await client.post(
            "/gateway/claude/v1/messages", json={"model": "claude-x"}, headers={"x-api-key": TOKEN}
        )
    assert answer.status_code == 200
    assert seen[0].headers["x-api-key"] == "sk-ant-real" and seen[0].headers["x-team"] == "blue"
    assert "authorization" not in seen[0].headers


@pytest.mark.anyio
async def test_the_gateways_errors_pass_as_they_are_with_its_key_blanked() -> None:
    async def gateway(request: web.BaseRequest) -> web.StreamResponse:
        return answer_of(
            429,
            {"error": {"message": f"rate limited for key {REAL_KEY}", "type": "rate_limit"}},
            headers={"retry-after": "7", "x-echo": REAL_KEY},
        )

    recorder = Recorder()
    async with proxy_of(gateway, recorder) as proxy, client_of(proxy) as client:
        answer = await client.post("/gateway/litellm/v1/chat/completions", json={"model": "m"}, headers=bearer())
    assert answer.status_code == 429 and answer.headers["retry-after"] == "7"
    assert answer.json() == {"error": {"message": "rate limited for key [redacted]", "type": "rate_limit"}}
    assert answer.headers["x-echo"] == "[redacted]"
    (done,) = recorder.done
    assert done["status"] == 429 and done["error"] == "rate limited for key [redacted]"


@pytest.mark.anyio
async def test_a_compressed_answer_passes_as_the_gateways_bytes() -> None:
    packed = gzip.compress(b'{"id": "chatcmpl-1"}')

    async def gateway(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(body=packed, headers={"content-type": "application/json", "content-encoding": "gzip"})

    recorder = Recorder()
    async with proxy_of(gateway, recorder) as proxy:
        client = Client([b"{}"])
        await proxy(scope_of("/gateway/litellm/v1/chat/completions", b"{}"), client.receive, client.send)
    assert client.body() == packed  # not inflated on the way
    assert (b"content-encoding", b"gzip") in client.sent[0]["headers"]
    assert recorder.done[0]["streamed_bytes"] == len(packed)


@pytest.mark.anyio
async def test_a_redirect_is_refused_never_followed() -> None:
    seen: list[str] = []

    async def gateway(request: web.BaseRequest) -> web.StreamResponse:
        seen.append(request.path)
        return answer_of(307, headers={"location": "http://elsewhere.test/steal"})

    async with proxy_of(gateway) as proxy, client_of(proxy) as client:
        answer = await client.post("/gateway/litellm/v1/chat/completions", json={"model": "m"}, headers=bearer())
    assert answer.status_code == 502 and "redirect" in answer.json()["error"]["message"]
    assert "elsewhere" not in answer.text
    assert seen == ["/v1/chat/completions"]


async def never_answers(request: web.BaseRequest) -> web.StreamResponse:
    await anyio.sleep_forever()
    raise AssertionError("unreachable")


async def hangs_up(request: web.BaseRequest) -> web.StreamResponse:
    assert request.transport is not None
    request.transport.close()
    await anyio.sleep_forever()
    raise AssertionError("unreachable")


async def speaks_nonsense(request: web.BaseRequest) -> web.StreamResponse:
    assert request.transport is not None
    request.transport.write(b"SMTP ready\r\n\r\n")
    await anyio.sleep_forever()
    raise AssertionError("unreachable")


@asynccontextmanager
async def dead_port() -> AsyncIterator[str]:
    """An address where nothing listens: the connection is refused."""
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    yield f"http://127.0.0.1:{port}/v1"


@asynccontextmanager
async def full_backlog() -> AsyncIterator[str]:
    """A socket that listens and never accepts, its backlog full: a connection is never made."""
    with free_socket(backlog=0) as sock, socket.create_connection(sock.getsockname()):
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("gateway", "status", "words"),
    [
        (dead_port, 502, "not reachable"),
        (full_backlog, 504, "did not accept a connection within 0.3 s"),
        (never_answers, 504, "silent for 0.3 s"),
        (hangs_up, 502, "closed the connection"),
        (speaks_nonsense, 502, "not HTTP/1.1"),
    ],
)
async def test_a_failed_connection_is_an_anthropic_shaped_error_naming_the_gateway(
    gateway: Any, status: int, words: str
) -> None:
    recorder = Recorder()
    timeouts = {"idle_timeout": 0.3, "connect_timeout": 0.3}
    async with AsyncExitStack() as stack:
        if gateway in (dead_port, full_backlog):
            base = await stack.enter_async_context(gateway())
            proxy = GatewayProxy(upstreams_at(base), token=TOKEN, traffic=recorder, **timeouts)
            stack.push_async_callback(proxy.aclose)
        else:
            proxy = await stack.enter_async_context(proxy_of(gateway, recorder, **timeouts))
        client = await stack.enter_async_context(client_of(proxy))
        with anyio.fail_after(5):
            answer = await client.post("/gateway/litellm/v1/chat/completions", json={"model": "m"}, headers=bearer())
    assert answer.status_code == status
    body = answer.json()
    assert body["type"] == "error" and words in body["error"]["message"] and "'litellm'" in body["error"]["message"]
    assert REAL_KEY not in answer.text
    assert recorder.done[0]["status"] is None and words in recorder.done[0]["error"]


@pytest.mark.anyio
async def test_a_request_waits_for_a_free_connection_a_bounded_time() -> None:
    asked = anyio.Event()
    release = anyio.Event()

    async def gateway(request: web.BaseRequest) -> web.StreamResponse:
        asked.set()
        await release.wait()
        return answer_of(200, {})

    recorder = Recorder()
    async with proxy_of(gateway, recorder, connections=1, pool_wait=0.2) as proxy, client_of(proxy) as client:
        async with anyio.create_task_group() as group:
            group.start_soon(partial(client.post, "/gateway/litellm/v1/chat/completions", json={}, headers=bearer()))
            await asked.wait()
            with anyio.fail_after(5):
                busy = await client.post("/gateway/litellm/v1/chat/completions", json={}, headers=bearer())
            release.set()
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
        assert "all 1 connections" in busy.json()["error"]["message"]
        # The slot is given back: the next request goes through.
        assert (await client.post("/gateway/litellm/v1/chat/completions", json={}, headers=bearer())).status_code == 200


@pytest.mark.anyio
async def test_refusals_of_the_sidecar_never_reach_the_gateway() -> None:
    seen: list[Seen] = []

    async def gateway(request: web.BaseRequest) -> web.StreamResponse:
        seen.append(seen_of(request))
        return web.Response()

    recorder = Recorder()
    async with proxy_of(gateway, recorder, body_limit=1024) as proxy:
        async with client_of(proxy, api_key=API_KEY) as client:
            assert (await client.get("/gateway/nope/v1/models", headers=bearer())).status_code == 404
            assert (await client.get("/gateway/litellm/key/generate", headers=bearer())).status_code == 404
            assert (await client.get("/gateway/litellm/v1/%2e%2e/key/generate", headers=bearer())).status_code == 400
            assert (await client.get("/gateway", headers=bearer())).status_code == 404
            too_big = await client.post("/gateway/litellm/v1/chat/completions", content=b"x" * 2048, headers=bearer())
            assert too_big.status_code == 413

            async def chunked() -> AsyncIterator[bytes]:
                for _ in range(4):
                    yield b"y" * 512

            streamed = await client.post("/gateway/litellm/v1/chat/completions", content=chunked(), headers=bearer())
            assert streamed.status_code == 413
            # The credentials: the token alone opens the gateway routes, and opens nothing else.
            assert (await client.get("/gateway/litellm/v1/models")).status_code == 401
            assert (await client.get("/gateway/litellm/v1/models", headers=bearer("wrong"))).status_code == 401
            assert (await client.get("/gateway/litellm/v1/models", headers=bearer(API_KEY))).status_code == 401
            assert (await client.get("/gateway/litellm/v1/models", headers={"x-api-key": API_KEY})).status_code == 401
            basic = httpx.BasicAuth("opencode", TOKEN)
            assert (await client.get("/gateway/litellm/v1/models", auth=basic)).status_code == 401
            assert (await client.get(f"/gateway/litellm/v1/models?auth_token={TOKEN}")).status_code == 401
            elsewhere = await client.get("/v1/models", headers=bearer())
            assert elsewhere.status_code == 401 and "gateway routes" in elsewhere.json()["error"]["message"]
            assert (await client.get("/v1/models", headers={"x-api-key": API_KEY})).status_code == 200
        assert seen == [] and recorder.done == []
        async with client_of(proxy) as keyless:  # no API key set: the token still opens nothing else
            assert (await keyless.get("/v1/models", headers={"x-api-key": TOKEN})).status_code == 401
            assert (await keyless.get("/v1/models")).status_code == 200


@pytest.mark.anyio
async def test_a_chunked_body_streams_up_and_its_model_is_peeked() -> None:
    received: list[bytes] = []

    async def gateway(request: web.BaseRequest) -> web.StreamResponse:
        assert "content-length" not in request.headers and request.headers["transfer-encoding"] == "chunked"
        async for chunk in request.content.iter_any():
            received.append(chunk)
        return answer_of(200, {})

    async def body() -> AsyncIterator[bytes]:
        yield b'{"model": "stre'
        yield b'amed", "messages": ['
        yield b"]}"

    recorder = Recorder()
    async with proxy_of(gateway, recorder) as proxy, client_of(proxy) as client:
        answer = await client.post("/gateway/litellm/v1/chat/completions", content=body(), headers=bearer())
    assert answer.status_code == 200
    assert b"".join(received) == b'{"model": "streamed", "messages": []}'
    assert recorder.done[0]["model"] == "streamed"


# --- streaming and cancellation, driven as uvicorn drives the app ---------------------------


class Client:
    """The ASGI side of one request: its body messages, then its disconnect when the test says."""

    def __init__(self, body: list[bytes]) -> None:
        self.messages: list[Message] = [
            {"type": "http.request", "body": chunk, "more_body": i < len(body) - 1} for i, chunk in enumerate(body)
        ]
        self.gone = anyio.Event()
        self.sent: list[Message] = []
        self.got_body = anyio.Event()

    async def receive(self) -> Message:
        if self.messages:
            return self.messages.pop(0)
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.sent.append(message)
        if message["type"] == "http.response.body" and message["body"]:
            self.got_body.set()

    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")


def scope_of(path: str, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    if headers is None:
        headers = [(b"content-length", str(len(body)).encode())]
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:4097"), *headers],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 4097),
    }


@pytest.mark.anyio
async def test_a_chunked_body_stays_chunked_and_no_header_is_added_but_the_sidecars() -> None:
    seen: list[Seen] = []

    async def gateway(request: web.BaseRequest) -> web.StreamResponse:
        seen.append(seen_of(request, await request.read()))
        return answer_of(200, {})

    client = Client([b'{"model": "whole"}'])  # all of it in one message, as a small body comes
    scope = scope_of("/gateway/litellm/v1/chat/completions", b"", [(b"transfer-encoding", b"chunked")])
    async with proxy_of(gateway) as proxy:
        with anyio.fail_after(5):
            await proxy(scope, client.receive, client.send)
    assert client.sent[0]["status"] == 200
    (request,) = seen
    assert request.body == b'{"model": "whole"}'
    assert request.headers["transfer-encoding"] == "chunked" and "content-length" not in request.headers
    # What the gateway gets is the client's headers and the sidecar's, nothing of aiohttp's own.
    names = [name.lower() for name, _ in request.headers.items()]
    assert sorted(names) == ["accept-encoding", "authorization", "host", "transfer-encoding"]
    assert request.headers["accept-encoding"] == "identity"


@pytest.mark.anyio
async def test_events_are_passed_as_they_come_and_the_clients_leaving_closes_the_upstream() -> None:
    events, pending = anyio.create_memory_object_stream[bytes](10)
    closed = anyio.Event()

    async def gateway(request: web.BaseRequest) -> web.StreamResponse:
        answer = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await answer.prepare(request)
        try:
            async for event in pending:
                await answer.write(event)
        finally:
            closed.set()  # cancelled by the server when the proxy closed the connection
        return answer

    recorder = Recorder()
    body = b'{"model": "slow", "stream": true}'
    client = Client([body[:10], body[10:]])
    async with proxy_of(gateway, recorder) as proxy, anyio.create_task_group() as group:
        group.start_soon(proxy, scope_of("/gateway/litellm/v1/chat/completions", body), client.receive, client.send)
        with anyio.fail_after(5):
            await events.send(b"data: one\n\n")
            await client.got_body.wait()  # the first event is through while the gateway still streams
            assert client.body() == b"data: one\n\n"
            client.got_body = anyio.Event()
            await events.send(b"data: two\n\n")
            await client.got_body.wait()
            client.gone.set()  # the client leaves mid-answer
            await closed.wait()
    events.close()
    pending.close()
    assert client.sent[0]["status"] == 200
    assert not any(m["type"] == "http.response.body" and not m.get("more_body") for m in client.sent)
    (done,) = recorder.done
    assert done["status"] == 200 and done["model"] == "slow" and done["streamed_bytes"] == 22
    assert done["error"] is None and done["cancelled"] is True


@pytest.mark.anyio
async def test_the_clients_leaving_while_the_answer_is_awaited_cancels_the_request() -> None:
    asked = anyio.Event()
    cancelled = anyio.Event()

    async def gateway(request: web.BaseRequest) -> web.StreamResponse:
        asked.set()
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.set()
        raise AssertionError("unreachable")

    recorder = Recorder()
    body = b'{"model": "thinker"}'
    client = Client([body])
    async with proxy_of(gateway, recorder) as proxy:
        with anyio.fail_after(5):
            async with anyio.create_task_group() as group:
                group.start_soon(proxy, scope_of("/gateway/litellm/v1/chat/completions", body), client.receive, client.send)
                await asked.wait()
                client.gone.set()
                await cancelled.wait()
    assert client.sent == []
    assert recorder.done == [
        {"gateway": "litellm", "model": "thinker", "status": None, "first_byte": None, "streamed_bytes": 0,
         "error": None, "cancelled": True}
    ]


@pytest.mark.anyio
async def test_a_body_cut_short_is_never_a_whole_request_upstream() -> None:
    whole: list[bytes] = []
    ended = anyio.Event()

    async def gateway(request: web.BaseRequest) -> web.StreamResponse:
        try:
            whole.append(await request.read())
        finally:
            ended.set()
        return answer_of(200)

    recorder = Recorder()
    client = Client([b'{"model": "half", ', b'"more'])
    client.messages[-1]["more_body"] = True  # and then the client goes
    client.gone.set()
    async with proxy_of(gateway, recorder) as proxy:
        with anyio.fail_after(5):
            await proxy(scope_of("/gateway/litellm/v1/chat/completions", b"x" * 100), client.receive, client.send)
            await ended.wait()  # the gateway had the request's start, then its connection ended
    assert whole == [] and client.sent == []
    assert recorder.done[0]["status"] is None and recorder.done[0]["cancelled"] is True


@pytest.mark.anyio
async def test_silence_mid_answer_cuts_the_answer_without_its_end() -> None:
    async def gateway(request: web.BaseRequest) -> web.StreamResponse:
        answer = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await answer.prepare(request)
        await answer.write(b"data: one\n\n")
        await anyio.sleep_forever()
        return answer

    recorder = Recorder()
    client = Client([b"{}"])
    async with proxy_of(gateway, recorder, idle_timeout=0.5) as proxy:
        with anyio.fail_after(5):
            await proxy(scope_of("/gateway/litellm/v1/chat/completions", b"{}"), client.receive, client.send)
    assert client.body() == b"data: one\n\n"
    assert not any(m["type"] == "http.response.body" and not m.get("more_body") for m in client.sent)
    assert recorder.done[0]["status"] == 200 and "silent for 0.5 s" in recorder.done[0]["error"]


@pytest.mark.anyio
async def test_a_gateway_that_takes_no_more_of_the_body_is_silent_past_the_idle_timeout() -> None:
    # aiohttp bounds reads only: while the body goes up, the route bounds each write itself.
    with free_socket(backlog=8) as listening:
        base = f"http://127.0.0.1:{listening.getsockname()[1]}/v1"
        recorder = Recorder()
        proxy = GatewayProxy(upstreams_at(base), token=TOKEN, traffic=recorder, idle_timeout=0.5, body_limit=256 * MIB)
        # More than loopback's socket buffers hold, on a connection the gateway never reads.
        client = Client([b"x" * MIB] * 128)
        try:
            with anyio.fail_after(10):
                await proxy(scope_of("/gateway/litellm/v1/chat/completions", b"x" * 128 * MIB), client.receive, client.send)
        finally:
            await proxy.aclose()
    assert client.sent[0]["status"] == 504
    assert "silent for 0.5 s" in json.loads(client.body())["error"]["message"]
    assert recorder.done[0]["status"] is None and "silent" in recorder.done[0]["error"]
