"""The sync loop of a hub-fed gateway (fleet mode) with an injected clock: the next long-poll goes
out as soon as an answer arrives, a hub answering at once is not asked in a busy loop, a failure
waits the poll interval with the last good list kept, a 304 writes nothing, and a refresh does not
wait behind a held long-poll."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from sidecar.catalog import Catalog, ModelInfo
from sidecar.gateway.client import GatewayError
from sidecar.poll_loops import MIN_LONG_POLL_GAP
from sidecar.reconcile import Reconciler
from sidecar.settings import Settings
from sidecar.statefiles import StatePaths

pytestmark = pytest.mark.anyio

INTERVAL = 30.0


def catalog(*ids: str) -> Catalog:
    return Catalog(ModelInfo(id=i, display_name=i) for i in ids)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 6))
        self.now += seconds
        await anyio.lowlevel.checkpoint()


class Hub:
    """Each long-poll takes the next scripted answer: (seconds it is held, a catalog or an error)."""

    def __init__(self, clock: Clock, script: list[tuple[float, Catalog | GatewayError]]) -> None:
        self.clock, self.script = clock, script
        self.asked: list[tuple[str, float]] = []  # (how, when)
        self.done = anyio.Event()
        self.held = anyio.Event()  # set while a long-poll is held open (the refresh test)
        self.hold_forever = False
        self.now_answer: Catalog = catalog()

    async def long_poll(self, wait: float) -> Catalog:
        assert wait == INTERVAL  # the long-poll's wait is the poll interval
        self.asked.append(("long", self.clock.now))
        if self.hold_forever:
            self.held.set()
            await anyio.sleep_forever()
        if not self.script:
            self.done.set()
            await anyio.sleep_forever()
        held, got = self.script.pop(0)
        self.clock.now += held
        if isinstance(got, GatewayError):
            raise got
        return got

    async def fetch_catalog(self) -> Catalog:
        self.asked.append(("now", self.clock.now))
        return self.now_answer


class Listener:
    def __init__(self) -> None:
        self.written = 0

    def config_written(self, expected: dict[str, set[str]]) -> None:
        self.written += 1


def make(tmp_path: Path, hub: Hub, clock: Clock) -> tuple[Reconciler, Listener]:
    settings = Settings(gateway_url="http://gw", catalog_url="http://hub:4097", state_dir=tmp_path,
                        poll_interval=INTERVAL)  # type: ignore[arg-type]
    listener = Listener()
    reconciler = Reconciler(settings, {"litellm": hub}, listener, StatePaths(tmp_path), {}, clock=clock,
                            sleep=clock.sleep)
    return reconciler, listener


async def run_until_done(reconciler: Reconciler, hub: Hub) -> None:
    with anyio.fail_after(5):  # the real clock, only against a hang
        async with anyio.create_task_group() as group:
            group.start_soon(reconciler.run)
            await hub.done.wait()
            group.cancel_scope.cancel()


async def test_the_next_long_poll_goes_out_as_soon_as_an_answer_arrives(tmp_path: Path) -> None:
    clock = Clock()
    first = catalog("a", "b")
    hub = Hub(clock, [(0.01, first), (INTERVAL, first), (12.0, catalog("a", "b", "c")), (INTERVAL, first)])
    reconciler, listener = make(tmp_path, hub, clock)
    await run_until_done(reconciler, hub)
    # Held answers (a 304 after the wait, a change after 12 s) are followed at once; only the first,
    # answered at once, leaves the rest of the minimum gap before the next.
    assert clock.slept == [pytest.approx(MIN_LONG_POLL_GAP - 0.01)]
    starts = [when for how, when in hub.asked]
    assert starts == [1000.0, 1001.0, 1031.0, 1043.0, 1073.0]
    assert reconciler.polls["litellm", "changed"] == 3 and reconciler.polls["litellm", "unchanged"] == 1
    assert listener.written == 3
    assert sorted(reconciler.catalog.ids) == ["a", "b"]


async def test_a_hub_answering_at_once_every_time_is_asked_once_a_second(tmp_path: Path) -> None:
    clock = Clock()
    same = catalog("a")
    hub = Hub(clock, [(0.0, same)] * 5)
    reconciler, _ = make(tmp_path, hub, clock)
    await run_until_done(reconciler, hub)
    assert clock.slept == [MIN_LONG_POLL_GAP] * 5
    assert [when for how, when in hub.asked] == [1000.0 + i * MIN_LONG_POLL_GAP for i in range(6)]


async def test_a_304_does_no_write_and_a_failure_keeps_the_list_and_waits_the_interval(tmp_path: Path) -> None:
    clock = Clock()
    good = catalog("a", "b")
    down = GatewayError("the hub could not be asked: ConnectError")
    hub = Hub(clock, [(INTERVAL, good), (INTERVAL, good), (2.0, down), (INTERVAL, good)])
    reconciler, listener = make(tmp_path, hub, clock)
    await run_until_done(reconciler, hub)
    assert listener.written == 1  # the 304s (the same catalog object) wrote nothing
    assert reconciler.polls["litellm", "failed"] == 1 and reconciler.polls["litellm", "unchanged"] == 2
    assert clock.slept == [INTERVAL]  # after the failure only
    assert sorted(reconciler.catalog.ids) == ["a", "b"]
    state = reconciler.gateways["litellm"]
    assert state.last_poll_ok is True and state.last_error is None


async def test_a_refresh_asks_the_hub_at_once_while_a_long_poll_is_held(tmp_path: Path) -> None:
    clock = Clock()
    hub = Hub(clock, [])
    hub.hold_forever = True
    hub.now_answer = catalog("new")
    reconciler, _ = make(tmp_path, hub, clock)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(reconciler.run)
            await hub.held.wait()
            result = await reconciler.refresh("litellm")
            group.cancel_scope.cancel()
    assert result.changed and result.added == ("new",)
    assert [how for how, _ in hub.asked] == ["long", "now"]


async def test_a_follower_serves_the_hubs_list_on(tmp_path: Path) -> None:
    # Any sidecar can be a hub: one that follows a hub serves what it took (a chain of hubs).
    clock = Clock()
    hub = Hub(clock, [(0.0, catalog("a", "b"))])
    reconciler, _ = make(tmp_path, hub, clock)
    assert reconciler.served.get("litellm").current is None  # type: ignore[union-attr]
    await run_until_done(reconciler, hub)
    served = reconciler.served.get("litellm").current  # type: ignore[union-attr]
    assert served is not None and served.models == 2
