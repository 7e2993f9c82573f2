"""A model id opencode's config cannot hold as a key never reaches it (issue 12, item 4).

One `POST /v1/models/resolve {"model": "constructor"}`, or a gateway listing `toString`, made the
real opencode answer 500 on `/config/providers` (the sidecar's `/readyz` 503, prompts hanging) at
every start until someone deleted the state by hand. First the property, against the real
`opencode serve`: every JavaScript built-in name the sidecar's check accepts is listed by opencode
with a 200, and every one it refuses breaks opencode or vanishes from its config. Then the attacks,
against the real sidecar in front of the real opencode and a real LiteLLM gateway.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sidecar.catalog import Catalog, ModelInfo, invalid_model_id_reason
from sidecar.gateway.config import PROVIDER_ID, check_provider_id
from sidecar.opencode.config import dump_config, render_config, render_model, rendered_model_ids
from sidecar.settings import Settings
from tests.support import litellm_proxy as lp
from tests.support.opencode_api import answer_text, create_session, prompt, provider_models
from tests.support.opencode_process import OpencodeProcess, start_opencode
from tests.support.sidecar_process import OPENCODE_BIN, SidecarProcess, start_sidecar

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

PROVIDER = "litellm"
SETTINGS = Settings(gateway_url="http://127.0.0.1:9", gateway_api_key="sk-unused")  # type: ignore[arg-type]
# Names a JavaScript program reaches for beyond the built-ins' own property names.
SUSPICIOUS = ["prototype", "then", "length", "name", "toJSON", "valueOf", "caller", "callee", "arguments", "__proto"]


# --- The property, against the real opencode serve ----------------------------------------------


@functools.cache
def runtime_names() -> dict[str, list[str]]:
    """The built-in names of opencode's own JavaScript runtime (the Bun inside its binary)."""
    script = """console.log(JSON.stringify({
        object: Object.getOwnPropertyNames(Object.prototype),
        function: Object.getOwnPropertyNames(Function.prototype),
        array: Object.getOwnPropertyNames(Array.prototype),
        string: Object.getOwnPropertyNames(String.prototype),
        objectConstructor: Object.getOwnPropertyNames(Object),
        globals: Object.getOwnPropertyNames(globalThis),
    }))"""
    done = subprocess.run(
        [str(OPENCODE_BIN), "-e", script], env={"BUN_BE_BUN": "1", "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60, check=True,
    )
    return json.loads(done.stdout)


def candidate_names(names: dict[str, list[str]]) -> list[str]:
    found = {name for group in names.values() for name in group} | set(SUSPICIOUS)
    # Whether the rule is exact or case-insensitive: the Object.prototype names in other cases.
    for name in names["object"]:
        found |= {name.lower(), name.upper(), name[:1].upper() + name[1:], f"{name} "}
    return sorted(found)


class Opencode:
    """One real `opencode serve`, handed one config after another."""

    def __init__(self, process: OpencodeProcess, config_path: Path) -> None:
        self.process = process
        self.config_path = config_path
        self.client = process.client()

    def read(self, config: dict[str, Any]) -> tuple[int, dict[str, set[str]]]:
        """`/config/providers` for `config`: the status, and each provider's model ids on a 200."""
        self.config_path.write_text(dump_config(config) + "\n", encoding="utf-8")
        assert self.client.post("/global/dispose").status_code == 200
        answer = self.client.get("/config/providers")
        if answer.status_code != 200:
            return answer.status_code, {}
        return 200, {provider["id"]: set(provider["models"]) for provider in answer.json()["providers"]}


@pytest.fixture(scope="module")
def opencode(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Opencode]:
    workdir = tmp_path_factory.mktemp("bare-opencode")
    config_path = workdir / "opencode.json"
    config_path.write_text("{}\n")
    process = start_opencode(workdir, config_path, "property-password", {})
    opencode = Opencode(process, config_path)
    yield opencode
    opencode.client.close()
    process.stop()


def rendered(model_ids: list[str]) -> dict[str, Any]:
    catalog = Catalog(ModelInfo(id=model_id, display_name=model_id) for model_id in model_ids)
    return render_config({PROVIDER: catalog}, SETTINGS, {})


def test_every_built_in_name_the_check_accepts_is_listed_by_the_real_opencode(opencode: Opencode) -> None:
    names = candidate_names(runtime_names())
    accepted = [name for name in names if invalid_model_id_reason(name) is None]
    assert len(names) > 300 and len(accepted) > 290  # the runtime answered: not a vacuous pass
    config = rendered(["gpt-5.5", *accepted])
    assert rendered_model_ids(config, [PROVIDER])[PROVIDER] == {"gpt-5.5", *accepted}
    status, listed = opencode.read(config)
    assert status == 200
    assert listed[PROVIDER] == {"gpt-5.5", *accepted}


def test_every_built_in_name_the_check_refuses_breaks_the_real_opencode_or_vanishes(opencode: Opencode) -> None:
    names = runtime_names()
    refused = [name for name in candidate_names(names) if invalid_model_id_reason(name) is not None]
    # The check refuses Object.prototype's own names, exactly: no other built-in, no other case.
    assert set(refused) == set(names["object"])
    outcomes = {}
    for name in refused:
        # Written as the sidecar wrote it before the check: the model beside a good one.
        config = rendered(["gpt-5.5"])
        provider = config["provider"][PROVIDER]
        provider["models"][name] = render_model(ModelInfo(id=name, display_name=name), SETTINGS)
        provider["whitelist"].append(name)
        status, listed = opencode.read(config)
        outcomes[name] = str(status) if status != 200 else "listed" if name in listed[PROVIDER] else "vanished"
    assert "listed" not in outcomes.values(), outcomes
    # As measured on opencode 1.18.33 (see catalog.OPENCODE_RESERVED_KEYS).
    assert outcomes == {name: "vanished" if name == "__proto__" else "500" for name in refused}


def test_provider_ids_the_check_accepts_work_and_the_one_it_refuses_breaks_opencode(opencode: Opencode) -> None:
    def accepted_id(name: str) -> bool:
        try:
            check_provider_id(name)
        except ValueError:
            return False
        return True

    candidates = sorted({name.lower() for name in candidate_names(runtime_names())} | {"then", "tojson"})
    shaped = [name for name in candidates if PROVIDER_ID.fullmatch(name)]
    accepted = [name for name in shaped if accepted_id(name)]
    assert sorted(set(shaped) - set(accepted)) == ["constructor"]

    def with_providers(ids: list[str]) -> dict[str, Any]:
        config = rendered(["gpt-5.5"])
        for provider_id in ids:
            config["provider"][provider_id] = config["provider"][PROVIDER]
        config["enabled_providers"] = [PROVIDER, *ids]
        return config

    status, listed = opencode.read(with_providers(accepted))
    assert status == 200
    assert {provider_id for provider_id, models in listed.items() if models == {"gpt-5.5"}} == {PROVIDER, *accepted}
    assert opencode.read(with_providers(["constructor"]))[0] == 500


# --- Against the real sidecar, the real opencode and a real LiteLLM gateway -----------------------

GATEWAY_MODELS = ["gpt-5.5", "claude-sonnet-4-5"]
HOSTILE_LISTED = ["toString", "hasOwnProperty"]


@pytest.fixture(scope="module")
def hostile_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[lp.LiteLLMProxy]:
    """A LiteLLM proxy that lists `toString` and `hasOwnProperty` beside two chat models."""
    models = [lp.mock_model(name, f"{name} answer") for name in [*GATEWAY_MODELS, *HOSTILE_LISTED]]
    proxy = lp.start_proxy(tmp_path_factory.mktemp("hostile-gateway"), models)
    yield proxy
    lp.stop_proxy(proxy)


@pytest.fixture(scope="module")
def listing_sidecar(
    tmp_path_factory: pytest.TempPathFactory, hostile_gateway: lp.LiteLLMProxy
) -> Iterator[SidecarProcess]:
    # Polls an hour apart: the start's poll is the only one.
    workdir = tmp_path_factory.mktemp("listing-sidecar")
    process = start_sidecar(workdir, hostile_gateway.url, hostile_gateway.master_key, poll_interval="3600")
    yield process
    process.stop()


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory, hostile_gateway: lp.LiteLLMProxy) -> Iterator[SidecarProcess]:
    """A sidecar whose operator excludes the gateway's hostile names: only what agents ask for is tried here."""
    workdir = tmp_path_factory.mktemp("resolving-sidecar")
    config = workdir / "sidecar.toml"
    config.write_text(
        f"[[gateways]]\nid = '{PROVIDER}'\nurl = '{hostile_gateway.url}'\napi_key_env = 'GW_KEY'\n"
        f"exclude = {json.dumps(HOSTILE_LISTED)}\n"
    )
    process = start_sidecar(
        workdir, None, None, config=str(config), poll_interval="3600", extra_env={"GW_KEY": hostile_gateway.master_key}
    )
    yield process
    process.stop()


def assert_opencode_healthy(sidecar: SidecarProcess, models: set[str]) -> None:
    """opencode itself (on its own port) lists exactly `models` with a 200; the sidecar is ready."""
    with sidecar.opencode() as client:
        answer = client.get("/config/providers", params={"directory": str(sidecar.directory)})
        assert answer.status_code == 200, answer.text[:500]
        assert set(provider_models(client, str(sidecar.directory))) == models
    assert httpx.get(f"{sidecar.api_url}/readyz", timeout=10).status_code == 200


def test_a_gateway_listing_object_prototype_names_has_them_dropped_and_the_rest_usable(
    listing_sidecar: SidecarProcess, hostile_gateway: lp.LiteLLMProxy
) -> None:
    sidecar = listing_sidecar
    listed = {entry["id"] for entry in lp.get_models(hostile_gateway)["data"]}
    assert set(HOSTILE_LISTED) <= listed  # the gateway does list them
    (dropped,) = sidecar.events("gateway.models_dropped")
    assert (dropped["level"], dropped["gateway"], dropped["models"]) == ("warning", PROVIDER, sorted(HOSTILE_LISTED))
    with sidecar.api() as api:
        assert {model["id"] for model in api.get("/v1/models").json()["data"]} == set(GATEWAY_MODELS)
    assert_opencode_healthy(sidecar, set(GATEWAY_MODELS))
    config = (sidecar.state_dir / "opencode.json").read_text()
    assert not any(f'"{name}"' in config for name in HOSTILE_LISTED)
    # The others answer through opencode.
    with sidecar.opencode(timeout=120) as client:
        session = create_session(client, str(sidecar.directory))
        assert answer_text(prompt(client, session, str(sidecar.directory), f"{PROVIDER}/gpt-5.5")) == "gpt-5.5 answer"


@pytest.mark.parametrize(
    "requested",
    ["constructor", f"{PROVIDER}/constructor", {"providerID": PROVIDER, "modelID": "valueOf"}, "__lookupGetter__"],
)
def test_resolving_an_object_prototype_name_is_a_400_and_opencode_never_sees_it(
    sidecar: SidecarProcess, requested: object
) -> None:
    name = (requested["modelID"] if isinstance(requested, dict) else requested).rpartition("/")[2]
    with sidecar.api() as api:
        answer = api.post("/v1/models/resolve", json={"model": requested, "directory": str(sidecar.directory)})
        assert answer.status_code == 400, answer.text
        body = answer.json()
        assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
        assert f"'{name}'" in body["error"]["message"] and "Object.prototype" in body["error"]["message"]
        assert name not in {model["id"] for model in api.get("/v1/models").json()["data"]}
    assert not sidecar.events("registry.registered")
    assert not re.search(rf'"{re.escape(name)}"', (sidecar.state_dir / "opencode.json").read_text())
    registry = sidecar.state_dir / "registered.json"
    assert not registry.exists() or name not in registry.read_text()
    assert_opencode_healthy(sidecar, set(GATEWAY_MODELS))


def test_a_prompt_naming_an_object_prototype_name_through_the_passthrough_is_a_400(sidecar: SidecarProcess) -> None:
    directory = str(sidecar.directory)
    with sidecar.api() as api, sidecar.opencode() as opencode:
        session = create_session(opencode, directory)
        model = {"providerID": PROVIDER, "modelID": "constructor"}
        answer = api.post(
            f"/session/{session}/message", params={"directory": directory},
            json={"parts": [{"type": "text", "text": "hi"}], "model": model},
        )
        assert answer.status_code == 400, answer.text
        # Read on opencode's own port: the prompt never reached it.
        assert opencode.get(f"/session/{session}/message", params={"directory": directory}).json() == []
    assert_opencode_healthy(sidecar, set(GATEWAY_MODELS))


def saved_models(*ids: str, registered: bool = False) -> list[dict]:
    """Records as the sidecar saves them (`Catalog.to_json`)."""
    return json.loads(Catalog(ModelInfo(id=i, display_name=i, registered=registered) for i in ids).to_json())


def test_saved_state_holding_object_prototype_names_is_cleaned_at_start(
    tmp_path: Path, hostile_gateway: lp.LiteLLMProxy
) -> None:
    # What an older version left behind: `constructor` registered on request, `valueOf` in the
    # gateway's saved list. Either made opencode answer 500 at every start.
    state = tmp_path / "seeded" / "state"
    state.mkdir(parents=True)
    (state / "registered.json").write_text(
        json.dumps({PROVIDER: saved_models("constructor", "openai/extra", registered=True)}, indent=1)
    )
    (state / f"catalog-{PROVIDER}.json").write_text(json.dumps(saved_models("gpt-5.5", "valueOf"), indent=1))
    sidecar = start_sidecar(
        tmp_path / "seeded", hostile_gateway.url, hostile_gateway.master_key, poll_interval="3600", wait=False
    )
    try:
        sidecar.wait_ready(timeout=45)
        dropped = {(event["model"], Path(event["path"]).name) for event in sidecar.events("state.model_dropped")}
        assert dropped == {("constructor", "registered.json"), ("valueOf", f"catalog-{PROVIDER}.json")}
        # The registered model that opencode can hold stays; the gateway's own list comes in.
        expected = {*GATEWAY_MODELS, "openai/extra"}
        with sidecar.opencode() as client:
            sidecar.wait_for(
                lambda: set(provider_models(client, str(sidecar.directory))) == expected, what="the first poll applied"
            )
        assert_opencode_healthy(sidecar, expected)
        for name in ("registered.json", f"catalog-{PROVIDER}.json", "opencode.json"):
            text = (state / name).read_text()
            assert "constructor" not in text and "valueOf" not in text, name
        with sidecar.opencode(timeout=120) as client:
            session = create_session(client, str(sidecar.directory))
            answer = prompt(client, session, str(sidecar.directory), f"{PROVIDER}/claude-sonnet-4-5")
            assert answer_text(answer) == "claude-sonnet-4-5 answer"
    finally:
        sidecar.stop()
