"""`/v1/catalogs` (fleet mode, the hub side): versions, ETag and 304, the held long-poll, the refusals;
and the reconciler handing each poll's good list to it. In process, woken by events: no test waits
on the clock to see that nothing happened."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import httpx
import pytest

from sidecar.catalog import Catalog, ModelInfo
from sidecar.gateway.client import GatewayError
from sidecar.http.catalogs import matches, parse_wait
from sidecar.http.routes import create_app
from sidecar.errors import HttpError
from sidecar.metrics import Metrics
from sidecar.naming import ModelRef
from sidecar.reconcile import Reconciler
from sidecar.served import ServedCatalogs, served_list
from sidecar.settings import Settings
from sidecar.statefiles import StatePaths
from tests.support.api_view import view_of

pytestmark = pytest.mark.anyio


def catalog(*ids: str, listed: int | None = None) -> Catalog:
    return Catalog((ModelInfo(id=i, display_name=i.upper(), max_tokens=4096) for i in ids), listed=listed)


def client_of(feeds: ServedCatalogs, api_key: str | None = None) -> httpx.AsyncClient:
    app = create_app(view_of(catalogs=feeds, api_key=api_key))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sidecar")


def test_the_version_is_a_hash_of_what_is_served_and_not_of_the_gateway_id() -> None:
    one = served_list("hub-a", catalog("a", "b"), ["openai/*"])
    assert one.version == served_list("other", catalog("b", "a"), ["openai/*"]).version  # order of the gateway's
    assert 16 <= len(one.version) <= 64 and int(one.version, 16) >= 0
    assert one.version != served_list("hub-a", catalog("a", "b"), []).version
    assert one.version != served_list("hub-a", catalog("a", "b", "c"), ["openai/*"]).version
    assert one.version != served_list("hub-a", catalog("a", "b", listed=5), ["openai/*"]).version
    body = json.loads(one.body)
    assert body == {
        "gateway": "hub-a",
        "version": one.version,
        "listed": 2,
        "models": json.loads(catalog("a", "b").to_json()),
        "wildcards": ["openai/*"],
    }
    assert Catalog.from_json(json.dumps(body["models"])).same_models(catalog("a", "b"))


def test_an_update_with_the_same_catalog_object_does_nothing_and_an_equal_one_keeps_the_version() -> None:
    feeds = ServedCatalogs(["gw"])
    first = catalog("a")
    assert feeds.update("gw", first) is True
    served = feeds.gateways["gw"].current
    assert feeds.update("gw", first) is False
    assert feeds.gateways["gw"].current is served  # not even hashed again
    assert feeds.update("gw", catalog("a")) is False  # a new object, the same content
    assert feeds.gateways["gw"].current is served
    assert feeds.update("gw", first, ["openai/*"]) is True


@pytest.mark.parametrize("raw", ["-1", "1e309", "nan", "inf", "x", "", "300.5", "9" * 400, "1_0", " 1", "0x10"])
def test_bad_wait_values_are_refused(raw: str) -> None:
    with pytest.raises(HttpError) as caught:
        parse_wait(raw)
    assert caught.value.status == 400


@pytest.mark.parametrize(("raw", "wait"), [(None, 0.0), ("0", 0.0), ("30", 30.0), ("0.25", 0.25), ("300", 300.0)])
def test_good_wait_values(raw: str | None, wait: float) -> None:
    assert parse_wait(raw) == wait


def test_if_none_match_forms() -> None:
    assert matches('"abc"', '"abc"') and matches('W/"abc"', '"abc"') and matches('"x", "abc"', '"abc"')
    assert matches("*", '"abc"')
    assert not matches(None, '"abc"') and not matches('"abcd"', '"abc"') and not matches("abc", '"abc"')


async def test_the_index_and_one_gateway_with_etag_and_304() -> None:
    feeds = ServedCatalogs(["litellm", "portkey"])
    feeds.update("litellm", catalog("a", "b"), ["openai/*"])
    async with client_of(feeds) as client:
        index = (await client.get("/v1/catalogs")).json()
        version = feeds.gateways["litellm"].current.version  # type: ignore[union-attr]
        assert index == {
            "data": [
                {"gateway": "litellm", "version": version, "models": 2},
                {"gateway": "portkey", "version": None, "models": 0},
            ]
        }
        answer = await client.get("/v1/catalogs/litellm")
        assert answer.status_code == 200
        assert answer.headers["etag"] == f'"{version}"' and answer.headers["cache-control"] == "no-cache"
        assert answer.json()["version"] == version and [m["id"] for m in answer.json()["models"]] == ["a", "b"]
        again = await client.get("/v1/catalogs/litellm", headers={"if-none-match": answer.headers["etag"]})
        assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == answer.headers["etag"]
        stale = await client.get("/v1/catalogs/litellm", headers={"if-none-match": '"old"'}, params={"wait": "30"})
        assert stale.status_code == 200 and stale.json()["version"] == version  # at once: it is not the current one
        unknown = await client.get("/v1/catalogs/nope")
        assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "not_found_error"
        for path in ("/v1/catalogs/", "/v1/catalogs/litellm/x", "/v1/catalogs/..%2flitellm"):
            assert (await client.get(path)).status_code == 404, path
        not_yet = await client.get("/v1/catalogs/portkey")
        assert not_yet.status_code == 503 and not_yet.headers["retry-after"]
        assert not_yet.json()["error"]["type"] == "overloaded_error"
        bad = await client.get("/v1/catalogs/litellm", params={"wait": "nan"})
        assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            refused = await client.request(method, "/v1/catalogs/litellm")
            assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD"
        assert (await client.head("/v1/catalogs/litellm")).status_code == 200


async def test_the_key_guards_the_catalogs() -> None:
    feeds = ServedCatalogs(["litellm"])
    feeds.update("litellm", catalog("a"))
    async with client_of(feeds, api_key="hub-key-0123456789") as client:
        for path in ("/v1/catalogs", "/v1/catalogs/litellm"):
            assert (await client.get(path)).status_code == 401
            assert (await client.get(path, headers={"x-api-key": "wrong"})).status_code == 401
            assert (await client.get(path, headers={"authorization": "Bearer hub-key-0123456789"})).status_code == 200


async def test_a_held_long_poll_answers_the_new_version_when_the_list_changes() -> None:
    feeds = ServedCatalogs(["gw"])
    feeds.update("gw", catalog("a"))
    feed = feeds.gateways["gw"]
    etag = feed.current.etag  # type: ignore[union-attr]
    answers: list[httpx.Response] = []
    async with client_of(feeds) as client, anyio.create_task_group() as group:

        async def poll() -> None:
            answers.append(await client.get("/v1/catalogs/gw", params={"wait": "300"}, headers={"if-none-match": etag}))

        for _ in range(50):
            group.start_soon(poll)
        with anyio.fail_after(10):
            while feed.waiting < 50:
                await anyio.sleep(0)
        assert answers == []  # every one is held
        scrape = Metrics()
        scrape.watch_catalogs(feeds)
        assert b'opencode_sidecar_catalog_long_polls{gateway="gw"} 50.0' in scrape.render()
        assert b'opencode_sidecar_catalog_versions_total{gateway="gw"} 1.0' in scrape.render()
        feeds.update("gw", catalog("a", "b"))
    assert b'opencode_sidecar_catalog_long_polls{gateway="gw"} 0.0' in scrape.render()
    assert b'opencode_sidecar_catalog_versions_total{gateway="gw"} 2.0' in scrape.render()
    new = feed.current
    assert new is not None and new.etag != etag
    assert {answer.status_code for answer in answers} == {200}
    assert {answer.headers["etag"] for answer in answers} == {new.etag}
    assert all(answer.content == new.body for answer in answers)
    assert feed.waiting == 0


async def test_a_held_long_poll_answers_304_at_its_deadline() -> None:
    feeds = ServedCatalogs(["gw"])
    feeds.update("gw", catalog("a"))
    etag = feeds.gateways["gw"].current.etag  # type: ignore[union-attr]
    async with client_of(feeds) as client:
        with anyio.fail_after(10):
            answer = await client.get("/v1/catalogs/gw", params={"wait": "0.05"}, headers={"if-none-match": etag})
    assert answer.status_code == 304 and answer.headers["etag"] == etag
    assert feeds.gateways["gw"].waiting == 0


async def test_a_held_long_poll_whose_client_leaves_stops_waiting() -> None:
    """Its task ends with the connection: a client that opens and drops long-polls leaves nothing behind."""
    feeds = ServedCatalogs(["gw"])
    feeds.update("gw", catalog("a"))
    feed = feeds.gateways["gw"]
    app = create_app(view_of(catalogs=feeds))
    disconnect = anyio.Event()
    sent: list[dict[str, object]] = []
    etag = feed.current.etag.encode()  # type: ignore[union-attr]
    scope = {
        "type": "http", "method": "GET", "path": "/v1/catalogs/gw", "raw_path": b"/v1/catalogs/gw",
        "query_string": b"wait=300", "headers": [(b"host", b"127.0.0.1"), (b"if-none-match", etag)],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 4097), "scheme": "http", "root_path": "",
        "http_version": "1.1", "asgi": {"version": "3.0"},
    }
    messages = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict[str, object]:
        if messages:
            return messages.pop()
        await disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(app, scope, receive, send)
            while feed.waiting < 1:
                await anyio.sleep(0)
            disconnect.set()
    assert feed.waiting == 0
    assert sent[0]["status"] == 304  # sent into the void: the server drops it


class Gateway:
    def __init__(self, *ids: str) -> None:
        self.ids = list(ids)
        self.down = False
        self.routes: tuple[str, ...] = ()
        self._last: Catalog | None = None

    async def fetch_catalog(self) -> Catalog:
        if self.down:
            raise GatewayError("request failed: ConnectError")
        fresh = catalog(*self.ids)
        # Like GatewayClient: the same answer gives back the same catalog object.
        if self._last is None or not fresh.same_models(self._last):
            self._last = fresh
        return self._last


class Listener:
    def config_written(self, expected: dict[str, set[str]]) -> None:
        pass


def reconciler_of(tmp_path: Path, gateway: Gateway) -> Reconciler:
    settings = Settings(gateway_url="http://gw", state_dir=tmp_path)  # type: ignore[call-arg]
    return Reconciler(settings, {"litellm": gateway}, Listener(), StatePaths(tmp_path), {})


async def test_the_reconciler_serves_each_good_list_and_not_registered_models(tmp_path: Path) -> None:
    gateway = Gateway("a", "b")
    gateway.routes = ("openai/*",)
    reconciler = reconciler_of(tmp_path, gateway)
    feed = reconciler.served.gateways["litellm"]
    assert feed.current is None  # no good list yet: a 503
    gateway.down = True
    await reconciler.poll_once()
    assert feed.current is None
    gateway.down = False
    await reconciler.poll_once()
    first = feed.current
    assert first is not None and json.loads(first.body)["wildcards"] == ["openai/*"]
    assert [m["id"] for m in json.loads(first.body)["models"]] == ["a", "b"]
    await reconciler.register(ModelRef("litellm", "registered-one"))
    await reconciler.poll_once()
    assert feed.current is first  # unchanged: the registered model is not the gateway's list
    gateway.down = True
    await reconciler.poll_once()
    assert feed.current is first  # a failed poll keeps the last good list
    gateway.down = False
    gateway.ids.append("c")
    waiter_saw: list[str] = []
    async with anyio.create_task_group() as group:

        async def wait() -> None:
            changed = await feed.changed_from(first.version)
            waiter_saw.append(changed.version)  # type: ignore[union-attr]

        group.start_soon(wait)
        with anyio.fail_after(10):
            while feed.waiting < 1:
                await anyio.sleep(0)
        await reconciler.poll_once()
    assert feed.current is not None and waiter_saw == [feed.current.version] != [first.version]


async def test_a_restored_list_is_served_before_the_first_poll(tmp_path: Path) -> None:
    gateway = Gateway("a", "b")
    first = reconciler_of(tmp_path, gateway)
    await first.poll_once()
    version = first.served.gateways["litellm"].current.version  # type: ignore[union-attr]
    again = reconciler_of(tmp_path, gateway)
    assert again.served.gateways["litellm"].current.version == version  # type: ignore[union-attr]


async def test_an_oversized_if_none_match_is_a_400_not_a_hold() -> None:
    feeds = ServedCatalogs(["gw"])
    feeds.update("gw", catalog("a"))
    async with client_of(feeds) as client:
        with anyio.fail_after(10):
            answer = await client.get("/v1/catalogs/gw", params={"wait": "300"}, headers={"if-none-match": "*, " * 4000})
    assert answer.status_code == 400 and "If-None-Match" in answer.json()["error"]["message"]


async def test_closing_answers_every_held_long_poll_not_modified() -> None:
    feeds = ServedCatalogs(["gw"])
    feeds.update("gw", catalog("a"))
    etag = feeds.gateways["gw"].current.etag  # type: ignore[union-attr]
    async with client_of(feeds) as client:
        statuses: list[int] = []

        async def hold() -> None:
            answer = await client.get("/v1/catalogs/gw", params={"wait": "300"}, headers={"if-none-match": etag})
            statuses.append(answer.status_code)

        async with anyio.create_task_group() as group:
            for _ in range(3):
                group.start_soon(hold)
            with anyio.fail_after(10):
                while feeds.waiting < 3:
                    await anyio.sleep(0)
            feeds.close()
    assert statuses == [304, 304, 304] and feeds.waiting == 0
    # A request after the close is answered at once, never held.
    async with client_of(feeds) as client:
        with anyio.fail_after(10):
            answer = await client.get("/v1/catalogs/gw", params={"wait": "300"}, headers={"if-none-match": etag})
    assert answer.status_code == 304


def test_a_versions_body_is_made_by_its_first_request_then_shared() -> None:
    # A sidecar no follower asks holds no served copy of its lists (issue 19, RSS).
    served = served_list("hub-a", catalog("a", "b"), [])
    assert "body" not in vars(served)
    first = served.body
    assert served.body is first and json.loads(first)["version"] == served.version
