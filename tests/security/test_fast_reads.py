"""The hot reads answered in front of Starlette (sidecar/http/fast_reads.py), attacked at the real
sidecar: every guard still holds on GET and HEAD of /v1/models, /livez and /readyz (no key, a wrong
key, the internal token, a foreign Host or Origin, two framings, a wrong method), and the pages are
still served right for every spelling of the request (queries, HEAD, a percent-encoded path)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import httpx
import pytest

from tests.support import fake_upstream
from tests.support.raw_http import exchange
from tests.support.sidecar_process import SidecarProcess, start_sidecar

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

KEY = "fast-reads-security-key-0123456789abcdef"
TOKEN = "fast-reads-internal-token-0a1b2c3d4e5f60718293"
GATEWAY_KEY = "sk-fast-reads-gateway-key"
HOT = ["/v1/models", "/livez", "/readyz"]
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 405: "invalid_request_error"}


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SidecarProcess]:
    gateway = fake_upstream.start_in_thread(delay=0.0, chunks=1, models=fake_upstream.model_list(["m1", "m2", "m3"]))
    try:
        sidecar = start_sidecar(
            tmp_path_factory.mktemp("fast-reads"), f"http://127.0.0.1:{gateway.port}", GATEWAY_KEY,
            api_key=KEY, gateway_token=TOKEN, allowed_hosts="sidecar.internal",
            allowed_origins="https://app.example.com",
        )
        try:
            yield sidecar
        finally:
            sidecar.stop()
    finally:
        gateway.shutdown()
        gateway.server_close()


def assert_refused(response: httpx.Response, status: int, names: str, method: str = "GET") -> None:
    assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"] == "application/json"
    assert response.headers["request-id"].startswith("req_")
    if method == "HEAD":
        assert response.content == b""
        return
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == ERROR_TYPES[status]
    assert names in body["error"]["message"]
    assert body["request_id"] == response.headers["request-id"]


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_the_key_is_asked_for_on_the_list(sidecar: SidecarProcess, method: str) -> None:
    wrong: list[dict[str, str] | list[tuple[str, str]]] = [
        {},
        {"x-api-key": "wrong-key-of-about-the-same-length-0000000"},
        {"authorization": "Bearer wrong"},
        {"authorization": "Basic " + base64.b64encode(b"me:wrong").decode()},
        # Only the first x-api-key is the key offered.
        [("x-api-key", "wrong"), ("x-api-key", KEY)],
    ]
    with sidecar.api() as api:
        for headers in wrong:
            for target in ["/v1/models", "/v1/models?limit=1000", "/v1/%6Dodels", "/v1/models?auth_token=wrong"]:
                assert_refused(api.request(method, target, headers=headers), 401, "API key", method)


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("path", HOT)
def test_the_internal_token_opens_no_hot_read(sidecar: SidecarProcess, method: str, path: str) -> None:
    with sidecar.api() as api:
        for headers in [
            {"x-api-key": TOKEN},
            {"authorization": f"Bearer {TOKEN}"},
            {"x-api-key": KEY, "authorization": f"Bearer {TOKEN}"},  # the key beside it does not help
        ]:
            assert_refused(api.request(method, path, headers=headers), 401, "internal token", method)


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("path", HOT)
def test_foreign_browsers_are_refused_before_the_key(sidecar: SidecarProcess, method: str, path: str) -> None:
    port = sidecar.api_url.rsplit(":", 1)[1]
    key = {"x-api-key": KEY}
    with sidecar.api() as api:
        assert_refused(api.request(method, path, headers={"host": f"rebind.evil.example:{port}"}), 403, "SIDECAR_ALLOWED_HOSTS", method)
        assert_refused(api.request(method, path, headers={**key, "host": "rebind.evil.example"}), 403, "SIDECAR_ALLOWED_HOSTS", method)
        for origin in ["https://evil.example", "null", "http://app.example.com"]:
            refused = api.request(method, path, headers={**key, "origin": origin})
            assert_refused(refused, 403, "SIDECAR_ALLOWED_ORIGINS", method)
        # The listed ones are served (the refusals above were the guard's).
        assert api.request(method, path, headers={**key, "host": "sidecar.internal:4097"}).status_code == 200
        assert api.request(method, path, headers={**key, "origin": "https://app.example.com"}).status_code == 200
    two_hosts = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nHost: 127.0.0.1:{port}\r\nx-api-key: {KEY}\r\nConnection: close\r\n\r\n"
    assert exchange(sidecar.api_url, two_hosts.encode()).status == 403


@pytest.mark.parametrize("path", HOT)
def test_a_read_with_two_framings_or_a_wrong_method_is_refused(sidecar: SidecarProcess, path: str) -> None:
    host = sidecar.api_url.removeprefix("http://")
    smuggled = (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nx-api-key: {KEY}\r\nContent-Length: 5\r\n"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n"
    )
    answer = exchange(sidecar.api_url, smuggled.encode())
    assert answer.status == 400 and json.loads(answer.body)["type"] == "error"
    with sidecar.api() as api:
        for method in ["POST", "PUT", "DELETE", "OPTIONS"]:
            assert_refused(api.request(method, path), 401, "API key")
            if path != "/v1/models":  # whose other methods go on to opencode's own, as before
                assert_refused(api.request(method, path, headers={"x-api-key": KEY}), 405, "GET and HEAD")


def test_the_pages_are_served_right_for_every_spelling(sidecar: SidecarProcess) -> None:
    key = {"x-api-key": KEY}
    with sidecar.api() as api:
        whole = api.get("/v1/models?limit=1000", headers=key)
        assert whole.status_code == 200 and whole.headers["content-type"] == "application/json"
        ids = [model["id"] for model in whole.json()["data"]]
        assert len(ids) == 3
        first = api.get("/v1/models", params={"limit": 1}, headers=key).json()
        assert [m["id"] for m in first["data"]] == ids[:1] and first["has_more"] is True
        after = api.get("/v1/models", params={"limit": 5, "after_id": ids[0]}, headers=key).json()
        assert [m["id"] for m in after["data"]] == ids[1:] and after["has_more"] is False
        before = api.get("/v1/models", params={"before_id": ids[2]}, headers=key).json()
        assert [m["id"] for m in before["data"]] == ids[:2]
        # Every way of offering the key, and of spelling the path, is the same page.
        for headers, target in [
            ({"authorization": f"Bearer {KEY}"}, "/v1/models?limit=1000"),
            ({"authorization": "Basic " + base64.b64encode(f"me:{KEY}".encode()).decode()}, "/v1/models?limit=1000"),
            ({}, f"/v1/models?limit=1000&auth_token={base64.b64encode(f'opencode:{KEY}'.encode()).decode()}"),
            (key, "/v1/%6Dodels?limit=1000"),
            (key, "/v1/models?limit=%31000"),
        ]:
            same = api.get(target, headers=headers)
            assert same.status_code == 200 and same.content == whole.content, target
        head = api.head("/v1/models?limit=1000", headers=key)
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == whole.headers["content-length"]
        # What the fast path does not answer is the app's, as before.
        assert_refused(api.get("/v1/models?limit=0", headers=key), 400, "limit")
        assert_refused(api.get("/v1/models?after_id=nope", headers=key), 400, "after_id")
        assert_refused(api.get(f"/v1/models?after_id={ids[0]}&before_id={ids[2]}", headers=key), 400, "together")
        assert api.get("/v1/models/", headers=key).status_code == 404
        assert api.get("/livez").json() == {"status": "ok"}
        assert api.get("/readyz").json()["ready"] is True
