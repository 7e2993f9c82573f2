"""A catalog-only sidecar as a fleet's hub, in front of a real LiteLLM proxy: `/v1/catalogs` lists
LiteLLM's models with their metadata, a held `?wait` long-poll answers with the new version soon
after a model is added to LiteLLM, the current ETag gets a 304, and no opencode is ever started."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.support import litellm_proxy as lp
from tests.support.sidecar_process import SidecarProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

KEY = "hub-api-key-0123456789abcdef0123456789abcdef"
AUTH = {"x-api-key": KEY}
MODELS = [
    lp.mock_model("claude-sonnet-4-5", max_input_tokens=200000, max_output_tokens=64000),
    lp.mock_model("claude-haiku-4-5"),
    lp.model_entry("openai/*", {"model": "openai/*", "mock_response": "wildcard answer"}),
]


def start_hub(make_sidecar: Callable[..., SidecarProcess], url: str, **settings: str | None) -> SidecarProcess:
    return make_sidecar(
        url, catalog_only="true", opencode_directory=None, api_key=KEY, **settings
    )


def descendants(pid: int) -> list[str]:
    """The command names of every live process below `pid`."""
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name, _, rest = stat.partition("(")[2].rpartition(")")
        fields = rest.split()
        if fields and fields[0] != "Z":
            parents[int(entry.name)], names[int(entry.name)] = int(fields[1]), name
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        for child, its_parent in parents.items():
            if its_parent == parent:
                found.append(names[child])
                frontier.append(child)
    return found


def test_a_catalog_only_hub_serves_litellm_and_wakes_its_long_polls(
    make_gateway: Callable[..., lp.LiteLLMProxy], make_sidecar: Callable[..., SidecarProcess]
) -> None:
    gateway = make_gateway(MODELS)
    hub = start_hub(make_sidecar, gateway.url)
    with httpx.Client(base_url=hub.api_url, headers=AUTH, timeout=30) as client:
        index = client.get("/v1/catalogs").json()["data"]
        answer = client.get("/v1/catalogs/litellm")
        assert answer.status_code == 200, answer.text
        body = answer.json()
        etag = answer.headers["etag"]
        assert etag == f'"{body["version"]}"' and answer.headers["cache-control"] == "no-cache"
        # LiteLLM lists the models its wildcard route covers beside the route itself.
        assert index == [{"gateway": "litellm", "version": body["version"], "models": len(body["models"])}]
        assert body["gateway"] == "litellm" and body["listed"] == len(body["models"])
        assert body["wildcards"] == ["openai/*"]
        by_id = {model["id"]: model for model in body["models"]}
        assert {"claude-sonnet-4-5", "claude-haiku-4-5"} <= set(by_id) and "gpt-5.5" not in by_id
        assert by_id["claude-sonnet-4-5"]["max_input_tokens"] == 200000
        assert by_id["claude-sonnet-4-5"]["max_tokens"] == 64000
        assert client.get("/v1/catalogs/litellm", headers={"if-none-match": etag}).status_code == 304
        # The rest of the hub's API works without an opencode.
        assert client.get("/v1/models").json()["data"]
        resolved = client.post("/v1/models/resolve", json={"model": "litellm/claude-sonnet-4-5"})
        assert resolved.status_code == 200 and resolved.json()["id"] == "claude-sonnet-4-5", resolved.text
        status = client.get("/v1/status").json()
        assert status["ready"] is True and status["catalog_only"] is True
        assert status["opencode"]["state"] == "catalog_only"
        assert b"opencode_sidecar_" in client.get("/metrics").content
        assert client.get("/startupz").status_code == 200

        held: dict[str, object] = {}

        def long_poll() -> None:
            started = time.monotonic()
            response = client.get("/v1/catalogs/litellm", params={"wait": "240"}, headers={"if-none-match": etag},
                                  timeout=300)
            held["response"], held["at"], held["took"] = response, time.monotonic(), time.monotonic() - started

        poller = threading.Thread(target=long_poll)
        poller.start()
        hub.wait_for(lambda: "response" not in held and poller.is_alive(), 5, "the long-poll held")
        lp.restart_proxy(gateway, [*MODELS, lp.mock_model("gpt-5.5", "a new model")])
        listed_at = time.monotonic()
        poller.join(280)
        response = held["response"]
        assert isinstance(response, httpx.Response) and response.status_code == 200, response
        new = response.json()
        assert "gpt-5.5" in {model["id"] for model in new["models"]}
        assert response.headers["etag"] == f'"{new["version"]}"' != etag
        # Within a poll interval (1 s) and some slack of LiteLLM's being up again; loosely.
        assert float(held["at"]) - listed_at < 30  # type: ignore[arg-type]
        assert client.get("/v1/catalogs/litellm", headers={"if-none-match": response.headers["etag"]}).status_code == 304

    # No opencode: no process below the sidecar, none started, no opencode config written.
    assert descendants(hub.process.pid) == []
    assert hub.events("child.started") == []
    assert not (hub.state_dir / "opencode.json").exists()
    assert (hub.state_dir / "catalog-litellm.json").exists()


def test_a_catalog_only_conflict_exits_2_in_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
    env.update({"SIDECAR_STATE_DIR": str(tmp_path / "state"), "SIDECAR_GATEWAY_URL": "http://127.0.0.1:1",
                "SIDECAR_CATALOG_ONLY": "true", "SIDECAR_RELOAD": "restart"})
    result = subprocess.run([sys.executable, "-m", "sidecar", "run"], env=env, capture_output=True, text=True,
                            timeout=60, cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "SIDECAR_RELOAD" in lines[0] and "SIDECAR_CATALOG_ONLY" in lines[0] and "Traceback" not in result.stderr


def test_a_hub_without_a_good_list_is_not_ready_and_says_when_to_ask_again(
    make_sidecar: Callable[..., SidecarProcess],
) -> None:
    hub = make_sidecar("http://127.0.0.1:1", catalog_only="true", opencode_directory=None, api_key=KEY, wait=False)
    hub.wait_for(lambda: hub.events("gateway.poll_failed"), 60, "a failed poll")
    with httpx.Client(base_url=hub.api_url, headers=AUTH, timeout=10) as client:
        assert client.get("/readyz").status_code == 503
        answer = client.get("/v1/catalogs/litellm")
        assert answer.status_code == 503 and answer.headers["retry-after"]
        assert answer.json()["error"]["type"] == "overloaded_error"
        assert client.get("/v1/catalogs").json() == {"data": [{"gateway": "litellm", "version": None, "models": 0}]}
    assert descendants(hub.process.pid) == []


def test_a_hub_stopping_answers_its_held_long_polls(
    gateway: lp.LiteLLMProxy, make_sidecar: Callable[..., SidecarProcess]
) -> None:
    hub = start_hub(make_sidecar, gateway.url)
    with httpx.Client(base_url=hub.api_url, headers=AUTH, timeout=30) as client:
        etag = client.get("/v1/catalogs/litellm").headers["etag"]
        answers: list[httpx.Response | BaseException] = []

        def long_poll() -> None:
            try:
                answers.append(client.get("/v1/catalogs/litellm", params={"wait": "240"},
                                          headers={"if-none-match": etag}, timeout=60))
            except httpx.HTTPError as exc:
                answers.append(exc)

        pollers = [threading.Thread(target=long_poll) for _ in range(3)]
        for poller in pollers:
            poller.start()
        held = 'opencode_sidecar_catalog_long_polls{gateway="litellm"} 3'
        hub.wait_for(lambda: held in client.get("/metrics").text, 10, "three long-polls held")
        assert hub.stop() == 0
        for poller in pollers:
            poller.join(30)
    # Answered "not modified" as the hub stops, not cut off (a 500, or no answer at all).
    assert [getattr(answer, "status_code", answer) for answer in answers] == [304, 304, 304]
    assert "Traceback" not in hub.log_text() and "Exception in ASGI application" not in hub.log_text()
