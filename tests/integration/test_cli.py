"""`opencode-sidecar run` as an operator starts it: bad settings, missing opencode, a taken port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.sidecar_process import OPENCODE_BIN

pytestmark = pytest.mark.integration


def run_sidecar(tmp_path: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
    env.update({"SIDECAR_STATE_DIR": str(tmp_path / "state"), "SIDECAR_GATEWAY_RETRIES": "0"})
    env.update({f"SIDECAR_{k.upper()}": v for k, v in settings.items()})
    return subprocess.run(
        [sys.executable, "-m", "sidecar", "run"], env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path
    )


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({}, "SIDECAR_GATEWAY_URL"),
        ({"gateway_url": "http://127.0.0.1:1", "poll_interval": "often"}, "SIDECAR_POLL_INTERVAL"),
        ({"gateway_url": "http://127.0.0.1:1", "reload": "never"}, "SIDECAR_RELOAD"),
        ({"gateway_url": "http://127.0.0.1:1", "listen": "localhost"}, "SIDECAR_LISTEN"),
        ({"gateway_url": "http://127.0.0.1:1", "state_dir": "/proc/nope", "opencode_bin": str(OPENCODE_BIN)}, "SIDECAR_STATE_DIR"),
    ],
)
def test_bad_setting_is_one_line_and_exit_2(tmp_path: Path, settings: dict[str, str], named: str) -> None:
    result = run_sidecar(tmp_path, **settings)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_bad_base_config_is_a_clear_error(tmp_path: Path) -> None:
    base = tmp_path / "opencode.json"
    base.write_text('{"provider": ')
    result = run_sidecar(tmp_path, gateway_url="http://127.0.0.1:1", base_config=str(base))
    assert result.returncode == 2
    assert "SIDECAR_BASE_CONFIG" in result.stderr and "Traceback" not in result.stderr


def test_missing_opencode_is_a_clear_error(tmp_path: Path) -> None:
    result = run_sidecar(tmp_path, gateway_url="http://127.0.0.1:1", opencode_bin="/nonexistent/opencode")
    assert result.returncode == 2
    assert "opencode not found" in result.stderr and "Traceback" not in result.stderr


def test_opencode_failing_to_start_is_a_clear_error(tmp_path: Path) -> None:
    broken = tmp_path / "opencode"
    broken.write_text("#!/bin/sh\necho 'cannot start' >&2\nexit 3\n")
    broken.chmod(0o755)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = run_sidecar(
        tmp_path, gateway_url="http://127.0.0.1:1", opencode_bin=str(broken), listen=f"127.0.0.1:{port}",
        opencode_password="pw-not-in-output",
    )
    assert result.returncode == 1
    assert "exited with code 3 before it became healthy" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "pw-not-in-output" not in result.stderr + result.stdout


def test_taken_listen_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = run_sidecar(
            tmp_path, gateway_url="http://127.0.0.1:1", opencode_bin=str(OPENCODE_BIN), listen=f"127.0.0.1:{port}"
        )
    assert result.returncode == 1
    assert f"SIDECAR_LISTEN: cannot listen on 127.0.0.1:{port}" in result.stderr


def run_cli(tmp_path: Path, *args: str, env_extra: dict[str, str] | None = None, **settings: str):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
    env.update({"SIDECAR_STATE_DIR": str(tmp_path / "state"), "SIDECAR_GATEWAY_RETRIES": "0"})
    env.update({f"SIDECAR_{k.upper()}": v for k, v in settings.items()})
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "sidecar", *args], env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path
    )


def test_render_prints_the_config_with_keys_only_as_references(tmp_path: Path, gateway) -> None:
    import json

    config = tmp_path / "sidecar.toml"
    config.write_text(
        f'[[gateways]]\nid = "main"\nurl = "{gateway.url}"\napi_key_env = "MAIN_KEY"\nexclude = ["slow"]\n'
        '[[gateways]]\nid = "down"\nurl = "http://127.0.0.1:1"\n'
    )
    result = run_cli(tmp_path, "render", "--config", str(config), env_extra={"MAIN_KEY": gateway.master_key})
    # One gateway could not be read: the config is still printed, and the exit code says so.
    assert result.returncode == 1
    assert "gateway down:" in result.stderr and "showing its 0 saved models" in result.stderr
    rendered = json.loads(result.stdout)
    main = rendered["provider"]["main"]
    # Key custody: the sidecar's route and the token's variable, which the sidecar's own
    # SIDECAR_LISTEN (the default here) makes 127.0.0.1:4097.
    assert main["options"] == {"baseURL": "http://127.0.0.1:4097/gateway/main/v1", "apiKey": "{env:OPENCODE_SIDECAR_TOKEN}"}
    assert {"claude-sonnet-4-5", "claude-haiku-4-5", "openai/gpt-4o-mini"} <= set(main["models"])
    assert "slow" not in main["models"] and "text-embedding-3-small" not in main["models"]
    assert main["models"]["claude-sonnet-4-5"]["limit"] == {"context": 200000, "output": 64000}
    assert rendered["provider"]["down"]["models"] == {}
    assert gateway.master_key not in result.stdout + result.stderr
    # It only shows: nothing is written.
    assert not (tmp_path / "state").exists() or not any((tmp_path / "state").iterdir())


def test_a_bad_gateways_file_names_the_entry_and_field(tmp_path: Path) -> None:
    config = tmp_path / "sidecar.toml"
    config.write_text('[[gateways]]\nid = "a"\nurl = "http://a"\n[[gateways]]\nid = "b"\nurl = "http://b"\nformat = "xml"\n')
    for command in (["run", "--config", str(config)], ["render", "--config", str(config)]):
        result = run_cli(tmp_path, *command)
        assert result.returncode == 2
        (line,) = result.stderr.strip().splitlines()
        assert "SIDECAR_CONFIG" in line and "gateways[1] (b): format:" in line
