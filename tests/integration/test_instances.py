"""Every instance opencode has loaded gets the new list, however it was opened (issue 16): a
directory loaded only by a read straight on opencode's port, and one opened by a TUI attached
straight to opencode's port. Neither goes through the sidecar, and opencode announces no instance
load: only the plugin the sidecar names in opencode's config tells the sidecar of them."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import litellm_proxy as lp
from tests.support.opencode_api import provider_models
from tests.support.sidecar_process import OPENCODE_BIN, SidecarProcess, start_sidecar

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

# Generous for a busy 2-core machine: the sidecar polls every second, a reload takes ~1 s.
POLL_PLUS_RELOAD = 20.0


@pytest.fixture(scope="module")
def own_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[lp.LiteLLMProxy]:
    proxy = lp.start_proxy(tmp_path_factory.mktemp("instances-gateway"), [lp.mock_model("claude-sonnet-4-5")])
    yield proxy
    lp.stop_proxy(proxy)


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory, own_gateway: lp.LiteLLMProxy) -> Iterator[SidecarProcess]:
    process = start_sidecar(tmp_path_factory.mktemp("instances"), own_gateway.url, own_gateway.master_key)
    yield process
    process.stop()


def seen(sidecar: SidecarProcess, directory: Path) -> bool:
    return any(e.get("directory") == str(directory) for e in sidecar.events("opencode.directory_seen"))


def add_model_and_wait(sidecar: SidecarProcess, gateway: lp.LiteLLMProxy, directory: Path, name: str) -> float:
    """Restart the gateway with one more model; seconds from the sidecar listing it to opencode
    listing it in `directory` (read straight on opencode's port, which reloads nothing)."""
    listed = [e["id"] for e in lp.get_models(gateway)["data"]]
    lp.restart_proxy(gateway, [lp.mock_model(model) for model in [*listed, name]])
    with sidecar.api() as api:
        sidecar.wait_for(lambda: api.get(f"/v1/models/{name}").status_code == 200, 60, f"the sidecar lists {name}")
    listed_at = time.monotonic()
    with sidecar.opencode() as opencode:
        sidecar.wait_for(
            lambda: name in provider_models(opencode, str(directory)), POLL_PLUS_RELOAD, f"{name} in {directory}"
        )
    return time.monotonic() - listed_at


def test_a_directory_loaded_by_a_read_on_opencodes_own_port_gets_a_new_model(
    sidecar: SidecarProcess, own_gateway: lp.LiteLLMProxy, tmp_path: Path
) -> None:
    directory = tmp_path / "read-straight"
    directory.mkdir()
    with sidecar.opencode() as opencode:
        # A read with opencode's password, no session, not through the sidecar: only the plugin tells.
        assert opencode.get("/config", params={"directory": str(directory)}).status_code == 200
        assert "gpt-5.5" not in provider_models(opencode, str(directory))
    sidecar.wait_for(lambda: seen(sidecar, directory), 15, "the instance's announcement")
    took = add_model_and_wait(sidecar, own_gateway, directory, "gpt-5.5")
    assert any(e.get("directory") == str(directory) for e in sidecar.events("opencode.reloaded"))
    assert took < POLL_PLUS_RELOAD


def tmux(socket: str, *args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(["tmux", "-L", socket, *args], capture_output=True, text=True, timeout=30, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed: the TUI can't be driven")
def test_a_directory_opened_by_a_tui_attached_to_opencodes_own_port_gets_a_new_model(
    sidecar: SidecarProcess, own_gateway: lp.LiteLLMProxy, tmp_path: Path
) -> None:
    directory = tmp_path / "tui-straight"
    directory.mkdir()
    home = tmp_path / "tui-home"
    # The TUI's own state apart from the user's; its password from the environment, never argv.
    # A tmux server of its own (-L), started with this environment, so the pane inherits it.
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SIDECAR_", "OPENCODE_"))},
        "HOME": str(home),
        **{f"XDG_{kind}_HOME": str(home / kind.lower()) for kind in ("DATA", "CONFIG", "CACHE", "STATE")},
        "OPENCODE_SERVER_PASSWORD": sidecar.password,
        "OPENCODE_DISABLE_MODELS_FETCH": "1",
        "TERM": "xterm-256color",
    }
    socket = f"sidecar-test-{uuid.uuid4().hex[:12]}"
    command = f"{OPENCODE_BIN} attach {sidecar.opencode_url} --dir {directory}"
    tmux(socket, "new-session", "-d", "-s", "tui", "-x", "160", "-y", "45", command, env=env)
    try:
        sidecar.wait_for(lambda: seen(sidecar, directory), 60, "the TUI's instance announced")
        sidecar.wait_for(lambda: tmux(socket, "capture-pane", "-p", "-t", "tui").strip(), 30, "the TUI drawn")
        took = add_model_and_wait(sidecar, own_gateway, directory, "gpt-5.6")
        assert took < POLL_PLUS_RELOAD
    finally:
        subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, timeout=30)
