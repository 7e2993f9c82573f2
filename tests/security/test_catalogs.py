"""`/v1/catalogs` attacked at a real catalog-only sidecar (a fleet's hub) that follows the real
LiteLLM proxy: no key or a wrong one, a foreign Host or Origin, methods that write, hostile gateway
ids, bad `wait` values, an oversized If-None-Match, more held long-polls than the connection bound;
and opencode's routes, which a hub without opencode answers with 404."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import httpx
import pytest

from tests.support import litellm_proxy as lp
from tests.support.raw_http import exchange
from tests.support.sidecar_process import SidecarProcess, start_sidecar

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

KEY = "hub-security-key-0123456789abcdef0123456789"
AUTH = {"x-api-key": KEY}
MAX_CONNECTIONS = 12
TIMEOUT = 1.0  # SIDECAR_HEADER_TIMEOUT and SIDECAR_BODY_TIMEOUT: a held long-poll outlives both


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, gateway: lp.LiteLLMProxy) -> Iterator[SidecarProcess]:
    sidecar = start_sidecar(
        tmp_path_factory.mktemp("hub"), gateway.url, gateway.master_key,
        catalog_only="true", opencode_directory=None, api_key=KEY, allowed_hosts="hub.fleet.svc",
        max_connections=str(MAX_CONNECTIONS), header_timeout=str(TIMEOUT), body_timeout=str(TIMEOUT),
    )
    yield sidecar
    sidecar.stop()


def client(hub: SidecarProcess, headers: dict[str, str] | None = None) -> httpx.Client:
    # No connection kept between requests: the hub closes idle ones after a second.
    return httpx.Client(base_url=hub.api_url, headers=headers, timeout=30,
                        limits=httpx.Limits(max_keepalive_connections=0))


def refused(response: httpx.Response, status: int, error_type: str, says: str = "") -> None:
    assert response.status_code == status, response.text[:300]
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == error_type
    assert says in body["error"]["message"]


def current_etag(hub: SidecarProcess) -> str:
    with client(hub, AUTH) as api:
        answer = api.get("/v1/catalogs/litellm")
    assert answer.status_code == 200, answer.text
    return answer.headers["etag"]


def test_no_key_or_a_wrong_one_is_refused(hub: SidecarProcess) -> None:
    with client(hub) as api:
        for path in ("/v1/catalogs", "/v1/catalogs/litellm", "/v1/catalogs/nope"):
            refused(api.get(path), 401, "authentication_error", "API key")
            refused(api.get(path, headers={"x-api-key": KEY[:-1] + "x"}), 401, "authentication_error")
            refused(api.get(path, headers={"authorization": "Bearer nope"}), 401, "authentication_error")
            assert api.get(path, headers={"authorization": f"Bearer {KEY}"}).status_code in (200, 404)


def test_a_foreign_host_or_origin_is_refused_before_the_key(hub: SidecarProcess) -> None:
    with client(hub, AUTH) as api:
        refused(api.get("/v1/catalogs/litellm", headers={"host": "evil.example"}), 403, "permission_error")
        refused(api.get("/v1/catalogs/litellm", headers={"origin": "https://evil.example"}), 403, "permission_error")
        # The Service's own name, listed in SIDECAR_ALLOWED_HOSTS, is served.
        assert api.get("/v1/catalogs/litellm", headers={"host": "hub.fleet.svc"}).status_code == 200


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_only_get_and_head(hub: SidecarProcess, method: str) -> None:
    with client(hub) as api:
        for path in ("/v1/catalogs", "/v1/catalogs/litellm"):
            refused(api.request(method, path, content=b"{}"), 401, "authentication_error")
            answer = api.request(method, path, content=b"{}", headers=AUTH)
            refused(answer, 405, "invalid_request_error", "GET and HEAD")
            assert answer.headers["allow"] == "GET, HEAD"


@pytest.mark.parametrize(
    "raw_id",
    ["..%2f..%2fsession", "..%2F", "litellm%2f..%2f..%2fsession", "litellm/extra", "%00", "litellm%00",
     "%E2%98%83%F0%9F%92%A5", "x" * 20_000, "%2e%2e", ""],
)
def test_hostile_gateway_ids_are_a_404_of_this_route(hub: SidecarProcess, raw_id: str) -> None:
    host = hub.api_url.removeprefix("http://")
    answer = exchange(
        hub.api_url,
        f"GET /v1/catalogs/{raw_id} HTTP/1.1\r\nHost: {host}\r\nx-api-key: {KEY}\r\nConnection: close\r\n\r\n".encode(),
    )
    assert answer.status == 404, answer.body[:300]
    # This route's own 404 (never opencode's route, nor the catalog-only refusal), the id cut short.
    assert b'"not_found_error"' in answer.body and b"no gateway" in answer.body and len(answer.body) < 600


def test_a_raw_nul_in_the_request_line_is_refused_by_the_parser(hub: SidecarProcess) -> None:
    host = hub.api_url.removeprefix("http://")
    answer = exchange(hub.api_url, f"GET /v1/catalogs/lite\0llm HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    assert answer.status == 400


@pytest.mark.parametrize("wait", ["-1", "1e309", "nan", "inf", "x", "9" * 1000, "301", "1,5", "0x10", ""])
def test_bad_wait_values_are_a_400(hub: SidecarProcess, wait: str) -> None:
    etag = current_etag(hub)
    with client(hub, AUTH) as api:
        answer = api.get("/v1/catalogs/litellm", params={"wait": wait}, headers={"if-none-match": etag})
    refused(answer, 400, "invalid_request_error", "wait")


@pytest.mark.parametrize("tags", [3000, 300])
def test_an_oversized_if_none_match_is_refused_and_never_held(hub: SidecarProcess, tags: int) -> None:
    """~105 KB (in one read the server's head bound may let it pass: the route's own bound answers
    400 then), and ~10 KB: both refused at once, with `*` among the tags (which would be held)."""
    host = hub.api_url.removeprefix("http://")
    value = ", ".join(["*", *(f'"{i:032x}"' for i in range(tags))])
    answer = exchange(
        hub.api_url,
        f"GET /v1/catalogs/litellm?wait=300 HTTP/1.1\r\nHost: {host}\r\nx-api-key: {KEY}\r\n"
        f"If-None-Match: {value}\r\nConnection: close\r\n\r\n".encode(),
        timeout=20,
    )
    assert answer.status in (400, 431), answer.body[:300]
    assert b"request_too_large" in answer.body or b"If-None-Match" in answer.body


def test_held_long_polls_past_the_connection_bound_get_their_refusal(hub: SidecarProcess) -> None:
    """The bound's worth of held long-polls, each outliving the header and body deadlines (it is
    busy, not idle), and one more: exactly one of them is refused (closed unanswered), the others
    get their 304 when their wait runs out. The hub serves again afterwards."""
    etag = current_etag(hub)
    wait = 4 * TIMEOUT
    outcomes: list[int | str] = []
    lock = threading.Lock()

    def long_poll() -> None:
        try:
            with client(hub, AUTH) as api:
                status: int | str = api.get(
                    "/v1/catalogs/litellm", params={"wait": str(wait)}, headers={"if-none-match": etag}
                ).status_code
        except httpx.TransportError as exc:
            status = type(exc).__name__
        with lock:
            outcomes.append(status)

    threads = [threading.Thread(target=long_poll) for _ in range(MAX_CONNECTIONS + 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    answered = [outcome for outcome in outcomes if outcome == 304]
    assert len(outcomes) == MAX_CONNECTIONS + 1 and len(answered) == MAX_CONNECTIONS, outcomes
    assert hub.events("api.connection_refused") or hub.events("api.connection_evicted")
    assert not hub.events("api.header_timeout") and not hub.events("api.body_timeout")
    with client(hub) as api:
        assert api.get("/livez").status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/session"), ("POST", "/session"), ("GET", "/event"), ("GET", "/global/event"), ("GET", "/mcp"),
     ("GET", "/doc"), ("GET", "/pty/x/connect"), ("GET", "/")],
)
def test_opencodes_routes_answer_404_in_catalog_only_mode(hub: SidecarProcess, method: str, path: str) -> None:
    with client(hub, AUTH) as api:
        refused(api.request(method, path), 404, "not_found_error", "catalog-only")


def test_a_websocket_to_a_terminal_is_refused(hub: SidecarProcess) -> None:
    host = hub.api_url.removeprefix("http://")
    answer = exchange(
        hub.api_url,
        f"GET /pty/x/connect HTTP/1.1\r\nHost: {host}\r\nx-api-key: {KEY}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode(),
    )
    assert answer.status in (403, 404) and answer.status != 101


def test_the_gateway_route_takes_only_a_token_no_opencode_holds(hub: SidecarProcess) -> None:
    with client(hub, AUTH) as api:
        refused(api.get("/gateway/litellm/v1/models"), 401, "authentication_error", "internal token")
        refused(api.post("/gateway/litellm/v1/chat/completions", json={}), 401, "authentication_error")


def test_nothing_listens_for_opencode(hub: SidecarProcess) -> None:
    port = int(hub.opencode_url.rsplit(":", 1)[1])
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0
