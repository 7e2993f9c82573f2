"""Names the way people write them (issue 17), against the real LiteLLM (a listed model, a
wildcard route, a sentinel) and the real opencode through the sidecar's pass-through: matched
names answer, a misspelt one is refused with the right model named and nothing written, a
wildcard-covered one is accepted, the sentinel is not listed, and an unlisted model registered
blind that the gateway refuses leaves the registry."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import litellm_proxy as lp
from tests.support.opencode_api import answer_text
from tests.support.sidecar_process import OPENCODE_BIN, SidecarProcess, start_sidecar

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

MODELS = [
    lp.mock_model("claude-sonnet-4-5", "sonnet answer"),
    lp.mock_model("gpt-5.5", "gpt-5.5 answer"),
    lp.mock_model("claude-3-5-sonnet-20241022"),
    lp.mock_model("claude-3-5-sonnet-20240620"),
    lp.model_entry("openai/*", {"model": "openai/*", "mock_response": "wildcard answer"}),
    # A name LiteLLM reserves for "every model of the team": listed by it here, never a model.
    lp.mock_model("all-team-models", "not a model"),
]


@pytest.fixture(scope="module")
def names_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[lp.LiteLLMProxy]:
    proxy = lp.start_proxy(tmp_path_factory.mktemp("names-gateway"), MODELS)
    yield proxy
    lp.stop_proxy(proxy)


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory, names_gateway: lp.LiteLLMProxy) -> Iterator[SidecarProcess]:
    # The default SIDECAR_UNLISTED_MODELS (refuse); polls an hour apart: nothing here waits for one.
    process = start_sidecar(
        tmp_path_factory.mktemp("names-sidecar"), names_gateway.url, names_gateway.master_key, poll_interval="3600"
    )
    yield process
    process.stop()


class EventLog:
    """opencode's `/global/event` stream through the sidecar, read in a thread while a test runs."""

    def __init__(self, api_url: str) -> None:
        self.events: list[dict[str, Any]] = []
        self._client = httpx.Client(base_url=api_url, timeout=httpx.Timeout(10, read=None))
        self._connected = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        assert self._connected.wait(30), "the event stream did not open"

    def _read(self) -> None:
        try:
            with self._client.stream("GET", "/global/event") as stream:
                for line in stream.iter_lines():
                    if line.startswith("data:"):
                        self.events.append(json.loads(line[5:]))
                        self._connected.set()
        except httpx.HTTPError:
            pass  # closed by `close`

    def session_errors(self) -> list[dict[str, Any]]:
        return [e["payload"] for e in self.events if e.get("payload", {}).get("type") == "session.error"]

    def close(self) -> None:
        self._client.close()
        self._thread.join(10)


def message(client: httpx.Client, session: str, directory: str, model: object) -> httpx.Response:
    return client.post(
        f"/session/{session}/message", params={"directory": directory},
        json={"parts": [{"type": "text", "text": "hi"}], "model": model},
    )


def new_session(client: httpx.Client, directory: str) -> str:
    return client.post("/session", params={"directory": directory}, json={}).json()["id"]


def test_dated_dotted_and_prefixed_names_answer_without_a_session_error(sidecar: SidecarProcess) -> None:
    directory = str(sidecar.directory)
    events = EventLog(sidecar.api_url)
    writes = len(sidecar.events("opencode.config_written"))
    try:
        with httpx.Client(base_url=sidecar.api_url, timeout=120) as client:
            sessions = []
            for name in ["claude-sonnet-4-5-20250929", "claude-sonnet-4.5", "openrouter/anthropic/claude-sonnet-4-5"]:
                session = new_session(client, directory)
                sessions.append(session)
                answer = message(client, session, directory, name)
                assert answer.status_code == 200, (name, answer.text[:500])
                assert answer.json()["info"].get("error") is None, name
                assert answer_text(answer) == "sonnet answer", name
                assert (answer.json()["info"]["providerID"], answer.json()["info"]["modelID"]) == ("litellm", "claude-sonnet-4-5")
            resolved = client.post("/v1/models/resolve", json={"model": "Claude Sonnet 4.5"})
            assert resolved.status_code == 200 and resolved.json()["opencode"]["modelID"] == "claude-sonnet-4-5"
            assert resolved.json()["registered"] is False
    finally:
        events.close()
    assert [e for e in events.session_errors() if e["properties"].get("sessionID") in sessions] == []
    # Matched to a listed model: nothing registered, nothing written.
    assert sidecar.events("registry.registered") == []
    assert len(sidecar.events("opencode.config_written")) == writes
    assert {e["step"] for e in sidecar.events("resolve.matched")} >= {"dates", "separators", "provider"}


def test_a_misspelt_name_is_a_404_naming_the_model_and_nothing_is_written(sidecar: SidecarProcess) -> None:
    directory = str(sidecar.directory)
    config = sidecar.state_dir / "opencode.json"
    before = (config.stat().st_mtime_ns, config.read_text())
    with httpx.Client(base_url=sidecar.api_url, timeout=60) as client:
        resolved = client.post("/v1/models/resolve", json={"model": "claude-sonet-4-5"})
        assert resolved.status_code == 404, resolved.text
        error = resolved.json()["error"]
        assert error["type"] == "not_found_error"
        assert "did you mean 'claude-sonnet-4-5'" in error["message"]
        # Through the pass-through: the same answer, and opencode never sees the prompt.
        session = new_session(client, directory)
        refused = message(client, session, directory, "claude-sonet-4-5")
        assert refused.status_code == 404 and refused.json()["error"] == error
        assert client.get(f"/session/{session}/message", params={"directory": directory}).json() == []
        assert client.get("/v1/models/claude-sonet-4-5").status_code == 404
        # A name two snapshots answer to is a 409 naming both, there too.
        ambiguous = message(client, session, directory, "claude-3-5-sonnet-latest")
        assert ambiguous.status_code == 409, ambiguous.text
        assert "claude-3-5-sonnet-20241022" in ambiguous.text and "claude-3-5-sonnet-20240620" in ambiguous.text
        assert client.get(f"/session/{session}/message", params={"directory": directory}).json() == []
    assert (config.stat().st_mtime_ns, config.read_text()) == before
    assert sidecar.events("registry.registered") == []


def test_a_wildcard_covered_name_is_accepted_and_answers(sidecar: SidecarProcess) -> None:
    directory = str(sidecar.directory)
    events = EventLog(sidecar.api_url)
    try:
        with httpx.Client(base_url=sidecar.api_url, timeout=120) as client:
            session = new_session(client, directory)
            answer = message(client, session, directory, "openai/brand-new-model")
            assert answer.status_code == 200, answer.text[:500]
            assert answer_text(answer) == "wildcard answer"
            assert client.get("/v1/models/openai/brand-new-model").json()["registered"] is True
    finally:
        events.close()
    assert [e for e in events.session_errors() if e["properties"].get("sessionID") == session] == []
    accepted = sidecar.events("resolve.unlisted_accepted")
    assert [(e["model"], e["route"]) for e in accepted] == [("openai/brand-new-model", "openai/*")]


def test_a_sentinel_is_not_listed(sidecar: SidecarProcess, names_gateway: lp.LiteLLMProxy) -> None:
    assert "all-team-models" in {m["id"] for m in lp.get_models(names_gateway)["data"]}  # LiteLLM lists it
    with httpx.Client(base_url=sidecar.api_url, timeout=30) as client:
        listed = {m["id"] for m in client.get("/v1/models", params={"limit": 1000}).json()["data"]}
    assert "all-team-models" not in listed
    assert {"claude-sonnet-4-5", "gpt-5.5"} <= listed
    assert "all-team-models" not in (sidecar.state_dir / "opencode.json").read_text()


def test_a_registered_model_the_gateway_refuses_is_dropped(
    names_gateway: lp.LiteLLMProxy, make_sidecar: Callable[..., SidecarProcess]
) -> None:
    sidecar = make_sidecar(names_gateway.url, poll_interval="3600", unlisted_models="register")
    directory = str(sidecar.directory)
    with httpx.Client(base_url=sidecar.api_url, timeout=120) as client:
        registered = client.post("/v1/models/resolve", json={"model": "no-such-model-anywhere"})
        assert registered.status_code == 200 and registered.json()["registered"] is True
        session = new_session(client, directory)
        answer = message(client, session, directory, "no-such-model-anywhere")
        # LiteLLM with a wildcard route: 400 "... There are no healthy deployments for this model".
        assert answer.json()["info"].get("error") is not None, answer.text[:1000]
        sidecar.wait_for(lambda: sidecar.events("registry.dropped_refused"), 30, "the refused model dropped")
        assert client.get("/v1/models/no-such-model-anywhere").status_code == 404
    (dropped,) = sidecar.events("registry.dropped_refused")
    assert dropped["model"] == "no-such-model-anywhere" and "model" in dropped["reason"].lower()
    assert "no-such-model-anywhere" not in (sidecar.state_dir / "opencode.json").read_text()


@pytest.mark.parametrize("model", ["claude-sonet-4-5", "litellm/claude-sonet-4-5"])
def test_opencode_run_with_a_misspelt_model_prints_why_and_fails(
    model: str, sidecar: SidecarProcess, tmp_path: Path
) -> None:
    """Issue 20: `opencode run --attach` with an unknown model printed nothing and exited 0, the
    session holding the error. Refused by the sidecar before opencode sees the prompt, opencode's
    CLI prints the reason, naming the model asked for and the one meant, and exits non-zero."""
    env = {**os.environ, "HOME": str(tmp_path / "home"), "OPENCODE_DISABLE_MODELS_FETCH": "1"}
    run = subprocess.run(
        [str(OPENCODE_BIN), "run", "--attach", sidecar.api_url, "--dir", str(sidecar.directory), "--model", model, "hi"],
        env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )
    printed = run.stdout + run.stderr
    assert run.returncode != 0, printed[-2000:]
    assert "claude-sonet-4-5" in printed and "claude-sonnet-4-5" in printed, printed[-2000:]
    assert "not_found_error" in printed or "did you mean" in printed.lower(), printed[-2000:]
