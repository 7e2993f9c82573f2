"""Fault injection against the real sidecar and the real opencode: a gateway that is down, empties
its list, answers 50 MB or redirects; a base config swapped the way Kubernetes swaps a ConfigMap;
opencode killed in a loop or stopped with SIGSTOP; a state dir that fills up; SIGTERM at every
moment. The gateway is a fake of ours where the fault is in the gateway, LiteLLM elsewhere."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import fake_upstream
from tests.support.fake_upstream import model_list
from tests.support import litellm_proxy as lp
from tests.support.opencode_api import create_session, prompt, provider_models
from tests.support.sidecar_process import SidecarProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

MODELS = [f"model-{i}" for i in range(6)]
FAKE_KEY = "sk-fake-gateway-key-77f3"



@pytest.fixture
def fake_gateway() -> Iterator[fake_upstream.FakeUpstream]:
    server = fake_upstream.start_in_thread(delay=0.0, chunks=2, models=model_list(MODELS))
    yield server
    server.shutdown()
    server.server_close()


def list_polls(server: fake_upstream.FakeUpstream) -> int:
    return sum(1 for seen in server.headers_seen if seen.get("authorization") == f"Bearer {FAKE_KEY}")


def opencode_models(sidecar: SidecarProcess) -> set[str]:
    with sidecar.opencode(timeout=10) as opencode:
        return set(provider_models(opencode, str(sidecar.directory)))


def readyz(sidecar: SidecarProcess) -> tuple[int, dict]:
    response = httpx.get(f"{sidecar.api_url}/readyz", timeout=5)
    return response.status_code, response.json()


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def group_members(pgid: int) -> list[int]:
    """Live processes whose process group is `pgid`: what a stop must leave none of."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def assert_stopped_cleanly(sidecar: SidecarProcess, started: float, grace: float) -> None:
    code = sidecar.process.wait(timeout=grace + 15)
    assert code == 0, sidecar.log_text()[-2000:]
    assert time.monotonic() - started < grace + 10
    for event in sidecar.events("child.started"):
        assert not group_members(event["pid"]), f"opencode's group {event['pid']} outlived the sidecar"
    leftovers = [p.name for p in sidecar.state_dir.iterdir() if p.name.endswith(".tmp")]
    assert not leftovers, f"partial files left: {leftovers}"
    config = sidecar.state_dir / "opencode.json"
    if config.exists():
        json.loads(config.read_text())
    sidecar.stop()  # bookkeeping only: it has exited


# --- the gateway ---------------------------------------------------------------------------------


def test_gateway_down_at_start_gives_opencode_the_saved_list_at_once(
    tmp_path: Path, fake_gateway: fake_upstream.FakeUpstream, make_sidecar: Callable[..., SidecarProcess]
) -> None:
    workdir = tmp_path / "sidecar"
    first = make_sidecar(f"http://127.0.0.1:{fake_gateway.port}", FAKE_KEY, workdir=workdir)
    assert opencode_models(first) == set(MODELS)
    first.stop()
    down = f"http://127.0.0.1:{lp.free_port()}"  # nothing listens there
    second = make_sidecar(down, FAKE_KEY, workdir=workdir, gateway_retries="3", gateway_timeout="5")
    (restored,) = second.events("catalog.restored")
    assert restored["models"] == len(MODELS)
    # opencode was never given an empty provider: the first config written held the saved list.
    written = [e for e in second.events() if e.get("event") in ("opencode.config_written", "child.started")]
    assert written[0]["event"] == "opencode.config_written" and written[0]["models"] == len(MODELS)
    assert opencode_models(second) == set(MODELS)
    status, report = readyz(second)
    assert status == 200 and report["stale_gateways"] == ["litellm"]
    assert report["gateways"]["litellm"]["restored"] is True
    second.wait_for(lambda: second.events("gateway.poll_failed"), 60, "a failed poll")
    assert opencode_models(second) == set(MODELS)


def test_a_list_that_drops_to_zero_for_two_polls_never_empties_opencode(
    fake_gateway: fake_upstream.FakeUpstream, make_sidecar: Callable[..., SidecarProcess]
) -> None:
    sidecar = make_sidecar(f"http://127.0.0.1:{fake_gateway.port}", FAKE_KEY)
    assert opencode_models(sidecar) == set(MODELS)
    written = len(sidecar.events("opencode.config_written"))
    fake_gateway.models = model_list([])
    polls = list_polls(fake_gateway)
    seen_in_opencode = []
    sidecar.wait_for(lambda: seen_in_opencode.append(opencode_models(sidecar)) or list_polls(fake_gateway) >= polls + 2,
                     30, "two polls of an empty list")
    fake_gateway.models = model_list(MODELS)
    with sidecar.api() as api:
        status = api.get("/v1/status").json()
    sidecar.wait_for(lambda: list_polls(fake_gateway) >= polls + 4, 30, "polls after the recovery")
    assert all(models == set(MODELS) for models in seen_in_opencode)
    assert opencode_models(sidecar) == set(MODELS)
    assert len(sidecar.events("gateway.shrink_held")) >= 2
    assert not sidecar.events("gateway.shrink_applied")
    assert len(sidecar.events("opencode.config_written")) == written
    assert status["gateways"]["litellm"]["shrink_guard"]["held_polls"] >= 1


def test_a_50_mb_answer_is_refused_and_the_models_kept(
    fake_gateway: fake_upstream.FakeUpstream, make_sidecar: Callable[..., SidecarProcess]
) -> None:
    sidecar = make_sidecar(f"http://127.0.0.1:{fake_gateway.port}", FAKE_KEY)
    fake_gateway.huge_list_bytes = 50 * 1024 * 1024
    failed = sidecar.wait_for(lambda: sidecar.events("gateway.poll_failed"), 60, "the oversized list refused")
    assert "larger than" in failed[0]["error"]
    rss_kib = int(next(line for line in Path(f"/proc/{sidecar.process.pid}/status").read_text().splitlines()
                       if line.startswith("VmRSS")).split()[1])
    assert rss_kib < 200 * 1024, f"the sidecar holds {rss_kib} KiB after refusing a 50 MB answer"
    assert opencode_models(sidecar) == set(MODELS)
    assert readyz(sidecar)[0] == 200


def test_a_redirect_to_another_port_never_carries_the_key_there(
    fake_gateway: fake_upstream.FakeUpstream, make_sidecar: Callable[..., SidecarProcess]
) -> None:
    elsewhere = fake_upstream.start_in_thread(delay=0.0, chunks=1, models=model_list(["stolen"]))
    try:
        sidecar = make_sidecar(f"http://127.0.0.1:{fake_gateway.port}", FAKE_KEY)
        fake_gateway.redirect_to = f"http://127.0.0.1:{elsewhere.port}/v1/models"
        sidecar.wait_for(lambda: sidecar.events("gateway.poll_failed"), 30, "the redirect refused")
        time.sleep(1.5)
        assert not any(FAKE_KEY in json.dumps(seen) for seen in elsewhere.headers_seen)
        assert elsewhere.headers_seen == []  # not even asked
        assert opencode_models(sidecar) == set(MODELS)
    finally:
        elsewhere.shutdown()
        elsewhere.server_close()


# --- the operator's config -----------------------------------------------------------------------


def configmap(directory: Path, version: int, text: str) -> None:
    """Kubernetes' atomic update of a mounted ConfigMap: a new timestamped directory, a `..data`
    symlink swapped to it by rename, the file itself a symlink through `..data`."""
    directory.mkdir(exist_ok=True)
    target = directory / f"..2026_11_21_{version:02d}"
    target.mkdir()
    (target / "opencode.json").write_text(text)
    tmp_link = directory / "..data_tmp"
    tmp_link.symlink_to(target.name)
    old = (directory / "..data").resolve() if (directory / "..data").exists() else None
    os.replace(tmp_link, directory / "..data")
    if not (directory / "opencode.json").is_symlink():
        (directory / "opencode.json").symlink_to("..data/opencode.json")
    if old is not None:
        for file in old.iterdir():
            file.unlink()
        old.rmdir()


def operator_config(model: str) -> str:
    return json.dumps({"provider": {"team": {"npm": "@ai-sdk/openai-compatible", "options": {"baseURL": "http://127.0.0.1:9/v1"},
                                             "models": {model: {"name": model}}}}})


def test_a_configmap_symlink_swap_of_the_base_config_is_applied(
    tmp_path: Path, fake_gateway: fake_upstream.FakeUpstream, make_sidecar: Callable[..., SidecarProcess]
) -> None:
    mounted = tmp_path / "configmap"
    configmap(mounted, 1, operator_config("first"))
    sidecar = make_sidecar(f"http://127.0.0.1:{fake_gateway.port}", FAKE_KEY, base_config=str(mounted / "opencode.json"))

    def team_models() -> set[str]:
        with sidecar.opencode(timeout=10) as opencode:
            return set(provider_models(opencode, str(sidecar.directory), "team"))

    assert team_models() == {"first"}
    configmap(mounted, 2, operator_config("second"))
    sidecar.wait_for(lambda: team_models() == {"second"}, 30, "the swapped config in opencode")
    assert opencode_models(sidecar) == set(MODELS)
    # An invalid file keeps the last good one, and says why.
    configmap(mounted, 3, "{ not json")
    sidecar.wait_for(lambda: sidecar.events("base_config.invalid"), 30, "base_config.invalid")
    assert team_models() == {"second"}
    # SIGHUP re-reads it too.
    (mounted / "..data" / "opencode.json").write_text(operator_config("third"))
    sidecar.process.send_signal(signal.SIGHUP)
    sidecar.wait_for(lambda: team_models() == {"third"}, 30, "the re-read config in opencode")
    assert sidecar.events("base_config.reread")


# --- opencode ------------------------------------------------------------------------------------


def test_kill_9_in_a_loop_backs_off_like_kubelet(
    fake_gateway: fake_upstream.FakeUpstream, make_sidecar: Callable[..., SidecarProcess]
) -> None:
    sidecar = make_sidecar(
        f"http://127.0.0.1:{fake_gateway.port}", FAKE_KEY, restart_backoff_initial="1", restart_backoff_max="4"
    )
    for crash in range(1, 4):
        pid = sidecar.opencode_pid()
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        sidecar.wait_for(lambda n=crash: len(sidecar.events("child.restart_scheduled")) >= n, 15, "a scheduled restart")
        # Down or backing off: not ready.
        assert readyz(sidecar)[0] == 503
        sidecar.wait_for(lambda n=crash: len(sidecar.events("child.healthy")) >= n + 1, 60, "opencode healthy again")
        delay = sidecar.events("child.restart_scheduled")[-1]["delay"]
        assert delay == min(4, 2 ** (crash - 1))
        assert time.monotonic() - killed >= delay
        assert not alive(pid)
    sidecar.wait_ready()
    assert opencode_models(sidecar) == set(MODELS)


def test_a_stopped_opencode_is_killed_and_restarted(
    fake_gateway: fake_upstream.FakeUpstream, make_sidecar: Callable[..., SidecarProcess]
) -> None:
    sidecar = make_sidecar(
        f"http://127.0.0.1:{fake_gateway.port}", FAKE_KEY, health_interval="1", health_failures="2",
        restart_backoff_initial="0.5",
    )
    pid = sidecar.opencode_pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        sidecar.wait_for(lambda: sidecar.events("child.unresponsive"), 30, "child.unresponsive")
        sidecar.wait_for(lambda: sidecar.opencode_pid() != pid, 30, "a new opencode")
        sidecar.wait_ready()
        assert not group_members(pid)
        assert opencode_models(sidecar) == set(MODELS)
        with sidecar.api() as api:
            status = api.get("/v1/status").json()
        assert status["opencode"]["pid"] == sidecar.opencode_pid() and status["opencode"]["restarts"] == 1
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


# --- the state dir -------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A small tmpfs of our own, to fill up under the sidecar."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(mount)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode(errors='replace').strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(disk: Path) -> Path:
    """Take every free byte of `disk`; removing the returned file frees them again."""
    filler = disk / "filler"
    chunk = b"\0" * (1024 * 1024)
    with filler.open("wb") as handle:
        try:
            while True:
                handle.write(chunk)
                handle.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_a_full_state_dir_keeps_the_old_config_whole_and_the_api_serving(
    small_disk: Path, fake_gateway: fake_upstream.FakeUpstream, make_sidecar: Callable[..., SidecarProcess]
) -> None:
    sidecar = make_sidecar(f"http://127.0.0.1:{fake_gateway.port}", FAKE_KEY, state_dir=str(small_disk / "state"))
    config = small_disk / "state" / "opencode.json"
    before = config.read_text()
    filler = fill(small_disk)
    try:
        fake_gateway.models = model_list([*MODELS, "model-new"])
        failed = sidecar.wait_for(lambda: sidecar.events("state.write_failed"), 30, "state.write_failed")
        assert failed[0]["error"] == "No space left on device"
        assert config.read_text() == before
        assert not [p.name for p in config.parent.iterdir() if p.name.endswith(".tmp")]
        with sidecar.api() as api:
            listed = api.get("/v1/models", params={"limit": 100})
            status = api.get("/v1/status").json()
        assert listed.status_code == 200 and {m["id"] for m in listed.json()["data"]} == set(MODELS)
        assert "No space left on device" in status["state_dir"]["write_error"]
        assert sidecar.process.poll() is None
    finally:
        filler.unlink()
    sidecar.wait_for(lambda: sidecar.events("state.write_recovered"), 30, "the write retried")
    sidecar.wait_for(lambda: "model-new" in opencode_models(sidecar), 60, "model-new in opencode")


# --- SIGTERM at every moment -----------------------------------------------------------------------


def test_sigterm_during_start_up(
    fake_gateway: fake_upstream.FakeUpstream, make_sidecar: Callable[..., SidecarProcess]
) -> None:
    sidecar = make_sidecar(f"http://127.0.0.1:{fake_gateway.port}", FAKE_KEY, wait=False)
    sidecar.wait_for(lambda: sidecar.events("child.started"), 30, "opencode spawned")
    assert not sidecar.events("child.healthy")
    started = time.monotonic()
    sidecar.process.send_signal(signal.SIGTERM)
    assert_stopped_cleanly(sidecar, started, grace=5)


def test_sigterm_during_a_reload(
    fake_gateway: fake_upstream.FakeUpstream, make_sidecar: Callable[..., SidecarProcess]
) -> None:
    sidecar = make_sidecar(f"http://127.0.0.1:{fake_gateway.port}", FAKE_KEY)
    fake_gateway.models = model_list([*MODELS, "model-new"])
    sidecar.wait_for(lambda: len(sidecar.events("opencode.config_written")) >= 2, 30, "the new config written")
    started = time.monotonic()
    sidecar.process.send_signal(signal.SIGTERM)
    assert_stopped_cleanly(sidecar, started, grace=5)


def test_sigterm_during_backoff(
    fake_gateway: fake_upstream.FakeUpstream, make_sidecar: Callable[..., SidecarProcess]
) -> None:
    sidecar = make_sidecar(f"http://127.0.0.1:{fake_gateway.port}", FAKE_KEY, restart_backoff_initial="60", restart_backoff_max="120")
    os.kill(sidecar.opencode_pid(), signal.SIGKILL)
    sidecar.wait_for(lambda: sidecar.events("child.restart_scheduled"), 15, "the backoff")
    started = time.monotonic()
    sidecar.process.send_signal(signal.SIGTERM)
    assert_stopped_cleanly(sidecar, started, grace=5)


def test_sigterm_during_a_resolve_that_waits_for_an_idle_directory(
    gateway: lp.LiteLLMProxy, make_sidecar: Callable[..., SidecarProcess]
) -> None:
    import threading

    # The shared gateway has no wildcard route: the name below is registered blind (issue 17).
    sidecar = make_sidecar(gateway.url, unlisted_models="register")
    directory = str(sidecar.directory)
    with sidecar.opencode() as opencode:
        session = create_session(opencode, directory)

    def generate() -> None:
        try:
            with sidecar.opencode(timeout=120) as opencode:
                prompt(opencode, session, directory, "litellm/slow", "take your time")
        except httpx.HTTPError:
            pass  # the sidecar, and opencode with it, stops under this prompt: that is the test

    threading.Thread(target=generate, daemon=True).start()

    def busy() -> bool:
        with sidecar.opencode(timeout=5) as opencode:
            return bool(opencode.get("/session/status", params={"directory": directory}).json())

    sidecar.wait_for(busy, 30, "the slow prompt generating")
    outcome: dict[str, object] = {}

    def resolve() -> None:
        try:
            outcome["response"] = httpx.post(
                f"{sidecar.api_url}/v1/models/resolve",
                json={"model": "openai/resolve-while-busy", "directory": directory},
                timeout=60,
            )
        except httpx.HTTPError as exc:
            outcome["error"] = exc

    waiter = threading.Thread(target=resolve, daemon=True)
    waiter.start()
    sidecar.wait_for(lambda: sidecar.events("registry.registered"), 30, "the model registered")
    time.sleep(0.5)
    assert waiter.is_alive(), "the resolve should still be waiting for the busy directory"
    started = time.monotonic()
    sidecar.process.send_signal(signal.SIGTERM)
    assert_stopped_cleanly(sidecar, started, grace=5)
    waiter.join(10)
    assert not waiter.is_alive()
