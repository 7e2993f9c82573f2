"""Any model an agent asks for works: resolve, registration, and the pass-through to opencode."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from tests.support import litellm_proxy as lp
from tests.support.fake_upstream import FakeUpstream
from tests.support.opencode_api import answer_text, busy_sessions, create_session, prompt, provider_models
from tests.support.sidecar_process import OPENCODE_BIN, SidecarProcess, start_sidecar

pytestmark = pytest.mark.integration

API_KEY = "sidecar-key-0123456789abcdef01234567"
WILDCARD = lp.model_entry("openai/*", {"model": "openai/*", "mock_response": "wildcard answer"})


@pytest.fixture(scope="module")
def wildcard_gateway(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream) -> Iterator[lp.LiteLLMProxy]:
    models = [
        lp.mock_model("claude-sonnet-4-5", "sonnet answer"),
        lp.mock_model("gpt-5.5", "gpt-5.5 answer"),
        lp.slow_model(upstream.base_url),
        WILDCARD,
    ]
    proxy = lp.start_proxy(tmp_path_factory.mktemp("wildcard-gateway"), models)
    yield proxy
    lp.stop_proxy(proxy)


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory, wildcard_gateway: lp.LiteLLMProxy) -> Iterator[SidecarProcess]:
    # Polls are an hour apart: whatever works here works without waiting for one.
    process = start_sidecar(
        tmp_path_factory.mktemp("resolving-sidecar"), wildcard_gateway.url, wildcard_gateway.master_key,
        poll_interval="3600", model_aliases='{"sonnet": "claude-sonnet-4-5"}',
    )
    yield process
    process.stop()


def message(client: httpx.Client, session: str, directory: str, model: object, text: str = "hi") -> httpx.Response:
    return client.post(
        f"/session/{session}/message", params={"directory": directory},
        json={"parts": [{"type": "text", "text": text}], "model": model},
    )


def test_any_model_form_answers_through_the_passthrough(sidecar: SidecarProcess) -> None:
    directory = str(sidecar.directory)
    with httpx.Client(base_url=sidecar.api_url, timeout=60) as client:
        session = client.post("/session", params={"directory": directory}, json={}).json()["id"]
        assert answer_text(message(client, session, directory, "gpt-5.5")) == "gpt-5.5 answer"
        anthropic_form = {"providerID": "anthropic", "modelID": "claude-sonnet-4-5"}
        assert answer_text(message(client, session, directory, anthropic_form)) == "sonnet answer"
        assert answer_text(message(client, session, directory, "sonnet")) == "sonnet answer"
        history = client.get(f"/session/{session}/message", params={"directory": directory}).json()
    errors = [m["info"].get("error") for m in history if m["info"].get("error")]
    assert errors == []
    used = {(m["info"]["providerID"], m["info"]["modelID"]) for m in history if m["info"]["role"] == "assistant"}
    assert used == {("litellm", "gpt-5.5"), ("litellm", "claude-sonnet-4-5")}


def test_wildcard_model_works_without_a_poll(sidecar: SidecarProcess) -> None:
    directory = str(sidecar.directory)
    polls = len(sidecar.events("gateway.unchanged")) + len(sidecar.events("catalog.changed"))
    with httpx.Client(base_url=sidecar.api_url, timeout=60) as client:
        resolved = client.post("/v1/models/resolve", json={"model": "openai/some-new-model", "directory": directory})
        assert resolved.status_code == 200, resolved.text
        body = resolved.json()
        assert body["registered"] is True and body["type"] == "model"
        assert body["opencode"] == {"providerID": "litellm", "modelID": "openai/some-new-model"}
        listed = client.get("/v1/models/openai/some-new-model").json()
        assert listed["registered"] is True
        session = client.post("/session", params={"directory": directory}, json={}).json()["id"]
        pair = {"providerID": "litellm", "modelID": "openai/some-new-model"}
        assert answer_text(message(client, session, directory, pair)) == "wildcard answer"
        # Straight through the pass-through, a model nobody resolved before.
        assert answer_text(message(client, session, directory, "openai/another-new-model")) == "wildcard answer"
        # A listed model is not registered, and resolving it again writes nothing.
        writes = len(sidecar.events("opencode.config_written"))
        again = client.post("/v1/models/resolve", json={"model": "gpt-5.5"}).json()
        assert again["registered"] is False and again["opencode"]["modelID"] == "gpt-5.5"
        assert len(sidecar.events("opencode.config_written")) == writes
    assert len(sidecar.events("gateway.unchanged")) + len(sidecar.events("catalog.changed")) == polls


def test_resolve_in_another_directory_while_one_generates(sidecar: SidecarProcess) -> None:
    busy_dir = str(sidecar.workdir / "busy")
    other_dir = str(sidecar.workdir / "other")
    os.makedirs(busy_dir, exist_ok=True)
    os.makedirs(other_dir, exist_ok=True)
    with httpx.Client(base_url=sidecar.api_url, timeout=120) as client, sidecar.opencode() as opencode:
        session = create_session(opencode, busy_dir)
        result: dict[str, object] = {}

        def generate() -> None:
            result["response"] = prompt(opencode, session, busy_dir, "litellm/slow", "take your time")
            result["finished"] = time.monotonic()

        worker = threading.Thread(target=generate)
        worker.start()
        sidecar.wait_for(lambda: busy_sessions(opencode, busy_dir), 30, "the slow prompt to start")
        resolved = client.post("/v1/models/resolve", json={"model": "openai/resolved-while-busy", "directory": other_dir})
        assert resolved.status_code == 200, resolved.text
        # It answered without waiting for the busy directory: that prompt still generates.
        assert busy_sessions(opencode, busy_dir), "the resolve should not have waited for the busy directory"
        other_session = create_session(opencode, other_dir)
        assert answer_text(prompt(opencode, other_session, other_dir, "litellm/openai/resolved-while-busy")) == "wildcard answer"
        assert busy_sessions(opencode, busy_dir), "the slow prompt should still be generating"
        worker.join(120)
        assert "chunk 44" in answer_text(result["response"])  # no MessageAbortedError
        # The busy directory gets the model once it is idle.
        sidecar.wait_for(lambda: "openai/resolved-while-busy" in provider_models(opencode, busy_dir), 30, "busy dir reloaded")


def test_concurrent_resolves_write_once(sidecar: SidecarProcess) -> None:
    writes = len(sidecar.events("opencode.config_written"))

    async def resolve_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=sidecar.api_url, timeout=60) as client:
            answers: list[httpx.Response] = []

            async def one() -> None:
                answers.append(await client.post("/v1/models/resolve", json={"model": "openai/twenty-at-once"}))

            async with anyio.create_task_group() as group:
                for _ in range(20):
                    group.start_soon(one)
            return answers

    answers = anyio.run(resolve_all)
    assert [a.status_code for a in answers] == [200] * 20
    assert {a.json()["opencode"]["modelID"] for a in answers} == {"openai/twenty-at-once"}
    assert len(sidecar.events("opencode.config_written")) == writes + 1


def test_server_sent_events_pass_through_as_they_happen(sidecar: SidecarProcess) -> None:
    directory = str(sidecar.workdir / "events")
    os.makedirs(directory, exist_ok=True)
    with httpx.Client(base_url=sidecar.api_url, timeout=httpx.Timeout(30, read=30)) as client, sidecar.opencode() as opencode:
        with client.stream("GET", "/event", params={"directory": directory}) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            events = (json.loads(line[5:]) for line in stream.iter_lines() if line.startswith("data:"))
            assert next(events)["type"] == "server.connected"
            # Each event arrives while the stream is open, before the next one is caused.
            titles = []
            for n in range(3):
                created = opencode.post("/session", params={"directory": directory}, json={"title": f"t{n}"}).json()
                event = next(e for e in events if e["type"] == "session.created")
                assert event["properties"]["info"]["id"] == created["id"]
                titles.append(event["properties"]["info"]["title"])
            assert titles == ["t0", "t1", "t2"]


def test_invalid_names_and_removal(sidecar: SidecarProcess) -> None:
    with httpx.Client(base_url=sidecar.api_url, timeout=30) as client:
        for bad in ["", "x" * 300, "bad\nname", "{env:SIDECAR_GATEWAY_API_KEY}", 5, {"providerID": "litellm"}]:
            answer = client.post("/v1/models/resolve", json={"model": bad})
            assert answer.status_code == 400, bad
            assert answer.json()["error"]["type"] == "invalid_request_error"
        assert client.post("/v1/models/resolve", content=b"{not json").status_code == 400
        assert client.post("/v1/models/resolve", json={"model": "gpt-5.5", "directory": "relative"}).status_code == 400
        # Through the pass-through too: a bad model never reaches opencode.
        session = client.post("/session", json={}).json()["id"]
        assert message(client, session, str(sidecar.directory), "{file:/etc/hostname}").status_code == 400
        assert client.post("/v1/models/resolve", json={"model": "openai/to-remove"}).status_code == 200
        assert client.delete("/v1/models/gpt-5.5").status_code == 409
        assert client.delete("/v1/models/nope").status_code == 404
        assert client.delete("/v1/models/openai/to-remove").status_code == 200
        assert client.get("/v1/models/openai/to-remove").status_code == 404


def test_no_secret_through_the_passthrough(sidecar: SidecarProcess, wildcard_gateway: lp.LiteLLMProxy) -> None:
    directory = str(sidecar.directory)
    with httpx.Client(base_url=sidecar.api_url, timeout=30) as client:
        for path in ["/config", "/config/providers", "/provider", "/global/config", "/path", "/session"]:
            answer = client.get(path, params={"directory": directory})
            assert answer.status_code == 200, path
            assert wildcard_gateway.master_key not in answer.text, path
            assert sidecar.password not in answer.text, path
        providers = client.get("/config/providers", params={"directory": directory}).json()["providers"]
    litellm = next(p for p in providers if p["id"] == "litellm")
    assert litellm["options"]["apiKey"] == "[redacted]"


def test_registered_models_survive_a_restart(
    tmp_path: Path, wildcard_gateway: lp.LiteLLMProxy, make_sidecar: Callable[..., SidecarProcess]
) -> None:
    workdir = tmp_path / "kept"
    first = make_sidecar(wildcard_gateway.url, workdir=workdir)
    with httpx.Client(base_url=first.api_url, timeout=60) as client:
        assert client.post("/v1/models/resolve", json={"model": "openai/kept-model"}).status_code == 200
    assert first.stop() == 0
    second = make_sidecar(wildcard_gateway.url, workdir=workdir)
    with httpx.Client(base_url=second.api_url, timeout=30) as client:
        kept = client.get("/v1/models/openai/kept-model")
        assert kept.status_code == 200 and kept.json()["registered"] is True
    with second.opencode() as opencode:
        assert "openai/kept-model" in provider_models(opencode, str(second.directory))


def test_api_key_and_opencode_run_attach(
    wildcard_gateway: lp.LiteLLMProxy, make_sidecar: Callable[..., SidecarProcess]
) -> None:
    sidecar = make_sidecar(wildcard_gateway.url, api_key=API_KEY)
    directory = str(sidecar.directory)
    with httpx.Client(base_url=sidecar.api_url, timeout=30) as client:
        assert client.get("/v1/models").status_code == 401
        assert client.get("/session", params={"directory": directory}).status_code == 401
        assert client.get("/livez").status_code == 200
        assert client.get("/v1/models", headers={"x-api-key": API_KEY}).status_code == 200
        assert client.get("/session", headers={"authorization": f"Bearer {API_KEY}"}).status_code == 200
        # The opencode password is no key to the sidecar.
        basic = base64.b64encode(f"opencode:{sidecar.password}".encode()).decode()
        assert client.get("/session", headers={"authorization": f"Basic {basic}"}).status_code == 401
    # opencode's own client, pointed at the sidecar with the sidecar's key, and a foreign provider prefix.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIDECAR_", "OPENCODE_"))}
    # The key from the environment, not --password: on a command line every `ps` shows it.
    env.update({
        "HOME": str(sidecar.workdir / "client-home"),
        "OPENCODE_DISABLE_MODELS_FETCH": "1",
        "OPENCODE_SERVER_PASSWORD": API_KEY,
    })
    result = subprocess.run(
        [str(OPENCODE_BIN), "run", "--attach", sidecar.api_url,
         "--dir", directory, "--model", "anthropic/gpt-5.5", "say hi"],
        env=env, capture_output=True, text=True, timeout=120, cwd=directory, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    # `opencode run` prints no answer without a terminal (1.18.33, the same straight to opencode):
    # the session it created holds it.
    with sidecar.opencode() as opencode:
        sessions = opencode.get("/session", params={"directory": directory}).json()
        assert len(sessions) == 1
        history = opencode.get(f"/session/{sessions[0]['id']}/message", params={"directory": directory}).json()
    answer = history[-1]
    assert (answer["info"]["providerID"], answer["info"]["modelID"]) == ("litellm", "gpt-5.5")
    assert answer["info"].get("error") is None
    assert [p["text"] for p in answer["parts"] if p["type"] == "text"] == ["gpt-5.5 answer"]


def test_probe_and_busy_bound(
    wildcard_gateway: lp.LiteLLMProxy, make_sidecar: Callable[..., SidecarProcess]
) -> None:
    # SIDECAR_PROBE_MODELS, deprecated, still means SIDECAR_UNLISTED_MODELS=probe (issue 17).
    sidecar = make_sidecar(wildcard_gateway.url, probe_models="true", resolve_timeout="3")
    (deprecated,) = sidecar.events("settings.deprecated")
    assert deprecated["instead"] == "SIDECAR_UNLISTED_MODELS=probe"
    directory = str(sidecar.directory)
    with httpx.Client(base_url=sidecar.api_url, timeout=60) as client, sidecar.opencode(timeout=120) as opencode:
        rejected = client.post("/v1/models/resolve", json={"model": "no-such-model"})
        assert rejected.status_code == 400
        assert "the gateway rejected model 'no-such-model'" in rejected.json()["error"]["message"]
        assert client.get("/v1/models/no-such-model").status_code == 404
        assert sidecar.events("registry.registered") == []
        accepted = client.post("/v1/models/resolve", json={"model": "openai/probed-model"})
        assert accepted.status_code == 200 and accepted.json()["registered"] is True

        # A directory still generating after the bound: 409, and its prompt is not aborted.
        session = create_session(opencode, directory)
        result: dict[str, httpx.Response] = {}
        worker = threading.Thread(target=lambda: result.setdefault("r", prompt(opencode, session, directory, "litellm/slow")))
        worker.start()
        sidecar.wait_for(lambda: busy_sessions(opencode, directory), 30, "the slow prompt to start")
        busy = client.post("/v1/models/resolve", json={"model": "openai/while-busy", "directory": directory})
        assert busy.status_code == 409, busy.text
        assert "still generating" in busy.json()["error"]["message"]
        worker.join(120)
        assert "chunk 44" in answer_text(result["r"])
        # Registered all the same, and usable there once the prompt is done.
        sidecar.wait_for(lambda: "openai/while-busy" in provider_models(opencode, directory), 30, "reload after idle")
