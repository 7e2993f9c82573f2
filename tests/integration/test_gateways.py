"""Several gateways at once: two real LiteLLM proxies and an OpenRouter-shaped gateway of ours,
each its own opencode provider, each polled and failing on its own."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import fake_upstream
from tests.support import litellm_proxy as lp
from tests.support.opencode_api import answer_text, create_session, prompt, provider_models
from tests.support.sidecar_process import SidecarProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

FORWARD_HEADERS = {"forward_client_headers_to_llm_api": True}
ROUTER_KEY = "sk-router-secret-5d1e"
TEAM_TAG = "team-tag-93ac"

# OpenRouter's shape: string prices per token, context length, modalities, an image-only model.
OPENROUTER_LIST = {
    "data": [
        {
            "id": "acme/coder-large",
            "name": "Acme: Coder Large",
            "created": 1758000000,
            "context_length": 262144,
            "architecture": {"input_modalities": ["text", "image"], "output_modalities": ["text"]},
            "pricing": {"prompt": "0.000003", "completion": "0.000015"},
            "top_provider": {"context_length": 262144, "max_completion_tokens": 32768},
            "supported_parameters": ["tools", "reasoning", "temperature"],
        },
        {
            "id": "acme/painter",
            "name": "Acme: Painter",
            "created": 1758000000,
            "context_length": 4096,
            "architecture": {"input_modalities": ["text"], "output_modalities": ["image"]},
            "pricing": {"prompt": "0", "completion": "0"},
        },
    ]
}


def alpha_models(relay_url: str, *extra: str) -> list[dict]:
    return [lp.mock_model("alpha-chat", "alpha answer"), lp.slow_model(relay_url, "relay"), *map(lp.mock_model, extra)]


@pytest.fixture
def upstreams() -> Iterator[tuple[fake_upstream.FakeUpstream, fake_upstream.FakeUpstream]]:
    relay = fake_upstream.start_in_thread(delay=0.0, chunks=2)
    router = fake_upstream.start_in_thread(delay=0.0, chunks=2, models=OPENROUTER_LIST)
    yield relay, router
    for server in (relay, router):
        server.shutdown()
        server.server_close()


def start_both(tmp_path: Path, relay_url: str) -> tuple[lp.LiteLLMProxy, lp.LiteLLMProxy]:
    """Two proxies, started side by side: each takes 5 to 20 s."""
    started: dict[str, lp.LiteLLMProxy] = {}
    errors: list[BaseException] = []

    def start(name: str, models: list[dict], **kwargs) -> None:
        try:
            started[name] = lp.start_proxy(tmp_path / name, models, **kwargs)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [
        threading.Thread(target=start, args=("alpha", alpha_models(relay_url)), kwargs={"general_settings": FORWARD_HEADERS}),
        threading.Thread(target=start, args=("beta", [lp.mock_model("beta-chat", "beta answer"), lp.mock_model("beta-two")])),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        for proxy in started.values():
            lp.stop_proxy(proxy)
        raise errors[0]
    return started["alpha"], started["beta"]


def ask(sidecar: SidecarProcess, model: str) -> str:
    with sidecar.opencode() as opencode:
        directory = str(sidecar.directory)
        return answer_text(prompt(opencode, create_session(opencode, directory), directory, model))


def gateway_report(sidecar: SidecarProcess, gateway_id: str) -> dict:
    with sidecar.api() as api:
        return api.get("/readyz").json()["gateways"][gateway_id]


def test_two_litellm_proxies_and_an_openrouter_gateway_are_providers_that_fail_apart(
    tmp_path: Path,
    upstreams: tuple[fake_upstream.FakeUpstream, fake_upstream.FakeUpstream],
    make_sidecar: Callable[..., SidecarProcess],
) -> None:
    relay, router = upstreams
    alpha, beta = start_both(tmp_path, relay.base_url)
    try:
        config = tmp_path / "sidecar.toml"
        config.write_text(f"""
[[gateways]]
id = "alpha"
url = "{alpha.url}"
api_key_env = "ALPHA_KEY"
headers = {{ "x-team" = "{{env:TEAM_TAG}}" }}

[[gateways]]
id = "beta"
name = "Beta gateway"
url = "{beta.url}"
api_key_env = "BETA_KEY"

[[gateways]]
id = "router"
url = "http://127.0.0.1:{router.port}/api/v1"
format = "openrouter"
api_key_env = "ROUTER_KEY"
headers = {{ "x-title" = "opencode-sidecar test" }}

# The same LiteLLM read in the Anthropic shape and spoken to in the Messages API.
[[gateways]]
id = "claude"
url = "{alpha.url}"
format = "anthropic"
npm = "@ai-sdk/anthropic"
api_key_env = "ALPHA_KEY"
include = ["relay"]
""")
        env = {"ALPHA_KEY": lp.MASTER_KEY, "BETA_KEY": lp.MASTER_KEY, "ROUTER_KEY": ROUTER_KEY, "TEAM_TAG": TEAM_TAG}
        sidecar = make_sidecar(None, None, config=str(config), extra_env=env)
        directory = str(sidecar.directory)

        # Each gateway is its own provider in opencode, with its own models.
        with sidecar.opencode() as opencode:
            assert set(provider_models(opencode, directory, "alpha")) == {"alpha-chat", "relay"}
            assert set(provider_models(opencode, directory, "beta")) == {"beta-chat", "beta-two"}
            router_models = provider_models(opencode, directory, "router")
        # OpenRouter's context length and per-token prices reach opencode, per million tokens.
        assert set(router_models) == {"acme/coder-large"}  # the image generator is left out
        coder = router_models["acme/coder-large"]
        assert coder["name"] == "Acme: Coder Large"
        assert coder["limit"]["context"] == 262144 and coder["limit"]["output"] == 32768
        assert coder["cost"]["input"] == pytest.approx(3.0) and coder["cost"]["output"] == pytest.approx(15.0)
        assert coder["capabilities"]["toolcall"] is True and coder["capabilities"]["reasoning"] is True
        assert coder["capabilities"]["input"]["image"] is True

        # One list names each model once: the first gateway's bare, the others' qualified.
        with sidecar.api() as api:
            listed = {m["id"] for m in api.get("/v1/models", params={"limit": 1000}).json()["data"]}
        assert {
            "alpha-chat", "relay", "beta/beta-chat", "beta/beta-two", "router/acme/coder-large", "claude/relay"
        } == listed

        assert ask(sidecar, "alpha/alpha-chat") == "alpha answer"
        assert ask(sidecar, "beta/beta-chat") == "beta answer"
        assert ask(sidecar, "router/acme/coder-large") == fake_upstream.answer_text(2)
        # The operator's headers: the sidecar adds them (its {env:} reference expanded) to what
        # opencode sends through it, and the gateway's upstream sees them; and to its polls.
        assert ask(sidecar, "alpha/relay") == fake_upstream.answer_text(2)
        assert any(seen.get("x-team") == TEAM_TAG for seen in relay.headers_seen)
        # opencode's Anthropic provider through LiteLLM's /v1/messages, streamed back from the relay.
        with sidecar.opencode() as opencode:
            assert set(provider_models(opencode, directory, "claude")) == {"relay"}
        assert ask(sidecar, "claude/relay") == fake_upstream.answer_text(2)
        polls = [seen for seen in router.headers_seen if "x-title" in seen and seen.get("authorization")]
        assert polls and all(seen["authorization"] == f"Bearer {ROUTER_KEY}" for seen in polls)

        # Beta goes down: its models stay in opencode, and alpha keeps working and changing.
        lp.stop_proxy(beta)
        sidecar.wait_for(lambda: gateway_report(sidecar, "beta")["last_poll_ok"] is False, 30, "a failed beta poll")
        lp.restart_proxy(alpha, alpha_models(relay.base_url, "alpha-new"), general_settings=FORWARD_HEADERS)

        def alpha_new_listed() -> bool:
            with sidecar.api() as api:
                return "alpha-new" in {m["id"] for m in api.get("/v1/models", params={"limit": 1000}).json()["data"]}

        sidecar.wait_for(alpha_new_listed, 30, "alpha-new in /v1/models")
        assert ask(sidecar, "alpha/alpha-new") == "mock answer"
        assert ask(sidecar, "alpha/alpha-chat") == "alpha answer"
        with sidecar.opencode() as opencode:
            assert set(provider_models(opencode, directory, "beta")) == {"beta-chat", "beta-two"}
        assert gateway_report(sidecar, "beta")["last_poll_ok"] is False
        assert gateway_report(sidecar, "alpha")["last_poll_ok"] is True
        # The router gateway was never touched: none of the failures were its.
        failed = {e["gateway"] for e in sidecar.events("gateway.poll_failed")}
        assert "beta" in failed and "router" not in failed

        # Keys and header values from variables: not even references on disk (key custody: opencode
        # names only the token), nothing in the log.
        written = (sidecar.state_dir / "opencode.json").read_text()
        assert "ROUTER_KEY" not in written and "TEAM_TAG" not in written
        assert written.count("{env:OPENCODE_SIDECAR_TOKEN}") == 5  # four providers and the MCP server
        for secret in (ROUTER_KEY, TEAM_TAG, lp.MASTER_KEY):
            assert secret not in written
            assert secret not in sidecar.log_text()
    finally:
        for proxy in (alpha, beta):
            lp.stop_proxy(proxy)



def test_a_gateway_named_like_a_built_in_provider_lists_only_the_gateways_models(
    tmp_path: Path, gateway: lp.LiteLLMProxy, make_sidecar: Callable[..., SidecarProcess]
) -> None:
    """opencode merges a configured provider over its built-in one of the same id (its own model
    catalogue): a gateway called `openai` must still list exactly what the gateway lists."""
    config = tmp_path / "sidecar.toml"
    config.write_text(f'[[gateways]]\nid = "openai"\nurl = "{gateway.url}"\napi_key_env = "GW_KEY"\ninclude = ["claude-*"]\n')
    sidecar = make_sidecar(None, None, config=str(config), extra_env={"GW_KEY": gateway.master_key})
    with sidecar.opencode() as opencode:
        models = provider_models(opencode, str(sidecar.directory), "openai")
    assert set(models) == {"claude-sonnet-4-5", "claude-haiku-4-5"}
    assert sidecar.events("opencode.applied") and not sidecar.events("opencode.apply_mismatch")
    assert ask(sidecar, "openai/claude-haiku-4-5") == "mock answer"
