"""Changes that come from the operator's config, and `SIDECAR_RELOAD=restart`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import litellm_proxy as lp
from tests.support.opencode_api import answer_text, create_session, prompt, provider_models
from tests.support.sidecar_process import SidecarProcess

pytestmark = pytest.mark.integration


def team_provider(gateway: lp.LiteLLMProxy, *models: str) -> str:
    return json.dumps({
        "provider": {"team": {
            "npm": "@ai-sdk/openai-compatible",
            "options": {"baseURL": gateway.base_url, "apiKey": "{env:TEAM_KEY}"},
            "models": {m: {"name": m, "limit": {"context": 8000, "output": 1000}} for m in models},
        }},
    })


def test_base_config_change_is_applied_without_restart(
    tmp_path: Path, gateway: lp.LiteLLMProxy, make_sidecar: Callable[..., SidecarProcess]
) -> None:
    base = tmp_path / "base-config.json"  # not opencode.json: opencode would load it as a project file
    base.write_text(team_provider(gateway, "claude-haiku-4-5"))
    # The operator's own provider, not a gateway the sidecar follows: its key is theirs to hand opencode.
    sidecar = make_sidecar(gateway.url, base_config=str(base), extra_env={"TEAM_KEY": gateway.master_key})
    directory = str(sidecar.directory)
    with sidecar.opencode() as opencode:
        assert set(provider_models(opencode, directory, "team")) == {"claude-haiku-4-5"}
        assert "claude-sonnet-4-5" in provider_models(opencode, directory)
        base.write_text(team_provider(gateway, "claude-haiku-4-5", "claude-sonnet-4-5"))
        sidecar.wait_for(lambda: "claude-sonnet-4-5" in provider_models(opencode, directory, "team"), 30, "team model")
        session = create_session(opencode, directory)
        assert answer_text(prompt(opencode, session, directory, "team/claude-sonnet-4-5")) == "mock answer"
        # A broken edit keeps what was applied.
        base.write_text("{ not json")
        sidecar.wait_for(lambda: sidecar.events("base_config.invalid"), 30, "the bad edit noticed")
        assert "claude-sonnet-4-5" in provider_models(opencode, directory, "team")
    assert len(sidecar.events("child.started")) == 1


def test_restart_mode_restarts_opencode_to_apply(
    tmp_path: Path, gateway: lp.LiteLLMProxy, make_sidecar: Callable[..., SidecarProcess]
) -> None:
    base = tmp_path / "base-config.json"  # not opencode.json: opencode would load it as a project file
    base.write_text(team_provider(gateway, "claude-haiku-4-5"))
    sidecar = make_sidecar(gateway.url, base_config=str(base), reload="restart", extra_env={"TEAM_KEY": gateway.master_key})
    directory = str(sidecar.directory)
    first_pid = sidecar.opencode_pid()
    starts = len(sidecar.events("child.healthy"))
    base.write_text(team_provider(gateway, "claude-haiku-4-5", "claude-sonnet-4-5"))
    sidecar.wait_for(lambda: len(sidecar.events("child.healthy")) > starts, 60, "opencode restarted")
    sidecar.wait_ready()
    assert sidecar.opencode_pid() != first_pid
    assert sidecar.events("opencode.reloaded") == []
    with sidecar.opencode() as opencode:
        assert "claude-sonnet-4-5" in provider_models(opencode, directory, "team")
