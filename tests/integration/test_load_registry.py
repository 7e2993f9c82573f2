"""Registrations under load (issue 13, item 2), against the real sidecar, the real `opencode serve` and a
real LiteLLM proxy with a wildcard route: many new names at once share a few config writes and
reloads, and the registry is bounded by SIDECAR_MAX_REGISTERED without taking a model from a session."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from tests.support import litellm_proxy as lp
from tests.support.opencode_api import answer_text, provider_models
from tests.support.sidecar_process import SidecarProcess, start_sidecar

pytestmark = pytest.mark.integration

WILDCARD = lp.model_entry("openai/*", {"model": "openai/*", "mock_response": "wildcard answer"})
NAMES = 100
DIRECTORIES = 6  # the case: every registration reloaded all six


@pytest.fixture(scope="module")
def wildcard_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[lp.LiteLLMProxy]:
    proxy = lp.start_proxy(
        tmp_path_factory.mktemp("registry-gateway"), [lp.mock_model("gpt-5.5", "gpt-5.5 answer"), WILDCARD]
    )
    yield proxy
    lp.stop_proxy(proxy)


async def resolve_all(api_url: str, requests: list[dict[str, str]]) -> list[httpx.Response]:
    """Every request at once, each on its own connection."""
    answers: list[httpx.Response] = []
    limits = httpx.Limits(max_connections=len(requests), max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=api_url, timeout=120, limits=limits) as client:

        async def one(body: dict[str, str]) -> None:
            answers.append(await client.post("/v1/models/resolve", json=body))

        async with anyio.create_task_group() as group:
            for body in requests:
                group.start_soon(one, body)
    return answers


def settled(sidecar: SidecarProcess) -> bool:
    with sidecar.api() as api:
        reloads = api.get("/v1/status").json()["reloads"]
    return reloads["applied"] and not reloads["pending_reloads"]


@pytest.mark.timeout(600)
def test_a_hundred_new_names_at_once_share_a_few_writes_and_reloads(
    tmp_path: Path, wildcard_gateway: lp.LiteLLMProxy
) -> None:
    sidecar = start_sidecar(tmp_path / "sidecar", wildcard_gateway.url, wildcard_gateway.master_key, poll_interval="3600")
    try:
        directories = [str(sidecar.directory)]
        for i in range(DIRECTORIES - 1):
            (tmp_path / f"project-{i}").mkdir()
            directories.append(str(tmp_path / f"project-{i}"))
        with httpx.Client(base_url=sidecar.api_url, timeout=60) as client:
            for directory in directories:  # a session in each, as agents working there have
                assert client.post("/session", params={"directory": directory}, json={}).status_code == 200
        sidecar.wait_for(lambda: settled(sidecar), 60, "the directories known and current")
        writes_before = len(sidecar.events("opencode.config_written"))
        reloads_before = len(sidecar.events("opencode.reloaded"))

        requests = [{"model": f"openai/load-{i}", "directory": directories[i % DIRECTORIES]} for i in range(NAMES)]
        answers = anyio.run(resolve_all, sidecar.api_url, requests)

        assert Counter(answer.status_code for answer in answers) == {200: NAMES}, [
            answer.text for answer in answers if answer.status_code != 200
        ][:3]
        assert all(answer.json()["registered"] is True for answer in answers)
        sidecar.wait_for(lambda: settled(sidecar), 120, "every directory reloaded")
        writes = len(sidecar.events("opencode.config_written")) - writes_before
        reloaded = Counter(e["directory"] for e in sidecar.events("opencode.reloaded")[reloads_before:])
        # One write per registration (100) and a reload of every directory per write (600) before.
        assert 1 <= writes <= 10, writes
        assert set(reloaded) <= set(directories)
        assert max(reloaded.values()) <= 10, reloaded
        assert len(sidecar.events("registry.registered")) == NAMES
        with sidecar.opencode() as opencode:
            listed = set(provider_models(opencode, directories[-1]))
        assert {f"openai/load-{i}" for i in range(NAMES)} <= listed
    finally:
        sidecar.stop()


def seed_registry(state_dir: Path, names: list[str]) -> None:
    """A registry saved by an earlier run: nothing in it was asked for recently, so only sessions hold it."""
    state_dir.mkdir(mode=0o700, parents=True)
    models = [
        {"id": name, "type": "model", "display_name": name, "created_at": "1970-01-01T00:00:00Z", "registered": True}
        for name in names
    ]
    path = state_dir / "registered.json"
    path.write_text(json.dumps({"litellm": models}))
    os.chmod(path, 0o600)


@pytest.mark.timeout(300)
def test_at_the_cap_a_new_name_is_refused_while_sessions_use_every_model_then_the_oldest_unused_makes_room(
    tmp_path: Path, wildcard_gateway: lp.LiteLLMProxy
) -> None:
    names = [f"openai/cap-{i}" for i in range(1, 6)]
    seed_registry(tmp_path / "sidecar" / "state", names)
    sidecar = start_sidecar(
        tmp_path / "sidecar", wildcard_gateway.url, wildcard_gateway.master_key, poll_interval="3600", max_registered="5"
    )
    try:
        directory = str(sidecar.directory)
        with sidecar.opencode() as opencode, httpx.Client(base_url=sidecar.api_url, timeout=60) as client:
            assert set(names) <= set(provider_models(opencode, directory))
            # Sessions made on opencode's own port: the sidecar learns of them only by asking opencode.
            sessions = {}
            for name in names:
                answer = opencode.post(
                    "/session", params={"directory": directory}, json={"model": {"id": name, "providerID": "litellm"}}
                )
                assert answer.status_code == 200, answer.text
                sessions[name] = answer.json()["id"]

            refused = client.post("/v1/models/resolve", json={"model": "openai/cap-6"})
            assert refused.status_code == 409, refused.text
            error = refused.json()["error"]
            assert error["type"] == "invalid_request_error" and "SIDECAR_MAX_REGISTERED=5" in error["message"]
            assert sidecar.events("registry.evicted") == []
            # Through the pass-through too: a prompt naming a new model is refused before opencode sees it.
            through = client.post(
                f"/session/{sessions[names[0]]}/message", params={"directory": directory},
                json={"parts": [{"type": "text", "text": "hi"}], "model": "openai/cap-7"},
            )
            assert through.status_code == 409 and "SIDECAR_MAX_REGISTERED=5" in through.text

            # The sessions of cap-2 and cap-4 end: cap-2 is the least recently used of the two.
            for name in (names[1], names[3]):
                assert opencode.delete(f"/session/{sessions[name]}", params={"directory": directory}).status_code == 200

            def accepted() -> bool:
                # opencode's answer serves registrations for a second (SESSIONS_TTL): then it is asked again.
                answer = client.post("/v1/models/resolve", json={"model": "openai/cap-6"})
                assert answer.status_code in {200, 409}, answer.text
                return answer.status_code == 200

            sidecar.wait_for(accepted, 30, "cap-6 accepted")
            assert [e["model"] for e in sidecar.events("registry.evicted")] == ["openai/cap-2"]

            registered = {m["id"] for m in client.get("/v1/models", params={"limit": 1000}).json()["data"] if m["registered"]}
            assert registered == {*names[:1], *names[2:], "openai/cap-6"}
            listed = set(provider_models(opencode, directory))
            assert "openai/cap-6" in listed and "openai/cap-2" not in listed and "openai/cap-4" in listed
            # Nothing a session uses went: the session of cap-1 still answers with its model.
            answer = opencode.post(
                f"/session/{sessions[names[0]]}/message", params={"directory": directory},
                json={"parts": [{"type": "text", "text": "hi"}], "model": {"providerID": "litellm", "modelID": names[0]}},
            )
            assert answer_text(answer) == "wildcard answer"
    finally:
        sidecar.stop()
