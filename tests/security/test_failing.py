"""Attacks on the failing marks (issue 17 item 4), at the real sidecar in front of the real opencode,
its gateway a fake of ours that records every request: what holds the internal token can't mark a
model failing by naming models the gateway doesn't list, what lacks it marks nothing, and a
gateway's refusal that quotes the key shows it nowhere (the marks, /v1/models, /v1/status, the
refusal, /metrics, the log)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support import fake_upstream
from tests.support.fake_upstream import FakeUpstream
from tests.support.sidecar_process import SidecarProcess, start_sidecar

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

TOKEN = "security-failing-token-5a6b7c8d9e0f1a2b3c4d5e6f"
API_KEY = "security-failing-api-key-1f2e3d4c5b6a7f8e9d0c"
GATEWAY_KEY = "sk-security-failing-gateway-key-7733"
BROKEN = "broken"


@pytest.fixture(scope="module")
def gateway() -> Iterator[FakeUpstream]:
    server = fake_upstream.start_in_thread(delay=0.0, chunks=1, models=fake_upstream.model_list(["slow", BROKEN]))
    server.refused_models.add(BROKEN)
    server.refusals_echo_key = True
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory, gateway: FakeUpstream) -> Iterator[SidecarProcess]:
    process = start_sidecar(
        tmp_path_factory.mktemp("failing-attacks"), gateway.base_url, GATEWAY_KEY, api_key=API_KEY,
        gateway_token=TOKEN, poll_interval="3600", failing_retry_initial="3600",
    )
    yield process
    process.stop()


def chat(sidecar: SidecarProcess, model: Any, token: str | None = TOKEN) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token is not None else {}
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    return httpx.post(f"{sidecar.api_url}/gateway/litellm/v1/chat/completions", json=body, headers=headers, timeout=30)


def api(sidecar: SidecarProcess) -> httpx.Client:
    return httpx.Client(base_url=sidecar.api_url, headers={"x-api-key": API_KEY}, timeout=30)


def test_refusals_of_models_the_gateway_does_not_list_mark_nothing(sidecar: SidecarProcess, gateway: FakeUpstream) -> None:
    names = [f"unlisted-{i}" for i in range(40)] + ["x" * 5000, "bad\u0000name\nmodel", "../../broken"]
    gateway.refused_models.update(names)
    try:
        for name in names:
            answer = chat(sidecar, name)
            assert answer.status_code == 404, answer.text[:300]  # the gateway's refusal, passed back
    finally:
        gateway.refused_models.difference_update(names)
    with api(sidecar) as client:
        assert client.get("/v1/status").json()["failing"] == {}
        assert "sidecar_model_failing{" not in client.get("/metrics").text
    assert sidecar.events("model.failing") == []


def test_without_the_token_nothing_reaches_the_gateway_and_nothing_is_marked(
    sidecar: SidecarProcess, gateway: FakeUpstream
) -> None:
    seen = len(gateway.exchanges)
    for token in (None, "wrong-token", API_KEY, GATEWAY_KEY):
        assert chat(sidecar, BROKEN, token).status_code == 401
    assert len(gateway.exchanges) == seen
    with api(sidecar) as client:
        assert client.get("/v1/status").json()["failing"] == {}


def test_a_refusal_quoting_the_key_shows_it_nowhere(sidecar: SidecarProcess, gateway: FakeUpstream) -> None:
    refused = chat(sidecar, BROKEN)
    assert refused.status_code == 404
    assert gateway.exchanges[-1].body["model"] == BROKEN and GATEWAY_KEY in gateway.exchanges[-1].headers["authorization"]
    with api(sidecar) as client:
        deadline = time.monotonic() + 10
        while not client.get("/v1/status").json()["failing"] and time.monotonic() < deadline:
            time.sleep(0.1)
        status = client.get("/v1/status").json()["failing"]
        assert status["litellm"][BROKEN]["kind"] == "not_found", status
        assert "authorization: Bearer" in status["litellm"][BROKEN]["reason"]  # the quote got this far
        shown = [
            client.get("/v1/status").text,
            client.get("/v1/models").text,
            client.get(f"/v1/models/{BROKEN}").text,
            client.post("/v1/models/resolve", json={"model": BROKEN}).text,
            client.get("/metrics").text,
        ]
        assert "does not exist" in shown[1] and "does not exist" in shown[3]
    for text in shown:
        assert GATEWAY_KEY not in text
    assert GATEWAY_KEY not in sidecar.log_text()
