"""`models().list("opencode")` against the real sidecar, the real LiteLLM proxy and the real opencode."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import anthropic
import anthropic.types
import pytest

from sidecar import amodels, models
from tests.support import litellm_proxy as lp
from tests.support.opencode_api import provider_models
from tests.support.sidecar_process import SidecarProcess

pytestmark = pytest.mark.integration


def opencode_models(sidecar: SidecarProcess) -> dict:
    with sidecar.opencode() as opencode:
        return provider_models(opencode, str(sidecar.directory))


def test_opencode_through_the_sidecar_is_exactly_what_opencode_was_given(shared_sidecar: SidecarProcess) -> None:
    listed = models(env={}, sidecar_url=shared_sidecar.api_url).list("opencode")
    given = opencode_models(shared_sidecar)

    assert sorted(m.id for m in listed.data) == sorted(given)
    assert len(listed.data) == len(given) == 6
    assert listed.has_more is False
    by_id = {m.id: m for m in listed.data}
    sonnet = by_id["claude-sonnet-4-5"]
    assert (sonnet.max_input_tokens, sonnet.max_tokens) == (
        given["claude-sonnet-4-5"]["limit"]["context"], given["claude-sonnet-4-5"]["limit"]["output"]
    )
    assert all(by_id[model_id].display_name == model["name"] for model_id, model in given.items())


def test_opencode_from_the_gateway_directly_is_the_same_list(
    shared_sidecar: SidecarProcess, gateway: lp.LiteLLMProxy
) -> None:
    through_sidecar = models(env={}, sidecar_url=shared_sidecar.api_url).list("opencode")
    direct = models(env={}, gateway_url=gateway.url, gateway_api_key=gateway.master_key).list("opencode")

    assert [m.id for m in direct.data] == [m.id for m in through_sidecar.data]
    assert sorted(m.id for m in direct.data) == sorted(opencode_models(shared_sidecar))
    assert "text-embedding-3-small" not in [m.id for m in direct.data]


def test_limit_pages_the_real_sidecar(shared_sidecar: SidecarProcess) -> None:
    client = models(env={"SIDECAR_URL": shared_sidecar.api_url})
    everything = client.list("opencode-anthropic")
    first_two = client.list("opencode-anthropic", limit=2)
    assert [m.id for m in first_two.data] == [m.id for m in everything.data[:2]]
    assert first_two.has_more is True and first_two.last_id == everything.data[1].id


@pytest.mark.anyio
async def test_async_twin_against_the_real_sidecar(shared_sidecar: SidecarProcess) -> None:
    listed = await amodels(env={}, sidecar_url=shared_sidecar.api_url).list("opencode")
    assert sorted(m.id for m in listed.data) == sorted(opencode_models(shared_sidecar))


def test_anthropic_runtime_validates_as_the_official_sdks_model_info(shared_sidecar: SidecarProcess) -> None:
    # The sidecar speaks the Anthropic Models API, so it stands in for Anthropic here.
    listed = models(env={}, anthropic_base_url=shared_sidecar.api_url, anthropic_api_key="unused").list("anthropic")
    official = [anthropic.types.ModelInfo.model_validate(m) for m in listed.model_dump(mode="json")["data"]]
    with anthropic.Anthropic(base_url=shared_sidecar.api_url, api_key="unused") as client:
        through_sdk = [m.id for m in client.models.list(limit=2)]
    assert [m.id for m in official] == through_sdk == [m.id for m in listed.data]


def test_cli_lists_the_sidecars_models_without_gateway_settings(shared_sidecar: SidecarProcess) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIDECAR_", "ANTHROPIC_", "CURSOR_"))}
    env["SIDECAR_URL"] = shared_sidecar.api_url
    as_json = subprocess.run([sys.executable, "-m", "sidecar", "models", "--json"], env=env, capture_output=True,
                             text=True, timeout=60)
    assert as_json.returncode == 0, as_json.stderr
    assert sorted(m["id"] for m in json.loads(as_json.stdout)["data"]) == sorted(opencode_models(shared_sidecar))
    table = subprocess.run([sys.executable, "-m", "sidecar", "models"], env=env, capture_output=True, text=True,
                           timeout=60)
    assert table.returncode == 0, table.stderr
    assert any(line.split()[:1] == ["claude-sonnet-4-5"] and line.split()[-1] == "200000"
               for line in table.stdout.splitlines())
