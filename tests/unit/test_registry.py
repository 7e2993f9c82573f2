"""The reconciler's registry: requested models are written once, kept, and dropped when listed;
registrations arriving together share a write, and the registry is bounded (issue 13)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import anyio
import anyio.lowlevel
import httpx
import pytest
from structlog.testing import capture_logs

from sidecar.catalog import Catalog, ModelInfo
from sidecar.naming import ModelRef
from sidecar.opencode.client import OpencodeClient
from sidecar.opencode.config import write_atomically
from sidecar.reconcile import Reconciler
from sidecar.registry import RECENT_USE, Registry, RegistryFull, SessionsUnknown, least_recently_used
from sidecar.settings import Settings, SettingsError, load_settings
from sidecar.statefiles import StatePaths

pytestmark = pytest.mark.anyio


class Gateway:
    def __init__(self, *ids: str) -> None:
        self.ids = list(ids)

    async def fetch_catalog(self) -> Catalog:
        return Catalog(ModelInfo(id=i, display_name=i) for i in self.ids)


class Listener:
    def __init__(self) -> None:
        self.written: list[set[str]] = []

    def config_written(self, expected: dict[str, set[str]]) -> None:
        self.written.append(expected["litellm"])


def make(tmp_path: Path, gateway: Gateway) -> tuple[Reconciler, Listener]:
    listener = Listener()
    settings = Settings(gateway_url="http://gw", state_dir=tmp_path)  # type: ignore[arg-type]
    return Reconciler(settings, {"litellm": gateway}, listener, StatePaths(tmp_path), {}), listener


async def test_concurrent_registrations_write_once(tmp_path: Path) -> None:
    reconciler, listener = make(tmp_path, Gateway("listed"))
    await reconciler.poll_once()
    async with anyio.create_task_group() as group:
        for _ in range(20):
            group.start_soon(reconciler.register, ModelRef("litellm", "openai/new"))
    assert len(listener.written) == 2
    assert listener.written[-1] == {"listed", "openai/new"}
    model = reconciler.catalog.get("openai/new")
    assert model is not None and model.registered
    assert reconciler.catalog.get("listed").registered is False  # type: ignore[union-attr]


async def test_registry_survives_restart_until_the_gateway_lists_it(tmp_path: Path) -> None:
    gateway = Gateway("listed")
    first, _ = make(tmp_path, gateway)
    await first.poll_once()
    await first.register(ModelRef("litellm", "openai/new"))
    second, listener = make(tmp_path, gateway)
    assert "openai/new" in second.catalog and second.catalog.get("openai/new").registered  # type: ignore[union-attr]
    await second.poll_once()
    assert listener.written[-1] == {"listed", "openai/new"}
    gateway.ids.append("openai/new")
    await second.poll_once()
    assert not second.registered["litellm"]
    assert second.catalog.get("openai/new").registered is False  # type: ignore[union-attr]
    third, _ = make(tmp_path, gateway)
    assert third.registered == {}


async def test_unregister(tmp_path: Path) -> None:
    reconciler, listener = make(tmp_path, Gateway("listed"))
    await reconciler.poll_once()
    await reconciler.register(ModelRef("litellm", "x"))
    await reconciler.unregister("x")
    assert "x" not in reconciler.catalog
    assert listener.written[-1] == {"listed"}


def saved_models(*ids: str, registered: bool = False) -> list[dict]:
    """Records as this code saves them (`Catalog.to_json`), holding ids an older version accepted."""
    return json.loads(Catalog(ModelInfo(id=i, display_name=i, registered=registered) for i in ids).to_json())


def saved_state(tmp_path: Path, registered: object, listed: list[str]) -> None:
    (tmp_path / "registered.json").write_text(json.dumps(registered, indent=1))
    (tmp_path / "catalog-litellm.json").write_text(json.dumps(saved_models(*listed), indent=1))


async def test_saved_ids_opencode_cannot_hold_are_dropped_at_start_and_the_files_rewritten(tmp_path: Path) -> None:
    # An older version registered `constructor` on request and saved `toString` from a gateway's
    # list; each made opencode answer 500 at every start until someone deleted the files.
    registered = {"litellm": saved_models("constructor", "openai/new", registered=True)}
    saved_state(tmp_path, registered, ["listed", "toString"])
    with capture_logs() as logs:
        reconciler, listener = make(tmp_path, Gateway("listed"))
    assert sorted(reconciler.catalog.ids) == ["listed", "openai/new"]
    dropped = [e for e in logs if e["event"] == "state.model_dropped"]
    assert sorted((e["model"], Path(e["path"]).name) for e in dropped) == [
        ("constructor", "registered.json"),
        ("toString", "catalog-litellm.json"),
    ]
    assert all(e["log_level"] == "warning" and "Object.prototype" in e["reason"] for e in dropped)

    await reconciler.publish()  # what the supervisor does at start, before opencode starts
    assert listener.written == [{"listed", "openai/new"}]
    for name in ("registered.json", "catalog-litellm.json", "opencode.json"):
        text = (tmp_path / name).read_text()
        assert "constructor" not in text and "toString" not in text, name


async def test_a_registry_of_the_single_gateway_format_is_cleaned_too(tmp_path: Path) -> None:
    # Before several gateways, registered.json was one list, for the only gateway.
    saved_state(tmp_path, saved_models("valueOf", "x"), [])
    with capture_logs() as logs:
        reconciler, _ = make(tmp_path, Gateway())
    assert list(reconciler.registered["litellm"]) == ["x"]
    assert [e["model"] for e in logs if e["event"] == "state.model_dropped"] == ["valueOf"]


# --- issue 13: registrations share writes; the registry is bounded ---------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Sessions:
    """opencode's sessions, as `session_models` reads them; `None` is an opencode that can't say."""

    def __init__(self, *models: str) -> None:
        self.models: set[str] | None = set(models)
        self.asked = 0

    async def session_models(self) -> set[ModelRef]:
        self.asked += 1
        if self.models is None:
            raise SessionsUnknown("/experimental/session failed: ConnectError")
        return {ModelRef("litellm", model) for model in self.models}


def bounded(
    tmp_path: Path, limit: int, sessions: Sessions, clock: Clock, **settings: object
) -> tuple[Reconciler, Listener]:
    listener = Listener()
    config = Settings(gateway_url="http://gw", state_dir=tmp_path, max_registered=limit, **settings)  # type: ignore[arg-type]
    reconciler = Reconciler(
        config, {"litellm": Gateway("listed")}, listener, StatePaths(tmp_path), {}, sessions=sessions, clock=clock
    )
    return reconciler, listener


async def register_in_turn(reconciler: Reconciler, clock: Clock, *ids: str) -> None:
    """Registrations a minute apart: each is the most recently used, none recent by the end."""
    for model_id in ids:
        await reconciler.register(ModelRef("litellm", model_id))
        clock.now += 60


async def test_distinct_registrations_arriving_together_share_one_write(tmp_path: Path) -> None:
    reconciler, listener = make(tmp_path, Gateway("listed"))
    await reconciler.poll_once()
    names = [f"openai/new-{i}" for i in range(50)]
    async with anyio.create_task_group() as group:
        for name in names:
            group.start_soon(reconciler.register, ModelRef("litellm", name))
    assert len(listener.written) == 2  # the poll's, then one for all fifty
    assert listener.written[-1] == {"listed", *names}
    assert all(reconciler.catalog.get(name).registered for name in names)  # type: ignore[union-attr]
    saved = json.loads((tmp_path / "registered.json").read_text())
    assert sorted(m["id"] for m in saved["litellm"]) == sorted(names)


class GatedDisk:
    """Writes that wait, in their worker thread, until the test lets the first config write finish."""

    def __init__(self) -> None:
        self.config_writes = 0
        self.started = threading.Event()
        self.release = threading.Event()

    def write(self, path: Path, text: str) -> None:
        if path.name == "opencode.json":
            self.config_writes += 1
            self.started.set()
            assert self.release.wait(30), "the test never released the write"
        write_atomically(path, text)


async def test_registrations_arriving_during_a_write_share_the_next_one(tmp_path: Path) -> None:
    disk = GatedDisk()
    listener = Listener()
    settings = Settings(gateway_url="http://gw", state_dir=tmp_path)  # type: ignore[arg-type]
    reconciler = Reconciler(settings, {"litellm": Gateway()}, listener, StatePaths(tmp_path), {}, write=disk.write)
    later = [f"later-{i}" for i in range(30)]
    async with anyio.create_task_group() as group:
        try:
            group.start_soon(reconciler.register, ModelRef("litellm", "first"))
            await anyio.to_thread.run_sync(disk.started.wait, 30)  # the first write is in flight
            for name in later:
                group.start_soon(reconciler.register, ModelRef("litellm", name))
            await wait_until(lambda: len(reconciler.registry) == 31)  # all of them staged, none written
            assert len(listener.written) == 0
        finally:
            disk.release.set()
    assert disk.config_writes == 2
    assert listener.written == [{"first"}, {"first", *later}]


async def wait_until(condition: Callable[[], bool]) -> None:
    for _ in range(10_000):
        if condition():
            return
        await anyio.lowlevel.checkpoint()
    raise AssertionError("never happened")


async def test_at_the_cap_the_least_recently_used_model_no_session_uses_is_evicted(tmp_path: Path) -> None:
    clock, sessions = Clock(), Sessions("a")
    reconciler, listener = bounded(tmp_path, 3, sessions, clock)
    await reconciler.poll_once()
    await register_in_turn(reconciler, clock, "a", "b", "c")
    reconciler.note_used(ModelRef("litellm", "b"))  # a resolve of b: now c is older than b
    clock.now += 60
    written = len(listener.written)
    with capture_logs() as logs:
        await reconciler.register(ModelRef("litellm", "d"))
    # a is the oldest but a session uses it; c is the next.
    assert [(e["model"], e["max_registered"]) for e in logs if e["event"] == "registry.evicted"] == [("c", 3)]
    assert listener.written[written:] == [{"listed", "a", "b", "d"}]  # eviction and addition: one write
    assert "c" not in reconciler.catalog and set(reconciler.registered["litellm"]) == {"a", "b", "d"}
    saved = json.loads((tmp_path / "registered.json").read_text())
    assert sorted(m["id"] for m in saved["litellm"]) == ["a", "b", "d"]


async def test_at_the_cap_with_every_model_in_a_session_a_new_one_is_refused_naming_the_cap(tmp_path: Path) -> None:
    clock, sessions = Clock(), Sessions("a", "b", "c")
    reconciler, listener = bounded(tmp_path, 3, sessions, clock)
    await reconciler.poll_once()
    await register_in_turn(reconciler, clock, "a", "b", "c")
    written = len(listener.written)
    with pytest.raises(RegistryFull) as refused:
        await reconciler.register(ModelRef("litellm", "d"))
    assert refused.value.status == 409 and "SIDECAR_MAX_REGISTERED=3" in refused.value.message
    assert len(listener.written) == written and len(reconciler.registry) == 3
    # A model already registered is no new registration: it is served at the cap.
    assert (await reconciler.register(ModelRef("litellm", "a"))).id == "a"
    sessions.models = {"a", "c"}  # the session of b ended
    clock.now += 60
    await reconciler.register(ModelRef("litellm", "d"))
    assert set(reconciler.registered["litellm"]) == {"a", "c", "d"}


async def test_a_model_asked_for_moments_ago_is_not_evicted(tmp_path: Path) -> None:
    # Its prompt may still be on its way to opencode, which records a session's model only then.
    clock, sessions = Clock(), Sessions()
    reconciler, _ = bounded(tmp_path, 2, sessions, clock)
    await reconciler.poll_once()
    await reconciler.register(ModelRef("litellm", "a"))
    await reconciler.register(ModelRef("litellm", "b"))
    with pytest.raises(RegistryFull):
        await reconciler.register(ModelRef("litellm", "c"))
    clock.now += RECENT_USE + 1
    await reconciler.register(ModelRef("litellm", "c"))
    assert set(reconciler.registered["litellm"]) == {"b", "c"}


async def test_the_default_model_is_never_evicted(tmp_path: Path) -> None:
    # A session that names no model uses it.
    clock, sessions = Clock(), Sessions()
    reconciler, _ = bounded(tmp_path, 2, sessions, clock, default_model="a")
    await reconciler.poll_once()
    await register_in_turn(reconciler, clock, "a", "b", "c")
    assert set(reconciler.registered["litellm"]) == {"a", "c"}


async def test_when_opencode_cannot_say_which_models_sessions_use_nothing_is_evicted(tmp_path: Path) -> None:
    clock, sessions = Clock(), Sessions()
    sessions.models = None
    reconciler, _ = bounded(tmp_path, 1, sessions, clock)
    await reconciler.poll_once()
    await register_in_turn(reconciler, clock, "a")
    with pytest.raises(RegistryFull) as refused:
        await reconciler.register(ModelRef("litellm", "b"))
    assert refused.value.status == 502
    assert "SIDECAR_MAX_REGISTERED=1" in refused.value.message and "ConnectError" in refused.value.message
    assert set(reconciler.registered["litellm"]) == {"a"}


async def test_many_registrations_at_the_cap_ask_opencode_once_and_share_one_write(tmp_path: Path) -> None:
    clock, sessions = Clock(), Sessions()
    reconciler, listener = bounded(tmp_path, 10, sessions, clock)
    await reconciler.poll_once()
    await register_in_turn(reconciler, clock, *(f"old-{i}" for i in range(10)))
    written = len(listener.written)
    new = [f"new-{i}" for i in range(6)]
    async with anyio.create_task_group() as group:
        for name in new:
            group.start_soon(reconciler.register, ModelRef("litellm", name))
    assert sessions.asked == 1  # within SESSIONS_TTL on the injected clock
    assert len(reconciler.registry) == 10
    assert set(reconciler.registered["litellm"]) == {*(f"old-{i}" for i in range(6, 10)), *new}
    assert len(listener.written) - written <= 2  # the first arrival's write and one shared by the rest


async def test_a_model_being_evicted_that_is_asked_for_again_is_registered_again(tmp_path: Path) -> None:
    clock = Clock()
    registry = Registry({}, 1, clock)
    a, b = ModelRef("litellm", "a"), ModelRef("litellm", "b")
    registry.add(a, ModelInfo(id="a", display_name="a"))
    registry.written = registry.apply_pending()
    registry.evict(a)
    registry.add(b, ModelInfo(id="b", display_name="b"))
    assert registry.leaving(a) and not registry.holds(a) and len(registry) == 1
    registry.evict(b)
    registry.add(a, ModelInfo(id="a", display_name="a"))  # its eviction is cancelled, not written
    assert registry.holds(a) and not registry.leaving(a) and len(registry) == 1
    registry.written = registry.apply_pending()
    assert registry.models == {"litellm": {"a": ModelInfo(id="a", display_name="a")}}


def test_least_recently_used_skips_what_is_held() -> None:
    refs = [ModelRef("litellm", m) for m in "abc"]
    assert least_recently_used(refs, {refs[0]}) == refs[1]
    assert least_recently_used(refs, set(refs)) is None


def test_a_cap_below_one_is_refused_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDECAR_GATEWAY_URL", "http://gw:4000")
    monkeypatch.setenv("SIDECAR_MAX_REGISTERED", "0")
    with pytest.raises(SettingsError, match="^SIDECAR_MAX_REGISTERED: .*greater than or equal to 1$"):
        load_settings()


async def test_session_models_reads_every_page_of_every_directory() -> None:
    pages = {
        None: ([{"id": "ses_1", "model": {"id": "a", "providerID": "litellm"}}, {"id": "ses_2"}], "c1"),
        "c1": ([{"id": "ses_3", "model": {"id": "x/y", "providerID": "other", "variant": "high"}}], None),
    }
    seen: list[dict[str, str]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/experimental/session"
        params = dict(request.url.params)
        seen.append(params)
        sessions, cursor = pages[params.get("cursor")]
        return httpx.Response(200, json=sessions, headers={"x-next-cursor": cursor} if cursor else {})

    settings = Settings(gateway_url="http://gw")  # type: ignore[arg-type]
    client = OpencodeClient(settings.opencode_base, None, transport=httpx.MockTransport(answer))
    async with client._http:
        assert await client.session_models() == {ModelRef("litellm", "a"), ModelRef("other", "x/y")}
    assert [p.get("archived") for p in seen] == ["true", "true"]

    broken = OpencodeClient(settings.opencode_base, None, transport=httpx.MockTransport(lambda request: httpx.Response(500)))
    with pytest.raises(SessionsUnknown, match="HTTP 500"):
        await broken.session_models()
    await broken.aclose()


async def test_a_cap_lowered_below_the_saved_registry_evicts_down_to_it_at_the_next_registration(tmp_path: Path) -> None:
    # Saved by a run with a higher cap; the saved order stands for the order of use.
    saved_state(tmp_path, {"litellm": saved_models("a", "b", "c", "d", registered=True)}, ["listed"])
    clock, sessions = Clock(), Sessions("b")
    reconciler, listener = bounded(tmp_path, 2, sessions, clock)
    assert len(reconciler.registry) == 4  # kept as saved: nothing can be asked before opencode runs
    await reconciler.poll_once()
    with capture_logs() as logs:
        await reconciler.register(ModelRef("litellm", "e"))
    assert [e["model"] for e in logs if e["event"] == "registry.evicted"] == ["a", "c", "d"]
    assert set(reconciler.registered["litellm"]) == {"b", "e"}
    assert listener.written[-1] == {"listed", "b", "e"}
