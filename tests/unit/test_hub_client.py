"""The follower's hub client (fleet mode) against a fake hub (httpx.MockTransport): the contract's
requests, 304s without per-model work, and a broken or hostile hub refused with a clear error."""

from __future__ import annotations

import json
import anyio
import httpx
import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from sidecar.catalog import Catalog, ModelInfo
from sidecar.gateway.client import GatewayError
from sidecar.gateway.config import Gateway
from sidecar.gateway.hub import HubFedClient
from sidecar.lists.entries import MAX_LIST_BYTES

pytestmark = pytest.mark.anyio

HUB_KEY = "hub-key-0123456789abcdef0123456789abcdef"
GATEWAY_KEY = "sk-gateway-secret-0123456789"


def gateway(**overrides: object) -> Gateway:
    fields: dict = dict(
        id="litellm", name="LiteLLM", api_base="http://gw:4000/v1", format="litellm", npm="@ai-sdk/openai-compatible",
        poll_interval=30.0, api_key_env="GW_KEY", api_key=SecretStr(GATEWAY_KEY), env_names=("GW_KEY",),
        secret_values=(GATEWAY_KEY, HUB_KEY), catalog_url="http://hub:4097", catalog_api_key_env="HUB_KEY",
        catalog_api_key=SecretStr(HUB_KEY), catalog_gateway="shared",
    )
    fields.update(overrides)
    return Gateway(**fields)


def answer(ids: list[str], version: str = "v1", *, gateway_id: str = "shared", **extra: object) -> dict:
    records = json.loads(Catalog(ModelInfo(id=i, display_name=i) for i in ids).to_json())
    return {"gateway": gateway_id, "version": version, "listed": len(ids), "models": records, "wildcards": [], **extra}


class FakeHub:
    """Answers with `body` (a dict, or raw bytes) and the version's ETag; 304 when asked with it."""

    def __init__(self, body: dict | bytes) -> None:
        self.body = body
        self.status = 200
        self.headers: dict[str, str] = {}
        self.requests: list[httpx.Request] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.status != 200:
            return httpx.Response(self.status, headers=self.headers, json={"error": {"message": f"no {HUB_KEY}"}})
        if isinstance(self.body, bytes):
            return httpx.Response(200, content=self.body, headers=self.headers)
        etag = f'"{self.body["version"]}"'
        if request.headers.get("if-none-match") == etag:
            return httpx.Response(304, headers={"etag": etag})
        return httpx.Response(200, json=self.body, headers={"etag": etag, **self.headers})


def client(hub: FakeHub, *, max_models: int = 100, retries: int = 0, **overrides: object) -> HubFedClient:
    def gateway_side(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"the gateway was asked {request.url.path}")

    async def no_sleep(seconds: float) -> None:
        return None

    return HubFedClient(
        gateway(**overrides), timeout=5, retries=retries, max_models=max_models, secrets=(GATEWAY_KEY, HUB_KEY),
        transport=httpx.MockTransport(gateway_side), hub_transport=httpx.MockTransport(hub.handle), sleep=no_sleep,
    )


async def test_asks_the_hub_with_its_key_and_never_the_gateway() -> None:
    hub = FakeHub(answer(["a", "b"], wildcards=["openai/*", "bad\x00*", "nostar"]))
    source = client(hub)
    catalog = await source.fetch_catalog()
    assert sorted(catalog.ids) == ["a", "b"] and source.version == "v1"
    assert source.routes == ("openai/*",)  # the wildcard routes feed the matcher as a gateway's would
    request = hub.requests[0]
    assert str(request.url) == "http://hub:4097/v1/catalogs/shared"  # at once: no wait without a version
    assert request.headers["authorization"] == f"Bearer {HUB_KEY}"
    assert GATEWAY_KEY not in str(request.headers)
    await source.aclose()


async def test_a_long_poll_sends_the_version_and_a_304_gives_back_the_same_catalog() -> None:
    hub = FakeHub(answer(["a", "b"]))
    source = client(hub)
    first = await source.fetch_catalog()
    again = await source.long_poll(30)
    assert again is first  # the same object: no per-model work downstream
    request = hub.requests[1]
    assert request.url.params["wait"] == "30" and request.headers["if-none-match"] == '"v1"'
    hub.body = answer(["a", "b", "c"], "v2")
    changed = await source.long_poll(30)
    assert sorted(changed.ids) == ["a", "b", "c"] and source.version == "v2"
    await source.aclose()


async def test_include_exclude_and_the_cap_apply_as_to_a_gateways_list() -> None:
    ids = [f"m{i}" for i in range(10)] + ["skip-me"]
    hub = FakeHub(answer(ids, listed=20))
    source = client(hub, max_models=4, exclude=("skip-*",))
    catalog = await source.fetch_catalog()
    assert len(catalog) == 4 and "skip-me" not in catalog
    assert catalog.listed == 10 + (20 - 11)  # the hub's own cap left 9 out: still listed
    assert len(source.unkept) == 6 and "skip-me" not in source.unkept  # usable by name, as listed
    await source.aclose()


HOSTILE = {
    "not JSON": (b"{not json", "the body is not JSON"),
    "an array": (b"[1, 2]", "not a JSON object"),
    "no models": (json.dumps({"gateway": "shared", "version": "v"}).encode(), "models: is required"),
    "another gateway": (json.dumps(answer(["a"], gateway_id="other")).encode(), "another gateway's catalog"),
    "an empty id": (json.dumps(answer([" "])).encode(), "models[0].id is empty"),
    "a reserved id": (json.dumps(answer(["ok", "__proto__"])).encode(), "Object.prototype"),
    "a control character": (json.dumps(answer(["a\x1b[31m"])).encode(), "control characters"),
    "a long id": (json.dumps(answer(["x" * 300])).encode(), "longer than 256"),
    "a quoted version": (json.dumps(answer(["a"], version='v"1')).encode(), "version"),
    "a huge version": (json.dumps(answer(["a"], version="v" * 1000)).encode(), "version"),
    "deep nesting": (b"[" * 100_000 + b"]" * 100_000, "malformed catalog"),
    "too many objects": (b'{"models": [' + b"{}," * 300_000 + b"{}]}", "JSON objects"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
async def test_a_broken_or_hostile_answer_is_a_clear_error(name: str) -> None:
    body, expected = HOSTILE[name]
    hub = FakeHub(body)
    source = client(hub)
    with pytest.raises(GatewayError, match="malformed catalog from the hub") as caught:
        await source.fetch_catalog()
    assert expected in str(caught.value)
    assert len(str(caught.value)) < 400 and "\x1b" not in str(caught.value)
    await source.aclose()


async def test_an_oversized_answer_is_refused_unread() -> None:
    hub = FakeHub(b" " * (MAX_LIST_BYTES + 1))
    source = client(hub)
    with pytest.raises(GatewayError, match="larger than"):
        await source.fetch_catalog()
    await source.aclose()


async def test_a_bad_answer_after_a_good_one_keeps_the_good_one_held() -> None:
    hub = FakeHub(answer(["a"]))
    source = client(hub)
    good = await source.fetch_catalog()
    hub.body = b"garbage"
    with pytest.raises(GatewayError):
        await source.long_poll(30)
    hub.body = answer(["a"])
    assert await source.long_poll(30) is good  # still v1: asked with it, a 304
    await source.aclose()


@pytest.mark.parametrize(
    ("status", "expected"),
    [(404, "no catalog of gateway 'shared'"), (401, "refused this sidecar's key"), (503, "HTTP 503"),
     (302, "not followed"), (418, "HTTP 418")],
)
async def test_refusals_are_errors_naming_the_cause_without_the_key(status: int, expected: str) -> None:
    hub = FakeHub(answer(["a"]))
    hub.status = status
    hub.headers = {"location": "http://elsewhere/"} if status == 302 else {}
    source = client(hub, retries=2)
    with capture_logs() as logs:
        with pytest.raises(GatewayError, match=expected) as caught:
            await source.fetch_catalog()
    assert HUB_KEY not in str(caught.value) and HUB_KEY not in str(logs)
    assert len(hub.requests) == (3 if status == 503 else 1)  # only the transient one retried
    await source.aclose()


async def test_an_answer_sent_before_a_newer_one_never_puts_the_older_list_back() -> None:
    hub = FakeHub(answer(["a"]))
    release = anyio.Event()

    async def holding(request: httpx.Request) -> httpx.Response:
        if "wait" in request.url.params:  # the long-poll: held, then answered with what it saw then
            stale = httpx.Response(200, json=answer(["a", "z"], "v1.5"), headers={"etag": '"v1.5"'})
            await release.wait()
            return stale
        return hub.handle(request)

    source = client(hub)
    await source.fetch_catalog()
    source._hub._transport = httpx.MockTransport(holding)  # type: ignore[attr-defined]
    hub.body = answer(["a", "b"], "v2")
    async with anyio.create_task_group() as group:
        late: list[Catalog] = []

        async def long_poll() -> None:
            late.append(await source.long_poll(30))

        group.start_soon(long_poll)
        await anyio.wait_all_tasks_blocked()
        newer = await source.fetch_catalog()  # a refresh, asked after the long-poll went out
        release.set()
    assert late[0] is newer and source.version == "v2"
    await source.aclose()


@pytest.mark.parametrize(("interval", "sent"), [(30.0, "30"), (0.25, "0.25"), (3600.0, "300"), (1e-9, None)])
async def test_the_wait_sent_is_a_plain_decimal_within_the_contracts_bound(interval: float, sent: str | None) -> None:
    hub = FakeHub(answer(["a"]))
    source = client(hub)
    await source.fetch_catalog()
    await source.long_poll(interval)
    assert hub.requests[-1].url.params.get("wait") == sent
    await source.aclose()


async def test_reads_what_a_hub_serves() -> None:
    from sidecar.served import served_list

    listed = Catalog([ModelInfo(id="a", display_name="A", max_tokens=10), ModelInfo(id="b", display_name="b")])
    served = served_list("shared", listed, ["openai/*"])

    def hub(request: httpx.Request) -> httpx.Response:
        if request.headers.get("if-none-match") == served.etag:
            return httpx.Response(304, headers={"etag": served.etag})
        return httpx.Response(200, content=served.body, headers={"etag": served.etag})

    source = client(FakeHub(b""))
    source._hub._transport = httpx.MockTransport(hub)  # type: ignore[attr-defined]
    catalog = await source.fetch_catalog()
    assert catalog.same_models(listed) and source.routes == ("openai/*",) and source.version == served.version
    assert await source.long_poll(30) is catalog
    await source.aclose()


async def test_probes_go_to_the_gateway_with_its_key_never_to_the_hub() -> None:
    hub = FakeHub(answer(["a"]))
    asked: list[httpx.Request] = []

    def gateway_side(request: httpx.Request) -> httpx.Response:
        asked.append(request)
        return httpx.Response(200, json={"choices": []})

    source = HubFedClient(
        gateway(), timeout=5, retries=0, max_models=10, secrets=(GATEWAY_KEY, HUB_KEY),
        transport=httpx.MockTransport(gateway_side), hub_transport=httpx.MockTransport(hub.handle),
    )
    await source.probe("some-model")
    (request,) = asked
    assert str(request.url) == "http://gw:4000/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {GATEWAY_KEY}" and HUB_KEY not in str(request.headers)
    assert hub.requests == []
    await source.aclose()
