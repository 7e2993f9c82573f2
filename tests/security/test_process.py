"""The opencode process and the state directory (issue 12, items 6, 7 and 11), against the real
sidecar and the real `opencode serve`: opencode dies with a sidecar killed by SIGKILL; an opencode
left by an earlier sidecar is stopped at the next start, a process that merely got its pid never;
one sidecar per state directory; and nobody but its owner can read that directory."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from sidecar.opencode.record import read_boot_id, read_stat
from tests.support import litellm_proxy as lp
from tests.support.litellm_proxy import free_port
from tests.support.opencode_api import create_session
from tests.support.opencode_process import start_opencode
from tests.support.sidecar_process import SidecarProcess, start_sidecar

pytestmark = pytest.mark.timeout(240)

RECORD = "opencode-child.json"  # where a sidecar records the opencode it started


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def dead(pid: int) -> bool:
    """No process with this pid runs any more (a zombie waiting for its parent is dead)."""
    now = read_stat(pid)
    return now is None or not now.alive


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def port_of(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


def opencode_healthy(sidecar: SidecarProcess, port: int) -> bool:
    """Its opencode answers on `port` with its password (start_sidecar's URL names another port)."""
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", auth=("opencode", sidecar.password), timeout=10) as client:
        return client.get("/global/health").status_code == 200


def write_record(state_dir: Path, pid: int, start_time: int) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    record = {"pid": pid, "start_time": start_time, "boot_id": read_boot_id()}
    (state_dir / RECORD).write_text(json.dumps(record))


def open_to_others(root: Path) -> list[str]:
    """Every path under `root` (itself included) with a group or other permission bit."""
    found = []
    for path in [root, *root.rglob("*")]:
        mode = path.lstat().st_mode
        if not stat.S_ISLNK(mode) and mode & 0o077:
            found.append(f"{oct(stat.S_IMODE(mode))} {path}")
    return found


def test_opencode_dies_with_a_killed_sidecar_and_the_next_sidecar_starts_on_its_port(
    tmp_path: Path, gateway: lp.LiteLLMProxy, make_sidecar: Callable[..., SidecarProcess]
) -> None:
    first = make_sidecar(gateway.url, workdir=tmp_path / "sidecar")
    opencode_pid, port = first.opencode_pid(), port_of(first.opencode_url)
    assert listening(port)

    os.kill(first.process.pid, signal.SIGKILL)
    first.process.wait(10)
    wait_until(lambda: dead(opencode_pid), 10, f"opencode (pid {opencode_pid}) to die with its sidecar")
    wait_until(lambda: not listening(port), 10, f"opencode's port {port} to close")

    second = make_sidecar(gateway.url, workdir=tmp_path / "sidecar", opencode_port=str(port))
    assert second.opencode_pid() != opencode_pid
    assert opencode_healthy(second, port)


def test_a_stale_opencode_recorded_in_the_state_dir_is_stopped_before_a_new_one_starts(
    tmp_path: Path, gateway: lp.LiteLLMProxy, make_sidecar: Callable[..., SidecarProcess]
) -> None:
    # An opencode that outlived its sidecar (an older version: no parent-death signal), on the port
    # the next sidecar wants, with a password that sidecar does not know.
    port = free_port()
    config = tmp_path / "stale" / "opencode.json"
    config.parent.mkdir(parents=True)
    config.write_text("{}")
    stale = start_opencode(tmp_path / "stale", config, "stale-password-" + os.urandom(8).hex(), {}, port=port)
    try:
        stale_stat = read_stat(stale.process.pid)
        assert stale_stat is not None
        write_record(tmp_path / "sidecar" / "state", stale.process.pid, stale_stat.start_time)

        sidecar = make_sidecar(gateway.url, workdir=tmp_path / "sidecar", opencode_port=str(port))

        assert stale.process.poll() is not None, "the stale opencode still runs"
        stopped = sidecar.events("child.stale_stopped")
        assert [event["pid"] for event in stopped] == [stale.process.pid]
        assert sidecar.opencode_pid() != stale.process.pid
        assert opencode_healthy(sidecar, port)
    finally:
        stale.stop()


@pytest.fixture(scope="module")
def sleeper() -> Iterator[subprocess.Popen]:
    """A process of the test's own, which a stale record will name with another start time."""
    process = subprocess.Popen(["sleep", "600"])
    yield process
    process.kill()
    process.wait()


@pytest.fixture(scope="module")
def veteran(
    tmp_path_factory: pytest.TempPathFactory, gateway: lp.LiteLLMProxy, sleeper: subprocess.Popen
) -> Iterator[SidecarProcess]:
    """A sidecar started on a state directory that an older version left behind: 0755 with a 0644
    file in it, and a record of an opencode whose pid another process has now."""
    workdir = tmp_path_factory.mktemp("veteran")
    state_dir = workdir / "state"
    (state_dir / "old").mkdir(parents=True)
    (state_dir / "old" / "notes.txt").write_text("left here")
    for path, mode in ((state_dir, 0o755), (state_dir / "old", 0o755), (state_dir / "old" / "notes.txt", 0o644)):
        os.chmod(path, mode)
    sleeper_stat = read_stat(sleeper.pid)
    assert sleeper_stat is not None
    write_record(state_dir, sleeper.pid, sleeper_stat.start_time - 1)
    os.chmod(state_dir / RECORD, 0o644)
    sidecar = start_sidecar(workdir, gateway.url, gateway.master_key)
    yield sidecar
    sidecar.stop()


def test_a_state_dir_left_open_to_others_is_tightened_at_start(veteran: SidecarProcess) -> None:
    tightened = veteran.events("state_dir.modes_tightened")
    assert len(tightened) == 1 and tightened[0]["path"] == str(veteran.state_dir)
    assert tightened[0]["count"] == 4  # the directory, "old", notes.txt and the record
    assert stat.S_IMODE(veteran.state_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((veteran.state_dir / "old").stat().st_mode) == 0o700
    assert stat.S_IMODE((veteran.state_dir / "old" / "notes.txt").stat().st_mode) == 0o600


def test_a_recorded_pid_that_another_process_has_now_is_never_signalled(
    veteran: SidecarProcess, sleeper: subprocess.Popen
) -> None:
    # The sidecar is ready, so its start-up (stale check included) is over.
    assert sleeper.poll() is None, "the sidecar killed a process that merely had the recorded pid"
    assert [(e["pid"], e["reason"]) for e in veteran.events("child.stale_record_ignored")] == [(sleeper.pid, "reused")]
    assert not veteran.events("child.stale_found")
    # The record now names the sidecar's own opencode.
    record = json.loads((veteran.state_dir / RECORD).read_text())
    assert record["pid"] == veteran.opencode_pid()


def test_nothing_in_the_state_dir_is_open_to_others_after_a_session(veteran: SidecarProcess) -> None:
    with veteran.opencode() as opencode:
        create_session(opencode, str(veteran.directory))
    databases = list(veteran.state_dir.rglob("opencode.db"))
    assert databases, "opencode keeps no database under the state directory"
    assert open_to_others(veteran.state_dir) == []


def test_a_second_sidecar_on_the_same_state_dir_exits_2_naming_it_and_the_holder(
    tmp_path: Path, gateway: lp.LiteLLMProxy, veteran: SidecarProcess
) -> None:
    opencode_pid = veteran.opencode_pid()
    second = start_sidecar(
        tmp_path / "second", gateway.url, gateway.master_key, wait=False, state_dir=str(veteran.state_dir)
    )
    try:
        assert second.process.wait(30) == 2
    finally:
        second.stop()
    lines = [line for line in second.log_text().splitlines() if line.strip()]
    assert lines == [
        f"opencode-sidecar: SIDECAR_STATE_DIR: {veteran.state_dir} is in use by another sidecar "
        f"(pid {veteran.process.pid})"
    ]
    # The first one never noticed: same opencode, still ready.
    assert veteran.opencode_pid() == opencode_pid and not dead(opencode_pid)
    assert httpx.get(f"{veteran.api_url}/readyz", timeout=5).status_code == 200


def test_attach_mode_keeps_the_shared_config_readable_and_its_state_private(
    tmp_path: Path, gateway: lp.LiteLLMProxy, make_sidecar: Callable[..., SidecarProcess]
) -> None:
    # opencode in another container, perhaps as another user, reads the shared config: it holds
    # references ({env:NAME}) only, and stays 0644.
    shared = tmp_path / "shared" / "opencode.json"
    sidecar = make_sidecar(
        gateway.url, wait=False, opencode_url=f"http://127.0.0.1:{free_port()}", opencode_config=str(shared),
        opencode_directory=None, gateway_token="gateway-token-" + "t" * 32,
    )

    sidecar.wait_started()
    assert stat.S_IMODE(shared.stat().st_mode) == 0o644
    assert stat.S_IMODE(shared.parent.stat().st_mode) & 0o005 == 0o005  # others may look in
    assert list(sidecar.state_dir.glob("catalog-*.json")), "the sidecar saved no list"
    assert open_to_others(sidecar.state_dir) == []
