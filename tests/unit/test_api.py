import json
from collections.abc import AsyncIterator
from datetime import datetime, timezone

import httpx
import pytest

from sidecar.catalog import Catalog, ModelInfo
from sidecar.http.exposure import BrowserPolicy
from sidecar.http.guards import OWN_BODY_LIMIT
from sidecar.http.passthrough import Passthrough
from sidecar.http.passthrough_limits import FORWARDED_BODY_LIMIT
from sidecar.http.routes import create_app
from sidecar.naming import ModelRef
from sidecar.resolve import Resolution
from tests.support.api_view import ResolveWith, view_of

MODELS = [ModelInfo(id=f"model-{i:02d}", display_name=f"Model {i}") for i in range(25)]
MODELS.append(ModelInfo(id="vendor/newest", display_name="Newest", created_at=datetime(2026, 1, 1, tzinfo=timezone.utc)))
CATALOG = Catalog(MODELS)


@pytest.fixture
def client():
    view = view_of(lambda: CATALOG, lambda: {"ready": False, "opencode_healthy": False})
    transport = httpx.ASGITransport(app=create_app(view))
    return httpx.AsyncClient(transport=transport, base_url="http://sidecar")


pytestmark = pytest.mark.anyio


async def test_first_page_is_newest_first_with_default_limit(client: httpx.AsyncClient) -> None:
    page = (await client.get("/v1/models")).json()
    assert len(page["data"]) == 20
    assert page["data"][0]["id"] == "vendor/newest"
    assert page["data"][0]["created_at"] == "2026-01-01T00:00:00Z"
    assert page["data"][1]["created_at"] == "1970-01-01T00:00:00Z"
    assert page["data"][1]["type"] == "model"
    assert page["has_more"] is True
    assert page["first_id"] == "vendor/newest" and page["last_id"] == page["data"][-1]["id"]


async def test_after_id_and_before_id_walk_the_whole_list(client: httpx.AsyncClient) -> None:
    seen, after = [], None
    while True:
        params = {"limit": 7} | ({"after_id": after} if after else {})
        page = (await client.get("/v1/models", params=params)).json()
        seen += [m["id"] for m in page["data"]]
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert seen == CATALOG.ids
    back = (await client.get("/v1/models", params={"before_id": "model-10", "limit": 3})).json()
    assert [m["id"] for m in back["data"]] == CATALOG.ids[CATALOG.index("model-10") - 3 : CATALOG.index("model-10")]
    assert back["has_more"] is True


@pytest.mark.parametrize(
    "params",
    [{"limit": 0}, {"limit": 1001}, {"limit": "many"}, {"after_id": "nope"}, {"after_id": "model-01", "before_id": "model-02"}],
)
async def test_bad_parameters_are_anthropic_errors(client: httpx.AsyncClient, params: dict) -> None:
    response = await client.get("/v1/models", params=params)
    assert response.status_code == 400
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"]


async def test_retrieve_by_id_with_slash_and_unknown(client: httpx.AsyncClient) -> None:
    found = await client.get("/v1/models/vendor/newest")
    assert found.status_code == 200 and found.json()["display_name"] == "Newest"
    missing = await client.get("/v1/models/vendor/unknown")
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "not_found_error"


async def test_health_endpoints(client: httpx.AsyncClient) -> None:
    assert (await client.get("/livez")).status_code == 200
    ready = await client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["ready"] is False


async def test_unknown_route_and_method(client: httpx.AsyncClient) -> None:
    assert (await client.get("/nope")).json()["error"]["type"] == "not_found_error"
    response = await client.post("/v1/models")
    assert response.status_code == 404 and response.json()["type"] == "error"


KEY = "sidecar-key-0123456789abcdef0123456789"


class RecordingResolver:
    """Answers every name with a model of that id, and remembers what it was asked."""

    def __init__(self) -> None:
        self.asked: list[object] = []

    async def resolve(self, requested: object, directory: str | None = None) -> Resolution:
        self.asked.append(requested)
        return Resolution(ModelInfo(id=str(requested), display_name=str(requested)), ModelRef("litellm", str(requested)))


def app_with(browsers: BrowserPolicy = BrowserPolicy(), **view: object) -> httpx.AsyncClient:
    health = view_of(lambda: CATALOG, lambda: {"ready": True}, **view)  # type: ignore[arg-type]
    app = create_app(health, browsers)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sidecar")


def assert_anthropic_error(response: httpx.Response, status: int, error_type: str) -> None:
    assert response.status_code == status
    body = response.json()
    assert set(body) == {"type", "error", "request_id"}
    assert body["type"] == "error" and body["error"]["type"] == error_type and body["error"]["message"]
    assert body["request_id"].startswith("req_") and response.headers["request-id"] == body["request_id"]


@pytest.mark.parametrize(
    "headers",
    [{}, {"x-api-key": "wrong"}, {"authorization": "Bearer wrong"}, {"authorization": f"Bearer {KEY}x"}, {"x-api-key": ""}],
)
@pytest.mark.parametrize("path", ["/v1/models", "/v1/models/vendor/newest", "/openapi.json", "/session"])
async def test_missing_or_wrong_key_is_an_anthropic_401(headers: dict, path: str) -> None:
    async with app_with(api_key=KEY) as client:
        assert_anthropic_error(await client.get(path, headers=headers), 401, "authentication_error")


@pytest.mark.parametrize("headers", [{"x-api-key": KEY}, {"authorization": f"Bearer {KEY}"}, {"authorization": f"bearer {KEY}"}])
async def test_key_as_x_api_key_or_bearer(headers: dict) -> None:
    async with app_with(api_key=KEY) as client:
        assert (await client.get("/v1/models", headers=headers)).status_code == 200
        assert (await client.get("/openapi.json", headers=headers)).status_code == 200


async def test_probes_need_no_key() -> None:
    async with app_with(api_key=KEY) as client:
        assert (await client.get("/livez")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200


async def test_resolve_body_over_the_limit_by_content_length_is_refused_unread() -> None:
    resolver = RecordingResolver()
    app = create_app(view_of(lambda: CATALOG, lambda: {"ready": True}, resolver=resolver))
    reads: list[dict] = []
    sent: list[dict] = []

    async def receive() -> dict:
        reads.append({})
        return {"type": "http.request", "body": b"{}", "more_body": True}

    async def send(message: dict) -> None:
        sent.append(message)

    length = str(OWN_BODY_LIMIT + 1).encode()
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/v1/models/resolve", "raw_path": b"/v1/models/resolve", "query_string": b"", "root_path": "",
        "headers": [(b"host", b"sidecar"), (b"content-type", b"application/json"), (b"content-length", length)],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 4097),
    }
    await app(scope, receive, send)  # type: ignore[arg-type]
    assert sent[0]["status"] == 413 and reads == [] and resolver.asked == []
    body = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))
    assert body["error"]["type"] == "request_too_large"


async def test_resolve_chunked_body_is_counted_and_cut_off_at_the_limit() -> None:
    resolver = RecordingResolver()
    pulled = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal pulled
        yield b'{"model": "'
        while True:
            pulled += 1
            yield b"x" * 1024

    async with app_with(resolver=resolver) as client:
        response = await client.post("/v1/models/resolve", content=endless())
    assert_anthropic_error(response, 413, "request_too_large")
    assert pulled <= OWN_BODY_LIMIT // 1024 + 1 and resolver.asked == []


async def test_resolve_body_under_the_limit_is_read() -> None:
    resolver = RecordingResolver()

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"model": "'
        yield b"m" * 1000
        yield b'"}'

    async with app_with(resolver=resolver) as client:
        response = await client.post("/v1/models/resolve", content=chunks())
    assert response.status_code == 200 and resolver.asked == ["m" * 1000]


async def test_deeply_nested_resolve_body_is_a_400_not_a_500() -> None:
    async with app_with(resolver=RecordingResolver()) as client:
        response = await client.post("/v1/models/resolve", content=b"[" * 60_000)
    assert_anthropic_error(response, 400, "invalid_request_error")


@pytest.mark.parametrize("length", ["ten", "-1", "1e3", "²"])
async def test_unreadable_content_length_is_a_400(length: str) -> None:
    async with app_with(resolver=RecordingResolver()) as client:
        request = client.build_request("POST", "/v1/models/resolve", content=b'{"model": "m"}')
        request.headers["content-length"] = length
        assert_anthropic_error(await client.send(request), 400, "invalid_request_error")


def forwarding_app(seen: list[bytes], **view: object) -> httpx.AsyncClient:
    def opencode(request: httpx.Request) -> httpx.Response:
        seen.append(request.content)
        return httpx.Response(200, json={"ok": True})

    async def resolve(requested: object, directory: str | None) -> ModelRef:
        return ModelRef("litellm", str(requested))

    passthrough = Passthrough("http://opencode", "pw", ResolveWith(resolve), [], transport=httpx.MockTransport(opencode))
    return app_with(passthrough=passthrough, **view)


async def test_forwarded_bodies_may_be_large_but_not_unbounded() -> None:
    seen: list[bytes] = []
    big = b"x" * (OWN_BODY_LIMIT * 4)

    async def stream(size: int) -> AsyncIterator[bytes]:
        for _ in range(size // 65536):
            yield b"x" * 65536

    async with forwarding_app(seen) as client:
        assert (await client.post("/file/upload", content=big)).status_code == 200
        assert (await client.post("/file/upload", content=stream(OWN_BODY_LIMIT * 4))).status_code == 200
        over = FORWARDED_BODY_LIMIT + 65536
        assert_anthropic_error(await client.post("/file/upload", content=stream(over)), 413, "request_too_large")
        request = client.build_request("POST", "/file/upload", content=b"{}")
        request.headers["content-length"] = str(over)
        assert_anthropic_error(await client.send(request), 413, "request_too_large")
    assert seen == [big, big]


async def test_openapi_document_describes_our_routes_not_the_pass_through(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.")
    assert set(document["paths"]) == {
        "/v1/models", "/v1/models/{model_id}", "/v1/models/resolve", "/v1/models/refresh", "/v1/status", "/openapi.json",
        "/v1/catalogs", "/v1/catalogs/{gateway_id}", "/livez", "/readyz",
        "/startupz", "/metrics",
    }
    schemas = document["components"]["schemas"]
    # The record's fields, always there, and a failing model's two (issue 17), only on one.
    assert set(schemas["ModelInfo"]["properties"]) == set(ModelInfo.model_fields) | {"status", "failing"}
    assert set(schemas["ModelInfo"]["required"]) == set(ModelInfo.model_fields)
    assert "securitySchemes" not in document["components"]
    assert "401" not in document["paths"]["/v1/models"]["get"]["responses"]


async def test_openapi_document_with_a_key_says_so() -> None:
    async with app_with(api_key=KEY) as client:
        document = (await client.get("/openapi.json", headers={"x-api-key": KEY})).json()
    assert document["security"] and set(document["components"]["securitySchemes"]) == {"ApiKey", "Bearer", "Basic"}
    assert "401" in document["paths"]["/v1/models"]["get"]["responses"]
    assert document["paths"]["/livez"]["get"]["security"] == []


def test_the_listening_socket_says_it_is_tcp_so_answers_are_not_held_by_nagle() -> None:
    # asyncio sets TCP_NODELAY on accepted connections only when the listening socket's proto
    # is IPPROTO_TCP; with 0, every small answer waited ~40 ms for the client's delayed ACK.
    import socket

    from sidecar.http.server import bind_socket

    sock = bind_socket("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()


@pytest.mark.anyio
async def test_a_new_catalog_is_served_at_once_though_pages_are_kept_encoded() -> None:
    current = {"catalog": Catalog([ModelInfo(id="a", display_name="A")])}
    app = create_app(view_of(lambda: current["catalog"], lambda: {"ready": True}))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sidecar") as client:
        first = await client.get("/v1/models", params={"limit": 5})
        again = await client.get("/v1/models", params={"limit": 5})
        assert first.content == again.content and first.headers["content-type"] == "application/json"
        current["catalog"] = Catalog([ModelInfo(id="a", display_name="A"), ModelInfo(id="b", display_name="B")])
        changed = await client.get("/v1/models", params={"limit": 5})
        assert [m["id"] for m in changed.json()["data"]] == ["a", "b"]
        assert [m["id"] for m in (await client.get("/v1/models", params={"limit": 1})).json()["data"]] == ["a"]
        unknown = await client.get("/v1/models", params={"after_id": "nope"})
        assert unknown.status_code in (400, 404) and unknown.json()["type"] == "error"


ON_LOOPBACK = BrowserPolicy.for_listen("127.0.0.1")


async def test_a_foreign_host_on_loopback_is_refused_before_the_key_and_before_forwarding() -> None:
    seen: list[bytes] = []
    async with forwarding_app(seen, browsers=ON_LOOPBACK, api_key=KEY) as client:
        for path in ["/session", "/v1/models", "/livez"]:
            refused = await client.post(path, json={}, headers={"host": "rebind.evil.example", "x-api-key": KEY})
            assert_anthropic_error(refused, 403, "permission_error")
            assert "SIDECAR_ALLOWED_HOSTS" in refused.json()["error"]["message"]
        assert_anthropic_error(await client.get("/v1/models", headers={"host": "evil.example"}), 403, "permission_error")
        served = await client.post("/session", json={}, headers={"host": "127.0.0.1:4097", "x-api-key": KEY})
        assert served.status_code == 200
    assert seen == [b"{}"]


async def test_a_foreign_origin_is_refused_and_the_own_origin_served() -> None:
    seen: list[bytes] = []
    async with forwarding_app(seen) as client:
        for origin in ["http://evil.example", "null", "http://sidecar:8080"]:
            refused = await client.post("/session", json={}, headers={"origin": origin})
            assert_anthropic_error(refused, 403, "permission_error")
            assert "SIDECAR_ALLOWED_ORIGINS" in refused.json()["error"]["message"]
        assert seen == []
        assert (await client.post("/session", json={}, headers={"origin": "http://sidecar"})).status_code == 200
        assert (await client.post("/session", json={})).status_code == 200
    assert len(seen) == 2


async def call_websocket(app: object, headers: list[tuple[bytes, bytes]], *, denial: bool) -> list[dict]:
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "websocket.connect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "websocket", "asgi": {"version": "3.0"}, "http_version": "1.1", "scheme": "ws",
        "path": "/pty/pty_1/connect", "raw_path": b"/pty/pty_1/connect", "query_string": b"", "root_path": "",
        "headers": headers, "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 4097), "subprotocols": [],
        "extensions": {"websocket.http.response": {}} if denial else {},
    }
    await app(scope, receive, send)  # type: ignore[operator]
    return sent


@pytest.mark.parametrize(
    ("headers", "names"),
    [
        ([(b"host", b"rebind.evil.example")], "SIDECAR_ALLOWED_HOSTS"),
        ([(b"host", b"127.0.0.1:4097"), (b"origin", b"http://evil.example")], "SIDECAR_ALLOWED_ORIGINS"),
        ([(b"host", b"127.0.0.1:4097")], "API key"),
    ],
)
async def test_a_websocket_handshake_is_refused_like_a_request(headers: list, names: str) -> None:
    app = create_app(view_of(lambda: CATALOG, lambda: {"ready": True}, api_key=KEY), ON_LOOPBACK)
    with_body = await call_websocket(app, headers, denial=True)
    assert with_body[0]["type"] == "websocket.http.response.start" and with_body[0]["status"] in (401, 403)
    assert names in json.loads(with_body[1]["body"])["error"]["message"]
    # A server that can't send a body refuses the handshake all the same (uvicorn answers 403).
    assert (await call_websocket(app, headers, denial=False))[0]["type"] == "websocket.close"


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
@pytest.mark.parametrize("path", ["/livez", "/readyz", "/startupz", "/metrics"])
async def test_probe_paths_are_open_to_get_and_head_only_and_never_forward(method: str, path: str) -> None:
    seen: list[bytes] = []
    async with forwarding_app(seen, api_key=KEY, metrics=lambda: b"") as client:
        assert (await client.get(path)).status_code == 200
        assert (await client.head(path)).status_code == 200
        assert_anthropic_error(await client.request(method, path, params={"directory": "/tmp/x"}), 401, "authentication_error")
        keyed = await client.request(method, path, params={"directory": "/tmp/x"}, headers={"x-api-key": KEY})
        assert_anthropic_error(keyed, 405, "invalid_request_error")
        assert keyed.headers["allow"] == "GET, HEAD"
    async with forwarding_app(seen, metrics=lambda: b"") as client:
        assert_anthropic_error(await client.request(method, path), 405, "invalid_request_error")
    assert seen == []


@pytest.mark.parametrize("path", ["/session", "/v1/models/resolve", "/livez"])
async def test_content_length_beside_transfer_encoding_is_a_400_that_closes(path: str) -> None:
    seen: list[bytes] = []
    async with forwarding_app(seen, resolver=RecordingResolver()) as client:
        request = client.build_request("POST", path, content=b'{"model": "m"}')
        request.headers["transfer-encoding"] = "chunked"
        answer = await client.send(request)
    assert_anthropic_error(answer, 400, "invalid_request_error")
    assert "Transfer-Encoding" in answer.json()["error"]["message"] and answer.headers["connection"] == "close"
    assert seen == []


async def test_openapi_document_describes_the_403_everywhere(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert operation["responses"]["403"] == {"$ref": "#/components/responses/Forbidden"}, (method, path)
    assert "SIDECAR_ALLOWED_HOSTS" in document["components"]["responses"]["Forbidden"]["description"]
