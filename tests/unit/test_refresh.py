"""Refresh on demand: polls shared between callers at the same time (polls.py), the answer
(refresh.py), and the route (POST /v1/models/refresh)."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest

from sidecar.errors import HttpError
from sidecar.http.exposure import BrowserPolicy
from sidecar.http.routes import create_app
from sidecar.polls import PollGate, PollResult
from sidecar.refresh import Refresh
from tests.support.api_view import Refreshes, view_of

pytestmark = pytest.mark.anyio


class ScriptedPolls:
    """Each poll waits until the test lets it end; counts the polls started per gateway."""

    def __init__(self) -> None:
        self.started: dict[str, int] = {}
        self.running = 0
        self.most_at_once = 0
        self.release = anyio.Event()

    async def poll(self, gateway_id: str) -> PollResult:
        self.started[gateway_id] = self.started.get(gateway_id, 0) + 1
        number = self.started[gateway_id]
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            await self.release.wait()
        finally:
            self.running -= 1
        return PollResult(gateway_id, ok=True, changed=True, models=number)


async def test_callers_arriving_during_a_poll_share_the_next_one_which_starts_after_them() -> None:
    polls = ScriptedPolls()
    gate = PollGate(polls.poll)
    results: list[PollResult] = []

    async def ask() -> None:
        results.append(await gate.poll("litellm"))

    async with anyio.create_task_group() as group:
        group.start_soon(ask)
        await anyio.wait_all_tasks_blocked()
        assert polls.started == {"litellm": 1}
        for _ in range(5):  # arrive while the first poll runs: it may have read the gateway before them
            group.start_soon(ask)
        await anyio.wait_all_tasks_blocked()
        polls.release.set()
    assert polls.started == {"litellm": 2}  # not 6: the five shared one poll
    assert sorted(result.models for result in results) == [1, 2, 2, 2, 2, 2]
    assert polls.most_at_once == 1


async def test_gateways_are_polled_apart_and_a_later_caller_gets_a_fresh_poll() -> None:
    polls = ScriptedPolls()
    polls.release.set()
    gate = PollGate(polls.poll)
    async with anyio.create_task_group() as group:
        group.start_soon(gate.poll, "a")
        group.start_soon(gate.poll, "b")
    assert (await gate.poll("a")).models == 2  # the earlier poll ended before this call: not reused
    assert polls.started == {"a": 2, "b": 1}


class FakeReconciler:
    def __init__(self, *gateway_ids: str) -> None:
        self.gateways: dict[str, Any] = {gateway_id: object() for gateway_id in gateway_ids}
        self.asked: list[str] = []

    async def refresh(self, gateway_id: str) -> PollResult:
        self.asked.append(gateway_id)
        if gateway_id == "down":
            return PollResult(gateway_id, ok=False, models=3, error="HTTP 503 from the gateway")
        return PollResult(gateway_id, ok=True, changed=True, models=4, added=("gpt-5.5",))


class FakeApplier:
    def __init__(self, settles: bool) -> None:
        self.settles = settles
        self.timeouts: list[float] = []

    async def settled(self, timeout: float) -> bool:
        self.timeouts.append(timeout)
        return self.settles

    def report(self) -> dict[str, Any]:
        return {"waiting_for_idle": [] if self.settles else ["/srv/busy"]}


async def test_a_refresh_polls_every_gateway_and_reports_each_in_the_operators_order() -> None:
    reconciler, applier = FakeReconciler("litellm", "down", "portkey"), FakeApplier(settles=True)
    answer = await Refresh(reconciler, applier, apply_timeout=7.0).refresh(None)
    assert sorted(reconciler.asked) == ["down", "litellm", "portkey"]
    assert [g["gateway"] for g in answer["gateways"]] == ["litellm", "down", "portkey"]
    assert answer["gateways"][0] == {
        "gateway": "litellm", "ok": True, "changed": True, "models": 4, "added": ["gpt-5.5"], "removed": [], "error": None,
    }
    assert answer["gateways"][1]["ok"] is False and answer["gateways"][1]["error"] == "HTTP 503 from the gateway"
    assert answer["applied"] is True and answer["waiting_for_idle"] == []
    assert applier.timeouts == [7.0]


async def test_a_refresh_of_one_gateway_polls_it_alone_and_names_busy_directories() -> None:
    reconciler, applier = FakeReconciler("litellm", "portkey"), FakeApplier(settles=False)
    answer = await Refresh(reconciler, applier, apply_timeout=1.0).refresh("portkey")
    assert reconciler.asked == ["portkey"]
    assert answer["applied"] is False and answer["waiting_for_idle"] == ["/srv/busy"]


async def test_a_refresh_of_an_unknown_gateway_is_404_naming_the_known_ones() -> None:
    reconciler = FakeReconciler("litellm")
    with pytest.raises(HttpError) as raised:
        await Refresh(reconciler, FakeApplier(True), apply_timeout=1.0).refresh("nope")
    assert raised.value.status == 404 and "litellm" in raised.value.message
    assert reconciler.asked == []


def api(refresher: Refreshes, api_key: str | None = None) -> httpx.AsyncClient:
    app = create_app(view_of(refresher=refresher, api_key=api_key), BrowserPolicy.for_listen("127.0.0.1"))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:4097")


@pytest.mark.parametrize(
    ("body", "asked"),
    [(b"", None), (b"{}", None), (b'{"gateway": "portkey"}', "portkey"), (b'{"gateway": null}', None)],
)
async def test_the_route_takes_no_body_or_one_gateway(body: bytes, asked: str | None) -> None:
    refresher = Refreshes({"gateways": [], "applied": True, "waiting_for_idle": []})
    async with api(refresher) as client:
        answer = await client.post("/v1/models/refresh", content=body)
    assert answer.status_code == 200 and answer.json()["applied"] is True
    assert refresher.asked == [asked]


@pytest.mark.parametrize("body", [b"{", b"[]", b'{"gateway": 3}', b'{"gateway": "a", "extra": 1}', b"[" * 10_000])
async def test_the_route_refuses_a_bad_body_without_refreshing(body: bytes) -> None:
    refresher = Refreshes()
    async with api(refresher) as client:
        answer = await client.post("/v1/models/refresh", content=body)
    assert answer.status_code == 400 and answer.json()["error"]["type"] == "invalid_request_error"
    assert refresher.asked == []


async def test_the_route_wants_the_api_key_and_a_post() -> None:
    refresher = Refreshes()
    async with api(refresher, api_key="k" * 32) as client:
        assert (await client.post("/v1/models/refresh")).status_code == 401
        assert (await client.post("/v1/models/refresh", headers={"x-api-key": "k" * 32})).status_code == 200
    assert refresher.asked == [None]


async def test_the_routes_error_is_the_refreshers_own() -> None:
    refresher = Refreshes(HttpError(404, "no gateway 'x' here"))
    async with api(refresher) as client:
        answer = await client.post("/v1/models/refresh", json={"gateway": "x"})
    assert answer.status_code == 404 and answer.json()["error"]["message"] == "no gateway 'x' here"
