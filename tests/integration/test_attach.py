"""The two-container pod, here: opencode started on its own with OPENCODE_CONFIG at a shared path,
the sidecar in attach mode writing that file and applying changes over opencode's API."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.support import litellm_proxy as lp
from tests.support.litellm_proxy import free_port
from tests.support.opencode_api import answer_text, create_session, prompt
from tests.support.opencode_process import start_opencode
from tests.support.sidecar_process import SidecarProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def test_attach_mode_writes_the_shared_config_and_applies_a_list_change_to_a_foreign_opencode(
    tmp_path: Path,
    make_gateway: Callable[..., lp.LiteLLMProxy],
    make_sidecar: Callable[..., SidecarProcess],
) -> None:
    gateway = make_gateway([lp.mock_model("claude-sonnet-4-5")])
    shared = tmp_path / "shared" / "opencode.json"
    port = free_port()
    # Key custody: both containers get the token from one Secret; only the sidecar gets the key.
    token = "gateway-token-" + os.urandom(16).hex()
    sidecar = make_sidecar(
        gateway.url,
        wait=False,
        opencode_url=f"http://127.0.0.1:{port}",
        opencode_config=str(shared),
        opencode_directory=None,  # learned from opencode: its filesystem may not be ours
        gateway_token=token,
    )
    # As a native sidecar: it has written the config before opencode starts, and is not ready without it.
    sidecar.wait_started()
    config = json.loads(shared.read_text())
    # opencode reaches the gateway through the sidecar, at its address on the shared loopback.
    assert config["provider"]["litellm"]["options"] == {
        "baseURL": f"{sidecar.api_url}/gateway/litellm/v1", "apiKey": "{env:OPENCODE_SIDECAR_TOKEN}"
    }
    assert gateway.master_key not in shared.read_text() and token not in shared.read_text()
    assert httpx.get(f"{sidecar.api_url}/readyz", timeout=2).status_code == 503

    # opencode gets the token under the name the config refers to, and never the gateway key.
    opencode = start_opencode(tmp_path / "opencode", shared, sidecar.password, {"OPENCODE_SIDECAR_TOKEN": token}, port=port)
    try:
        sidecar.wait_ready()
        directory = str(tmp_path / "opencode" / "project")
        with opencode.client() as client:
            session = create_session(client, directory)
            assert answer_text(prompt(client, session, directory, "litellm/claude-sonnet-4-5")) == "mock answer"

        lp.restart_proxy(gateway, [lp.mock_model("claude-sonnet-4-5"), lp.mock_model("gpt-5.5", "new model here")])

        def listed() -> bool:
            with sidecar.api() as api:
                return "gpt-5.5" in {m["id"] for m in api.get("/v1/models").json()["data"]}

        sidecar.wait_for(listed, 60, "gpt-5.5 listed")
        sidecar.wait_ready()
        with opencode.client() as client:
            # The same session, the same opencode process: applied over its API.
            assert answer_text(prompt(client, session, directory, "litellm/gpt-5.5")) == "new model here"
        assert sidecar.events("opencode.reloaded")
        assert sidecar.events("opencode.default_directory")[0]["directory"] == directory
        assert opencode.process.poll() is None
        with sidecar.api() as api:
            status = api.get("/v1/status").json()
        assert status["opencode"]["attached"] == opencode.url and status["opencode"]["pid"] is None

        # Stopping the sidecar leaves opencode running: it belongs to whoever started it.
        sidecar.process.send_signal(signal.SIGTERM)
        assert sidecar.process.wait(30) == 0
        assert opencode.process.poll() is None and opencode.healthy()
        assert not sidecar.events("child.started")
    finally:
        opencode.stop()
