"""Hostile model names at the real sidecar in front of the real opencode (issue 17): a name that
would ride a gateway's wildcard route in as `*`, and near misses as long as a name may be (the
"did you mean" search over the list). Each is refused, reaches no opencode session, registers
nothing and leaves opencode's config as it was."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.support.sidecar_process import SidecarProcess

pytestmark = pytest.mark.timeout(240)

WILDCARDS = ["*", "openai/*", "claude-sonnet-4-5*", {"providerID": "litellm", "modelID": "openai/*"}]
NEAR_MISSES = ["claude-sonnet-4-5" + "x" * 239, "claude-sonet-4-5" * 16, "-" * 256, "a" * 256]


def test_hostile_names_are_refused_before_opencode_and_write_nothing(shared_sidecar: SidecarProcess) -> None:
    sidecar = shared_sidecar
    directory = str(sidecar.directory)
    config = sidecar.state_dir / "opencode.json"
    before = (config.stat().st_mtime_ns, config.read_text())
    registered = len(sidecar.events("registry.registered"))
    with httpx.Client(base_url=sidecar.api_url, timeout=60) as client:
        session = client.post("/session", params={"directory": directory}, json={}).json()["id"]
        for name in [*WILDCARDS, *NEAR_MISSES]:
            started = time.monotonic()
            resolved = client.post("/v1/models/resolve", json={"model": name})
            prompted = client.post(
                f"/session/{session}/message", params={"directory": directory},
                json={"parts": [{"type": "text", "text": "hi"}], "model": name},
            )
            expected = 400 if name in WILDCARDS else 404
            for answer in (resolved, prompted):
                assert answer.status_code == expected, (name, answer.text[:300])
                assert answer.json()["type"] == "error"
            if expected == 400:
                assert "wildcard route" in resolved.json()["error"]["message"]
            assert time.monotonic() - started < 10, name  # loosely: the search is bounded, not a hang
        # opencode never saw a prompt: the session holds no message.
        assert client.get(f"/session/{session}/message", params={"directory": directory}).json() == []
        listed = {m["id"] for m in client.get("/v1/models", params={"limit": 1000}).json()["data"]}
    assert not any("*" in model_id for model_id in listed)
    assert (config.stat().st_mtime_ns, config.read_text()) == before
    assert len(sidecar.events("registry.registered")) == registered
    assert "Traceback" not in sidecar.log_text()
