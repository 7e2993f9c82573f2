"""Attacks on the gateway route (issue 15): what holds the internal token may use the gateway through
the sidecar, and nothing else may. Each hostile request goes to the real sidecar (with an API key
set, in front of the real opencode); the gateway behind it is a fake of ours that records every
whole request, so that "never sent on" is seen, not assumed.
"""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support import fake_upstream
from tests.support.fake_upstream import FakeUpstream
from tests.support.raw_http import exchange
from tests.support.sidecar_process import SidecarProcess, start_sidecar

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

TOKEN = "security-gateway-token-0c1d2e3f4a5b6c7d8e9f0a1b"
API_KEY = "security-api-key-9f8e7d6c5b4a3f2e1d0c9b8a7f6e"
GATEWAY_KEY = "sk-security-gateway-key-4411"
MIB = 1024 * 1024
BODY = json.dumps({"model": "slow", "messages": [{"role": "user", "content": "hi"}]})


@pytest.fixture(scope="module")
def gateway() -> Iterator[FakeUpstream]:
    server = fake_upstream.start_in_thread(delay=0.0, chunks=1)
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory, gateway: FakeUpstream) -> Iterator[SidecarProcess]:
    process = start_sidecar(
        tmp_path_factory.mktemp("gateway-attacks"), gateway.base_url, GATEWAY_KEY, api_key=API_KEY, gateway_token=TOKEN
    )
    yield process
    process.stop()


def chat_url(sidecar: SidecarProcess) -> str:
    return f"{sidecar.api_url}/gateway/litellm/v1/chat/completions"


def posts_seen(gateway: FakeUpstream) -> int:
    """Requests that reached the gateway's chat route at all (headers read), whole or not."""
    return len(gateway.exchanges) + len(gateway.cut_short)


def control(sidecar: SidecarProcess, gateway: FakeUpstream) -> None:
    """The same request with the token does reach the gateway: the refusals were the guards'."""
    before = len(gateway.exchanges)
    answer = httpx.post(chat_url(sidecar), content=BODY, headers={"authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert answer.status_code == 200, answer.text[:300]
    assert len(gateway.exchanges) == before + 1
    assert gateway.exchanges[-1].headers["authorization"] == f"Bearer {GATEWAY_KEY}"


def assert_error(answer: httpx.Response, status: int) -> None:
    assert answer.status_code == status, answer.text[:300]
    assert answer.json()["type"] == "error"
    assert GATEWAY_KEY not in answer.text and TOKEN not in answer.text


def test_only_the_token_opens_the_gateway_route(sidecar: SidecarProcess, gateway: FakeUpstream) -> None:
    before = posts_seen(gateway)
    refused = [
        {},
        {"authorization": "Bearer wrong-token-of-the-right-length-000000000"},
        {"x-api-key": TOKEN[:-1]},
        # The API key opens every other route, and not this one.
        {"authorization": f"Bearer {API_KEY}"},
        {"x-api-key": API_KEY},
        # The token only where opencode's providers send it.
        {"authorization": "Basic " + base64.b64encode(f"opencode:{TOKEN}".encode()).decode()},
    ]
    with httpx.Client(timeout=30) as client:
        for headers in refused:
            assert_error(client.post(chat_url(sidecar), content=BODY, headers=headers), 401)
        assert_error(client.post(f"{chat_url(sidecar)}?auth_token={TOKEN}", content=BODY), 401)
    assert posts_seen(gateway) == before
    control(sidecar, gateway)


def test_the_token_opens_no_other_route(sidecar: SidecarProcess) -> None:
    with sidecar.opencode() as opencode:
        sessions = {s["id"] for s in opencode.get("/session").raise_for_status().json()}
    with httpx.Client(base_url=sidecar.api_url, timeout=30) as client:
        for headers in ({"authorization": f"Bearer {TOKEN}"}, {"x-api-key": TOKEN}):
            assert_error(client.get("/v1/models", headers=headers), 401)
            assert_error(client.get("/v1/status", headers=headers), 401)
            assert_error(client.post("/session", json={}, headers=headers), 401)  # the pass-through to opencode
        assert client.get("/v1/models", headers={"x-api-key": API_KEY}).status_code == 200
    with sidecar.opencode() as opencode:
        assert {s["id"] for s in opencode.get("/session").raise_for_status().json()} == sessions


def test_a_foreign_host_or_origin_is_refused_even_with_the_token(sidecar: SidecarProcess, gateway: FakeUpstream) -> None:
    before = posts_seen(gateway)
    token = {"authorization": f"Bearer {TOKEN}"}
    with httpx.Client(timeout=30) as client:
        answer = client.post(chat_url(sidecar), content=BODY, headers={**token, "host": "rebind.evil.example"})
        assert_error(answer, 403)
        answer = client.post(chat_url(sidecar), content=BODY, headers={**token, "origin": "http://evil.example"})
        assert_error(answer, 403)
    assert posts_seen(gateway) == before


@pytest.mark.parametrize(
    "path",
    [
        "/gateway/litellm/v1/../../key/generate",
        "/gateway/litellm/v1/%2e%2e/%2e%2e/key/generate",
        "/gateway/litellm/v1/%2E%2E/models",
        "/gateway/litellm/v1//evil.example/v1/chat/completions",
        "/gateway/litellm/v1/chat%2fcompletions",
        "/gateway/litellm/v1/./chat/completions",
        "/gateway/../gateway/litellm/v1/chat/completions",
    ],
)
def test_traversal_is_refused_and_never_sent(sidecar: SidecarProcess, gateway: FakeUpstream, path: str) -> None:
    before_posts, before_any = posts_seen(gateway), len(gateway.headers_seen)
    port = urlsplit(sidecar.api_url).port
    request = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\nConnection: close\r\n\r\n{BODY}"
    ).encode()
    answer = exchange(sidecar.api_url, request)
    assert answer.status == 400, answer.body[:300]
    assert json.loads(answer.body)["type"] == "error"
    assert posts_seen(gateway) == before_posts
    # Not even the gateway's model list, polled every second, is asked for in its name: a poll
    # carries no body and is a GET; the attack was a POST.
    assert all(h.get("content-type") != "application/json" for h in gateway.headers_seen[before_any:])


def test_only_the_gateways_api_is_reachable(sidecar: SidecarProcess, gateway: FakeUpstream) -> None:
    # LiteLLM's key management lives at its root, beside /v1: the token must not mint keys.
    before = len(gateway.headers_seen)
    with httpx.Client(timeout=30) as client:
        for path in ("/gateway/litellm/key/generate", "/gateway/litellm/model/new", "/gateway/litellm"):
            assert_error(client.post(f"{sidecar.api_url}{path}", json={}, headers={"authorization": f"Bearer {TOKEN}"}), 404)
    assert not any(h.get("content-type") == "application/json" for h in gateway.headers_seen[before:])


def chat_posts(gateway: FakeUpstream) -> int:
    """Chat requests whose headers reached the gateway (its polls are GETs without a body)."""
    return sum(1 for h in gateway.headers_seen if h.get("content-type") == "application/json")


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def test_an_oversized_body_is_refused(sidecar: SidecarProcess, gateway: FakeUpstream) -> None:
    whole, cut, started = len(gateway.exchanges), len(gateway.cut_short), chat_posts(gateway)
    token = {"authorization": f"Bearer {TOKEN}", "content-type": "application/json"}
    with httpx.Client(timeout=60) as client:
        # Declared: refused before a byte is sent on.
        assert_error(client.post(chat_url(sidecar), content=b" " * (10 * MIB + 1), headers=token), 413)
        assert chat_posts(gateway) == started

        # Chunked: streamed on until the bound, then cut, so the gateway never has a whole request.
        def chunks() -> Iterator[bytes]:
            yield b'{"model": "slow", "pad": "'
            for _ in range(11):
                yield b"x" * MIB
            yield b'"}'

        assert_error(client.post(chat_url(sidecar), content=chunks(), headers=token), 413)
    wait_until(lambda: len(gateway.cut_short) > cut, "the gateway saw its connection end")
    assert len(gateway.exchanges) == whole
    control(sidecar, gateway)


def test_a_half_sent_body_never_becomes_a_request(sidecar: SidecarProcess, gateway: FakeUpstream) -> None:
    whole, cut, started = len(gateway.exchanges), len(gateway.cut_short), chat_posts(gateway)
    port = urlsplit(sidecar.api_url).port
    head = (
        f"POST /gateway/litellm/v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {len(BODY) + 100}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head + BODY.encode())  # 100 bytes short
        # Streamed on as it came: the gateway has the request's start...
        wait_until(lambda: chat_posts(gateway) > started, "the request's start reached the gateway")
    # ...and once the client is gone, the sidecar closes the gateway's connection before its end.
    wait_until(lambda: len(gateway.cut_short) > cut, "the gateway saw its connection end")
    assert len(gateway.exchanges) == whole
    control(sidecar, gateway)
