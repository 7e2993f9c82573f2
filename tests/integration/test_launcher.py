"""The real launcher and spawn, with tiny real children (no opencode): the parent-death signal, the
child's own process group and its owner-only umask. The supervisor itself, with fake processes and a
fake clock, is tests/unit/test_child.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sidecar.opencode import launch
from sidecar.opencode.spawn import LAUNCHER, launcher_command, spawn_process

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


REPORT = (
    "import ctypes, os\n"
    "death = ctypes.c_int()\n"
    "ctypes.CDLL(None).prctl(2, ctypes.byref(death), 0, 0, 0)  # PR_GET_PDEATHSIG\n"
    "umask = os.umask(0)\n"
    "print(os.getpid(), os.getpgid(0), death.value, oct(umask))\n"
)


@pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal is Linux's")
def test_the_launcher_becomes_the_program_with_the_parent_death_signal_set() -> None:
    command = launcher_command([sys.executable, "-c", REPORT], os.getpid())
    assert command[:4] == [sys.executable, "-I", "-S", str(LAUNCHER)]
    child = subprocess.run(command, capture_output=True, text=True, timeout=30, check=True)
    pid, _pgid, death, _umask = child.stdout.split()
    assert int(death) == signal.SIGKILL == launch.DEATH_SIGNAL


@pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal is Linux's")
def test_the_launcher_runs_nothing_when_its_parent_died_before_it_asked(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    command = launcher_command(["/bin/sh", "-c", f"touch {marker}"], os.getpid() + 1)  # not its parent
    assert subprocess.run(command, timeout=30).returncode == launch.EXIT_ORPHANED
    assert not marker.exists()


@pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal is Linux's")
# The sidecar runs on uvloop (cli.py), whose subprocess_exec takes no umask: the launcher sets it.
@pytest.mark.parametrize("anyio_backend", [("asyncio", {"use_uvloop": True}), "asyncio"], ids=["uvloop", "asyncio"])
async def test_spawn_gives_the_child_its_own_group_an_owner_only_umask_and_death_with_us(tmp_path: Path) -> None:
    output_path = tmp_path / "out"
    with output_path.open("wb") as output:
        process = await spawn_process([sys.executable, "-c", REPORT], env=dict(os.environ), cwd=tmp_path, output=output)
        assert await process.wait() == 0
    pid, pgid, death, umask = output_path.read_text().split()
    assert int(pid) == int(pgid) == process.pid  # the launcher became the program: same pid
    assert int(death) == signal.SIGKILL
    assert umask == "0o77"
