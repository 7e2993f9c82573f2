"""deploy/compose: the compose file through docker-compose's own loader (no engine needed) and the
compose-spec schema, then what they can't see: the pins, the health gates, loopback-only ports."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from tests.deploy.support import DEPLOY, ROOT, project_version, tool

COMPOSE_DIR = DEPLOY / "compose"
COMPOSE = COMPOSE_DIR / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def clean_env(tmp_path: Path) -> dict[str, str]:
    """No COMPOSE_* or key variables from the developer's shell, and a throwaway Docker config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "DOCKER_"))}
    env.pop("LITELLM_MASTER_KEY", None)
    env.pop("SIDECAR_API_KEY", None)
    return {**env, "DOCKER_CONFIG": str(tmp_path / "docker")}


def test_docker_compose_loads_it(tmp_path: Path) -> None:
    env = {**clean_env(tmp_path), "SIDECAR_API_KEY": "k" * 64}
    done = tool("docker-compose", "-f", COMPOSE, "config", "-q", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def test_there_is_no_default_api_key(tmp_path: Path) -> None:
    # A default key in a public file is no key: compose refuses to start without one.
    done = tool("docker-compose", "-f", COMPOSE, "config", "-q", env=clean_env(tmp_path))
    assert done.returncode != 0
    assert "set SIDECAR_API_KEY to a random key of 32+ characters" in done.stderr


def test_it_matches_the_compose_spec_schema() -> None:
    done = tool("check-jsonschema", "--builtin-schema", "vendor.compose-spec", COMPOSE)
    assert done.returncode == 0, done.stdout + done.stderr


def test_litellm_is_the_official_image_pinned_to_a_release(compose: dict) -> None:
    litellm = compose["services"]["litellm"]
    assert re.fullmatch(r"ghcr\.io/berriai/litellm:v1\.\d+\.\d+", litellm["image"])
    assert "healthcheck" in litellm
    assert "ports" not in litellm  # only the sidecar is reachable from the host


def test_the_litellm_config_serves_mock_models_with_the_master_key_from_the_environment(compose: dict) -> None:
    mounts = compose["services"]["litellm"]["volumes"]
    (mount,) = [m for m in mounts if m.endswith(":ro") and "litellm-config.yaml" in m]
    source, target, _ = mount.split(":")
    config_path = (COMPOSE_DIR / source).resolve()
    config = yaml.safe_load(config_path.read_text())
    assert compose["services"]["litellm"]["command"][:2] == ["--config", target]
    assert config["general_settings"]["master_key"] == "os.environ/LITELLM_MASTER_KEY"
    assert config["model_list"]
    for model in config["model_list"]:
        assert "mock_response" in model["litellm_params"], model["model_name"]
        assert "api_key" not in model["litellm_params"]
    # The sidecar polls with the same key LiteLLM is given.
    litellm_key = compose["services"]["litellm"]["environment"]["LITELLM_MASTER_KEY"]
    assert litellm_key.startswith("${LITELLM_MASTER_KEY:-")
    assert compose["services"]["sidecar"]["environment"]["SIDECAR_GATEWAY_API_KEY"] == litellm_key


def test_the_sidecar_is_built_here_and_supervises_opencode(compose: dict) -> None:
    sidecar = compose["services"]["sidecar"]
    assert (COMPOSE_DIR / sidecar["build"]["context"] / sidecar["build"]["dockerfile"]).resolve() == ROOT / "Dockerfile"
    assert sidecar["image"] == f"opencode-sidecar:{project_version()}"
    assert sidecar["init"] is True
    environment = sidecar["environment"]
    assert environment["SIDECAR_GATEWAY_URL"] == "http://litellm:4000"
    assert "SIDECAR_OPENCODE_URL" not in environment  # supervise mode: the sidecar starts opencode
    assert sidecar["depends_on"] == {"litellm": {"condition": "service_healthy"}}
    assert "/readyz" in " ".join(sidecar["healthcheck"]["test"])


def test_ports_are_published_on_loopback_only(compose: dict) -> None:
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port}"
    assert compose["services"]["sidecar"]["ports"] == ["127.0.0.1:4097:4097"]
