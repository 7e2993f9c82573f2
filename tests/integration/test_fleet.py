"""Fleet mode end to end: a real hub sidecar following a real LiteLLM, and two real follower
sidecars, each with its own opencode, taking the list from the hub (`catalog_url`) while their
model traffic goes to the gateway. The followers' gateway `url` is a recording forwarder of ours in
front of LiteLLM, so the test sees every request a follower sent the gateway."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.support import litellm_proxy as lp
from tests.support.opencode_api import answer_text, create_session, prompt
from tests.support.recording_forwarder import RecordingForwarder, start_forwarder
from tests.support.sidecar_process import SidecarProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

HUB_KEY = "hub-key-for-the-fleet-test-0123456789abcdef"
# The followers' poll interval is the long-poll's wait: long, so that only the hub's answer (not a
# poll of their own) can bring them a new model within the test's waits.
FOLLOWER_INTERVAL = "60"
# What a follower must never ask the gateway: its list.
LIST_PATHS = ("/models", "/model/info", "/v1/model/info")


@pytest.fixture
def forwarder_to() -> Iterator[Callable[[str], RecordingForwarder]]:
    started: list[RecordingForwarder] = []

    def start(target: str) -> RecordingForwarder:
        started.append(start_forwarder(target))
        return started[-1]

    yield start
    for forwarder in started:
        forwarder.stop()


def models_of(sidecar: SidecarProcess) -> list[str]:
    with sidecar.api() as api:
        return [model["id"] for model in api.get("/v1/models").json()["data"]]


def ask(sidecar: SidecarProcess, model: str) -> str:
    directory = str(sidecar.directory)
    with sidecar.opencode(timeout=120) as opencode:
        return answer_text(prompt(opencode, create_session(opencode, directory), directory, model))


def status_of(sidecar: SidecarProcess) -> dict:
    with sidecar.api() as api:
        return api.get("/v1/status").json()["gateways"]["litellm"]


def test_a_hub_and_two_followers(
    make_gateway: Callable[..., lp.LiteLLMProxy],
    make_sidecar: Callable[..., SidecarProcess],
    forwarder_to: Callable[[str], RecordingForwarder],
) -> None:
    gateway = make_gateway([lp.mock_model("claude-sonnet-4-5")])
    # The hub in catalog-only mode: no opencode of its own.
    hub = make_sidecar(gateway.url, api_key=HUB_KEY, catalog_only="true", opencode_directory=None)
    forwarder = forwarder_to(gateway.url)
    followers = [
        make_sidecar(
            forwarder.url, catalog_url=hub.api_url, catalog_api_key=HUB_KEY, poll_interval=FOLLOWER_INTERVAL,
            wait=False,
        )
        for _ in range(2)
    ]
    for follower in followers:
        follower.wait_ready(90)
        assert models_of(follower) == ["claude-sonnet-4-5"]
        assert ask(follower, "litellm/claude-sonnet-4-5") == "mock answer"
        report = status_of(follower)
        assert report["catalog_from"] == hub.api_url and report["last_poll_ok"] is True

    # A model added to LiteLLM: the hub's poll sees it, its answer ends the followers' held long-polls.
    lp.restart_proxy(gateway, [lp.mock_model("claude-sonnet-4-5"), lp.mock_model("gpt-5.5", "new model")])
    for follower in followers:
        follower.wait_for(lambda f=follower: "gpt-5.5" in models_of(f), 90, "the new model from the hub")
    for follower in followers:
        assert ask(follower, "litellm/gpt-5.5") == "new model"
        # A refresh asks the hub at once, beside the long-poll it holds for a minute.
        with follower.api() as api:
            refreshed = api.post("/v1/models/refresh")
        assert refreshed.status_code == 200 and refreshed.json()["gateways"][0]["ok"] is True, refreshed.text

    # The followers sent LiteLLM their prompts' model requests, and never asked it for its list.
    paths = forwarder.paths()
    assert any(path.endswith("/chat/completions") for path in paths), paths
    assert not [path for path in paths if path.endswith(LIST_PATHS)], paths
    # The hub did poll LiteLLM for it, straight.
    assert hub.events("catalog.changed") and not hub.events("child.started")
    for follower in followers:
        assert not follower.events("gateway.format_detected")  # no list of the gateway's was ever read
        assert HUB_KEY not in follower.log_text()

    # The hub stopped: both keep their list and serve it, and say the hub is unreachable.
    hub.stop()
    for follower in followers:
        follower.wait_for(lambda f=follower: status_of(f)["last_poll_ok"] is False, 60, "the hub's failure seen")
        report = status_of(follower)
        assert report["catalog_from"] == hub.api_url and "hub" in report["last_error"], report
        assert sorted(models_of(follower)) == ["claude-sonnet-4-5", "gpt-5.5"]
        assert ask(follower, "litellm/gpt-5.5") == "new model"
        assert follower.events("gateway.poll_failed")
        assert HUB_KEY not in follower.log_text()
    with httpx.Client(base_url=followers[0].api_url, timeout=10) as api:
        assert api.get("/readyz").status_code == 200  # a hub down is not a reason to leave service
