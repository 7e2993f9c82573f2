"""The hot reads answered in front of Starlette (sidecar/http/fast_reads.py) answer exactly what the
Starlette app behind them answers, hostile requests included, and hand every request a guard would
refuse to the app: each request of a matrix (methods, paths, keys, tokens, Host and Origin, body
framing, queries) is sent to both and the answers compared; then the front's own share is checked,
so that a front that answered nothing itself (or everything) fails too."""

from __future__ import annotations

import base64
import itertools
import json
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from sidecar.catalog import Catalog, ModelInfo
from sidecar.http.exposure import BrowserPolicy
from sidecar.http.fast_reads import FastReads
from sidecar.http.routes import create_app
from tests.support.api_view import TEST_GATEWAY_TOKEN, view_of

pytestmark = pytest.mark.anyio

KEY = "fast-reads-test-key-0123456789abcdef"
CATALOG = Catalog([ModelInfo(id=f"vendor/model-{i:02d}", display_name=f"Model {i}") for i in range(30)])
POLICY = BrowserPolicy.for_listen("127.0.0.1", ["sidecar.internal"], ["https://app.example.com"])
PATHS = ["/v1/models", "/v1/models/", "/v1/%6Dodels", "/V1/models", "//v1/models", "/livez", "/livez/", "/readyz", "/startupz"]
CREDENTIALS: dict[str, list[tuple[str, bytes]]] = {
    "none": [],
    "key": [("x-api-key", KEY.encode())],
    "bearer": [("authorization", f"Bearer {KEY}".encode())],
    "bearer lowercase": [("authorization", f"bearer   {KEY}  ".encode())],
    "basic": [("authorization", b"Basic " + base64.b64encode(f"me:{KEY}".encode()))],
    "wrong key": [("x-api-key", b"wrong-key-of-about-the-same-length-000")],
    "wrong first key": [("x-api-key", b"wrong"), ("x-api-key", KEY.encode())],
    "wrong key, right bearer": [("x-api-key", b"wrong"), ("authorization", f"Bearer {KEY}".encode())],
    "basic first, bearer second": [("authorization", b"Basic bm8="), ("authorization", f"Bearer {KEY}".encode())],
    "key padded with nbsp": [("authorization", f"Bearer {KEY}".encode() + b"\xa0")],
    "token": [("x-api-key", TEST_GATEWAY_TOKEN.encode())],
    "token as bearer": [("authorization", f"Bearer {TEST_GATEWAY_TOKEN}".encode())],
    "token padded with nbsp": [("authorization", f"Bearer {TEST_GATEWAY_TOKEN}".encode() + b"\xa0")],
    "key and token": [("x-api-key", KEY.encode()), ("authorization", f"Bearer {TEST_GATEWAY_TOKEN}".encode())],
    "key, token second": [("x-api-key", KEY.encode()), ("x-api-key", TEST_GATEWAY_TOKEN.encode())],
}
BROWSERS: dict[str, list[tuple[str, bytes]]] = {
    "loopback": [("host", b"127.0.0.1:4097")],
    "listed host": [("host", b"SIDECAR.internal:80")],
    "foreign host": [("host", b"rebind.evil.example:4097")],
    "two hosts": [("host", b"127.0.0.1"), ("host", b"127.0.0.1")],
    "same origin": [("host", b"localhost:4097"), ("origin", b"http://localhost:4097")],
    "listed origin": [("host", b"127.0.0.1:4097"), ("origin", b"https://app.example.com")],
    "foreign origin": [("host", b"127.0.0.1:4097"), ("origin", b"https://evil.example")],
    "null origin": [("host", b"127.0.0.1:4097"), ("origin", b"null")],
    # Past what the front remembers: decided afresh each time, and alike.
    "long foreign origin": [("host", b"127.0.0.1:4097"), ("origin", b"https://" + b"a" * 600 + b".example")],
    "long listed host": [("host", b"sidecar.internal:4097"), ("x-pad", b"p"), ("host", b"x" * 600)],
}
FRAMING: dict[str, list[tuple[str, bytes]]] = {
    "none": [],
    "empty body": [("content-length", b"0")],
    "two framings": [("content-length", b"3"), ("transfer-encoding", b"chunked")],
    "huge length": [("content-length", b"999999999")],
}
# opencode's `?auth_token=`: base64 of `user:password`, the key as the password.
AUTH_TOKEN = "auth_token=" + base64.b64encode(f"opencode:{KEY}".encode()).decode()
QUERIES = [
    "", "limit=1000", "limit=2&after_id=vendor/model-03", "before_id=vendor/model-05", "limit=0", "limit=x",
    "after_id=unknown", "after_id=vendor/model-01&before_id=vendor/model-05", "limit=3&limit=1", f"auth_token={KEY}",
    AUTH_TOKEN, "limit=%31", "limit=5&pad=" + "x" * 600,
]


class Recorded:
    """The app behind the front, noting each request it is handed."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.handed: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.handed.append(scope["path"])
        await self.app(scope, receive, send)


def apps(api_key: str | None, ready: bool = True) -> tuple[FastReads, Recorded]:
    front = create_app(view_of(lambda: CATALOG, lambda: {"ready": ready}, api_key=api_key), POLICY)
    assert isinstance(front, FastReads)
    behind = front.app = Recorded(front.app)  # type: ignore[assignment]
    return front, behind


def comparable(response: httpx.Response) -> tuple[int, dict[str, str], Any]:
    """An answer without what differs by chance: an error's request id."""
    headers = {name: value for name, value in response.headers.items() if name != "request-id"}
    body: Any = response.content
    if response.headers.get("content-type") == "application/json" and body:
        body = json.loads(body)
        if isinstance(body, dict):
            body.pop("request_id", None)
    return response.status_code, headers, body


async def send(app: ASGIApp, method: str, target: str, headers: list[tuple[str, bytes]]) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:4097") as client:
        return await client.request(method, target, headers=headers)


def targets(paths: list[str]) -> list[str]:
    """The pages' queries where there are pages; elsewhere only the key in the query."""
    found = []
    for path in paths:
        queries = QUERIES if "models" in path.lower() else ["", AUTH_TOKEN]
        found += [f"{path}?{query}" if query else path for query in queries]
    return found


def requests(paths: list[str]) -> list[tuple[str, str, str, list[tuple[str, bytes]]]]:
    """Every credential seen from loopback; every browser and framing with no credential and the key."""
    shapes = [(name, [*BROWSERS["loopback"], *offered]) for name, offered in CREDENTIALS.items()]
    for credentials in ("none", "key"):
        shapes += [(f"{credentials}, {name}", [*seen, *CREDENTIALS[credentials]]) for name, seen in BROWSERS.items()]
        shapes += [
            (f"{credentials}, {name}", [*BROWSERS["loopback"], *CREDENTIALS[credentials], *framed])
            for name, framed in FRAMING.items()
        ]
    return [
        (method, target, name, headers)
        for method, target, (name, headers) in itertools.product(["GET", "HEAD", "POST"], targets(paths), shapes)
    ]


@pytest.mark.parametrize(
    ("api_key", "ready", "paths"),
    [(KEY, True, PATHS), (None, True, PATHS), (KEY, False, ["/readyz"]), (None, False, ["/readyz"])],
    ids=["keyed", "open", "keyed, not ready", "open, not ready"],
)
async def test_the_front_answers_every_request_as_the_app_behind_it(
    api_key: str | None, ready: bool, paths: list[str]
) -> None:
    front, behind = apps(api_key, ready)
    served_in_front = 0
    base = "http://127.0.0.1:4097"
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=front), base_url=base) as through_front,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=behind.app), base_url=base) as app_alone,
    ):
        for method, target, shape, headers in requests(paths):
            handed_before = len(behind.handed)
            fast = await through_front.request(method, target, headers=headers)
            served_in_front += len(behind.handed) == handed_before
            slow = await app_alone.request(method, target, headers=headers)
            assert comparable(fast) == comparable(slow), (method, target, shape)
    assert served_in_front > 10  # the front did answer: this compared it, not the app with itself


@pytest.mark.parametrize(
    ("method", "target", "credentials", "browser", "framing"),
    [
        ("GET", "/v1/models", "none", "loopback", "none"),
        ("GET", "/v1/models", "wrong key", "loopback", "none"),
        ("GET", "/v1/models", "wrong first key", "loopback", "none"),
        ("GET", "/v1/models", "basic first, bearer second", "loopback", "none"),
        ("GET", "/v1/models", "token", "loopback", "none"),
        ("GET", "/v1/models", "key and token", "loopback", "none"),
        ("GET", "/livez", "token as bearer", "loopback", "none"),
        ("GET", "/readyz", "token padded with nbsp", "loopback", "none"),
        ("GET", "/v1/models", "key", "foreign host", "none"),
        ("HEAD", "/livez", "none", "two hosts", "none"),
        ("GET", "/v1/models", "key", "foreign origin", "none"),
        ("GET", "/readyz", "none", "null origin", "none"),
        ("GET", "/v1/models", "key", "loopback", "two framings"),
        ("GET", "/livez", "none", "loopback", "huge length"),
        ("POST", "/v1/models", "key", "loopback", "none"),
        ("GET", "/v1/models?limit=0", "key", "loopback", "none"),
        ("GET", "/v1/models?after_id=unknown", "key", "loopback", "none"),
        ("GET", "/v1/models/", "key", "loopback", "none"),
        ("GET", "/startupz", "none", "loopback", "none"),
    ],
)
async def test_what_a_guard_refuses_or_the_app_must_decide_is_handed_to_the_app(
    method: str, target: str, credentials: str, browser: str, framing: str
) -> None:
    front, behind = apps(KEY)
    await send(front, method, target, [*BROWSERS[browser], *CREDENTIALS[credentials], *FRAMING[framing]])
    assert behind.handed, "the front answered it itself"


@pytest.mark.parametrize(
    ("method", "target", "credentials", "browser"),
    [
        ("GET", "/v1/models", "key", "loopback"),
        ("HEAD", "/v1/models?limit=1000", "bearer", "listed host"),
        ("GET", "/v1/%6Dodels?limit=2&after_id=vendor/model-03", "key", "same origin"),
        ("GET", "/livez", "none", "listed origin"),
        ("GET", "/readyz", "none", "loopback"),
    ],
)
async def test_plain_reads_are_answered_in_front(method: str, target: str, credentials: str, browser: str) -> None:
    front, behind = apps(KEY)
    answer = await send(front, method, target, [*BROWSERS[browser], *CREDENTIALS[credentials]])
    assert answer.status_code == 200
    assert behind.handed == []


async def test_a_page_served_in_front_follows_a_new_catalog() -> None:
    current = {"catalog": CATALOG}
    front = create_app(view_of(lambda: current["catalog"]), POLICY)
    first = await send(front, "GET", "/v1/models?limit=1", [])
    assert first.json()["data"][0]["id"] == "vendor/model-00"
    current["catalog"] = Catalog([ModelInfo(id="vendor/new", display_name="New")])
    again = (await send(front, "GET", "/v1/models?limit=1", [])).json()
    assert [model["id"] for model in again["data"]] == ["vendor/new"] and again["has_more"] is False
