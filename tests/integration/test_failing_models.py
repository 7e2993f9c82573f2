"""A listed model whose upstream refuses it (issue 17 item 4), against the real LiteLLM and the real
opencode: the first prompt with it fails (nothing could know before), the model then shows as
failing in /v1/models, /v1/status and /metrics, the next prompt through the sidecar gets the
gateway's reason as an error before opencode sees it (no session.error), and once the upstream
accepts the model the background retry clears the mark and prompts answer again."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx
import pytest

from tests.integration.test_names import EventLog, message, new_session
from tests.support import fake_upstream
from tests.support import litellm_proxy as lp
from tests.support.opencode_api import answer_text
from tests.support.sidecar_process import SidecarProcess, start_sidecar

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

BROKEN = "broken-upstream"


@pytest.fixture(scope="module")
def refusing_upstream() -> Iterator[fake_upstream.FakeUpstream]:
    server = fake_upstream.start_in_thread(delay=0, chunks=2)
    server.refused_models.add(BROKEN)
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def failing_gateway(
    tmp_path_factory: pytest.TempPathFactory, refusing_upstream: fake_upstream.FakeUpstream
) -> Iterator[lp.LiteLLMProxy]:
    models = [
        lp.mock_model("claude-sonnet-4-5", "sonnet answer"),
        # Listed by LiteLLM; its upstream says it has no such model until the test says otherwise.
        lp.model_entry(BROKEN, {"model": f"openai/{BROKEN}", "api_base": refusing_upstream.base_url, "api_key": "x"}),
    ]
    proxy = lp.start_proxy(tmp_path_factory.mktemp("failing-gateway"), models)
    yield proxy
    lp.stop_proxy(proxy)


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory, failing_gateway: lp.LiteLLMProxy) -> Iterator[SidecarProcess]:
    process = start_sidecar(
        tmp_path_factory.mktemp("failing-sidecar"), failing_gateway.url, failing_gateway.master_key,
        poll_interval="3600", failing_retry_initial="1", failing_retry_max="2",
    )
    yield process
    process.stop()


def listed(client: httpx.Client) -> dict[str, dict[str, Any]]:
    return {entry["id"]: entry for entry in client.get("/v1/models", params={"limit": 1000}).json()["data"]}


def wait_until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout}s: {what}")


def test_a_listed_model_refused_upstream_is_marked_refused_at_once_and_cleared_once_it_answers(
    sidecar: SidecarProcess, refusing_upstream: fake_upstream.FakeUpstream
) -> None:
    directory = str(sidecar.directory)
    refusing_upstream.refused_models.add(BROKEN)
    events = EventLog(sidecar.api_url)
    try:
        with httpx.Client(base_url=sidecar.api_url, timeout=120) as client:
            assert "status" not in listed(client)[BROKEN]  # listed, and nothing known against it yet
            # The first prompt fails inside the session: only the gateway's answer tells.
            first = new_session(client, directory)
            answer = message(client, first, directory, BROKEN)
            assert answer.status_code == 200 and answer.json()["info"].get("error") is not None, answer.text[:1000]
            entry = wait_until(lambda: listed(client)[BROKEN].get("failing"), 30, "the model marked failing")
            assert listed(client)[BROKEN]["status"] == "failing"
            assert entry["kind"] == "not_found" and "does not exist" in entry["reason"], entry
            assert "status" not in listed(client)["claude-sonnet-4-5"]
            # The official SDK reads the page, the extra fields with it.
            with anthropic.Anthropic(base_url=sidecar.api_url, api_key="unused") as sdk:
                (model,) = [m for m in sdk.models.list(limit=1000) if m.id == BROKEN]
                assert (model.model_extra or {}).get("status") == "failing"
            status = client.get("/v1/status").json()["failing"]
            assert status["litellm"][BROKEN]["status"] == 404 and status["litellm"][BROKEN]["kind"] == "not_found"
            assert f'sidecar_model_failing{{gateway="litellm",kind="not_found",model="{BROKEN}"}} 1.0' in client.get("/metrics").text
            # The next prompt: the gateway's reason at once, and opencode never sees it.
            second = new_session(client, directory)
            refused = message(client, second, directory, BROKEN)
            assert refused.status_code == 404, refused.text[:1000]
            error = refused.json()["error"]
            assert error["type"] == "not_found_error" and "does not exist" in error["message"] and BROKEN in error["message"]
            assert client.get(f"/session/{second}/message", params={"directory": directory}).json() == []
            resolved = client.post("/v1/models/resolve", json={"model": f"litellm/{BROKEN}"})
            assert resolved.status_code == 404 and resolved.json()["error"]["type"] == "not_found_error"
            assert "does not exist" in resolved.json()["error"]["message"]
            # The upstream takes the model again: the background retry clears the mark.
            refusing_upstream.refused_models.discard(BROKEN)
            wait_until(lambda: "status" not in listed(client)[BROKEN], 60, "the mark cleared by a retry")
            assert "failing" not in listed(client)[BROKEN]
            assert client.get("/v1/status").json()["failing"] == {}
            answered = message(client, second, directory, BROKEN)
            assert answered.status_code == 200 and answered.json()["info"].get("error") is None, answered.text[:1000]
            assert answer_text(answered) == fake_upstream.answer_text(2)
    finally:
        events.close()
    errors = [e["properties"].get("sessionID") for e in events.session_errors()]
    assert second not in errors, events.session_errors()
    (marked,) = sidecar.events("model.failing")
    assert marked["model"] == BROKEN and marked["kind"] == "not_found"
    assert [e["why"] for e in sidecar.events("model.failing_cleared")] == ["retried"]


def test_without_key_custody_the_refusal_is_read_from_opencodes_events(
    failing_gateway: lp.LiteLLMProxy, refusing_upstream: fake_upstream.FakeUpstream,
    make_sidecar: Callable[..., SidecarProcess],
) -> None:
    """opencode reaches the gateway itself, so the sidecar sees no model request: the failed
    prompt's assistant message (`message.updated`, which names the model) marks it instead."""
    sidecar = make_sidecar(failing_gateway.url, key_custody="false", poll_interval="3600", failing_retry_initial="60")
    directory = str(sidecar.directory)
    refusing_upstream.refused_models.add(BROKEN)
    try:
        with httpx.Client(base_url=sidecar.api_url, timeout=120) as client:
            answer = message(client, new_session(client, directory), directory, BROKEN)
            assert answer.json()["info"].get("error") is not None, answer.text[:1000]
            wait_until(lambda: listed(client)[BROKEN].get("failing"), 30, "the model marked failing")
            second = new_session(client, directory)
            refused = message(client, second, directory, BROKEN)
            assert refused.status_code == 404 and "does not exist" in refused.json()["error"]["message"]
            assert client.get(f"/session/{second}/message", params={"directory": directory}).json() == []
            # Nothing went through the gateway route: the mark came from opencode's events.
            assert client.get("/v1/status").json()["traffic"]["litellm"] == {}
    finally:
        refusing_upstream.refused_models.discard(BROKEN)
