"""Refresh on demand against the real LiteLLM and opencode: a model added to the gateway answers a
prompt right after `opencode-sidecar refresh` returns, with the sidecar polling once an hour; and
refreshes asked together share one poll."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.support import fake_upstream
from tests.support import litellm_proxy as lp
from tests.support.opencode_api import answer_text, create_session, prompt
from tests.support.sidecar_process import ROOT, SidecarProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

KEY = "refresh-test-api-key-0123456789abcdef"


def polls(sidecar: SidecarProcess) -> int:
    return len(sidecar.events("gateway.unchanged")) + len(sidecar.events("catalog.changed"))


def test_a_model_added_to_the_gateway_answers_right_after_refresh_returns(
    make_gateway: Callable[..., lp.LiteLLMProxy], make_sidecar: Callable[..., SidecarProcess]
) -> None:
    gateway = make_gateway([lp.mock_model("claude-sonnet-4-5")])
    sidecar = make_sidecar(gateway.url, poll_interval="3600", api_key=KEY, log_level="debug")
    directory = str(sidecar.directory)
    with httpx.Client(base_url=sidecar.api_url, headers={"x-api-key": KEY}, timeout=60) as through:
        session = create_session(through, directory)
        assert answer_text(prompt(through, session, directory, "litellm/claude-sonnet-4-5")) == "mock answer"

        lp.restart_proxy(gateway, [lp.mock_model("claude-sonnet-4-5"), lp.mock_model("gpt-5.5", "new model")])
        assert "gpt-5.5" not in [m["id"] for m in through.get("/v1/models").json()["data"]]  # an hour to wait
        env = {**os.environ, "SIDECAR_URL": sidecar.api_url, "SIDECAR_API_KEY": KEY}
        refreshed = subprocess.run(
            [sys.executable, "-m", "sidecar", "refresh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
        )
        assert refreshed.returncode == 0, refreshed.stdout + refreshed.stderr
        assert "litellm: changed, 2 models: added gpt-5.5" in refreshed.stdout, refreshed.stdout
        assert "applied" in refreshed.stdout

        # At once: nothing waited for, no poll of its own.
        assert answer_text(prompt(through, session, directory, "litellm/gpt-5.5")) == "new model"
    assert sidecar.events("child.exited") == []


def test_refreshes_asked_together_share_one_poll(make_sidecar: Callable[..., SidecarProcess]) -> None:
    # A gateway of ours whose list takes a second, so that the refreshes surely overlap a poll.
    gateway = fake_upstream.start_in_thread()
    try:
        sidecar = make_sidecar(gateway.base_url.removesuffix("/v1"), "sk-fake", poll_interval="3600", api_key=KEY)
        gateway.list_delay = 1.0
        before = gateway.list_requests

        def ask(_: int) -> httpx.Response:
            return httpx.post(f"{sidecar.api_url}/v1/models/refresh", headers={"x-api-key": KEY}, timeout=60)

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(ask, range(8)))
        assert all(answer.status_code == 200 for answer in answers), [a.text[:200] for a in answers]
        assert all(answer.json()["gateways"][0]["ok"] for answer in answers)
        # Eight callers at once: one poll for the first, one more shared by all that came during it.
        assert 1 <= gateway.list_requests - before <= 2
        unknown = httpx.post(
            f"{sidecar.api_url}/v1/models/refresh", headers={"x-api-key": KEY}, json={"gateway": "x"}, timeout=30
        )
        assert unknown.status_code == 404 and "litellm" in unknown.json()["error"]["message"]
        assert httpx.post(f"{sidecar.api_url}/v1/models/refresh", timeout=30).status_code == 401
        assert gateway.list_requests - before <= 2  # refused before any poll
    finally:
        gateway.shutdown()
        gateway.server_close()
