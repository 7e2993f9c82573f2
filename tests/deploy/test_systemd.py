"""deploy/systemd: the user unit, by systemd-analyze where this machine has it, and by its keys."""

from __future__ import annotations

import configparser
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from sidecar.settings import Settings
from tests.deploy.support import DEPLOY

UNIT = DEPLOY / "systemd" / "opencode-sidecar.service"


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return parser


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verifies_it(tmp_path: Path) -> None:
    # A user manager needs a runtime directory; %h is this HOME, where ExecStart must exist.
    home, runtime = tmp_path / "home", tmp_path / "run"
    (home / ".local" / "bin").mkdir(parents=True)
    runtime.mkdir(mode=0o700)
    executable = home / ".local" / "bin" / "opencode-sidecar"
    executable.write_text("#!/bin/sh\n")
    executable.chmod(0o755)
    done = subprocess.run(
        ["systemd-analyze", "--user", "verify", str(UNIT)],
        env={**os.environ, "HOME": str(home), "XDG_RUNTIME_DIR": str(runtime)},
        capture_output=True, text=True, timeout=60, check=False,
    )
    # It exits 0 on a value it cannot parse (it ignores the line), so any output is a failure.
    assert done.returncode == 0 and done.stdout + done.stderr == "", done.stdout + done.stderr


def test_the_unit_runs_the_user_install_with_its_env_file() -> None:
    service = unit()["Service"]
    assert service["ExecStart"] == "%h/.local/bin/opencode-sidecar run"
    assert service["EnvironmentFile"] == "%h/.config/opencode-sidecar/env"
    assert service["Restart"] == "on-failure"
    assert service["RestartPreventExitStatus"] == "2"
    assert unit()["Install"]["WantedBy"] == "default.target"


def test_stopping_leaves_the_sidecar_time_to_stop_opencode() -> None:
    service = unit()["Service"]
    assert service["KillMode"] in {"mixed", "control-group"}
    grace = Settings.model_fields["stop_grace"].default
    assert int(service["TimeoutStopSec"]) > grace + 5


@pytest.mark.parametrize(("key", "starts"), [(None, False), ("short-key", False), ("k" * 32, True)])
def test_the_unit_refuses_to_start_without_a_long_key(tmp_path: Path, key: str | None, starts: bool) -> None:
    # The check runs as systemd would run it: `$$` is systemd's escape for `$`, %h the home directory.
    command = unit()["Service"]["ExecStartPre"].replace("$$", "$").replace("%h", str(tmp_path))
    env = {k: v for k, v in os.environ.items() if k != "SIDECAR_API_KEY"}
    if key is not None:
        env["SIDECAR_API_KEY"] = key
    done = subprocess.run(shlex.split(command), env=env, capture_output=True, text=True, timeout=10, check=False)
    assert (done.returncode == 0) is starts, done.stderr
    if not starts:
        assert done.returncode == 2
        assert f"set SIDECAR_API_KEY (32+ characters, e.g. openssl rand -hex 32) in {tmp_path}/" in done.stderr
