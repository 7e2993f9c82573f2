"""deploy/kubernetes/hub and overlays/fleet: the catalog hub (sidecars in catalog-only mode) and the
pods that follow it, beyond the schemas (test_kubernetes.py validates those): what each sidecar's
environment loads as, that the followers reach the hub by a name it accepts with the key it
checks, and that the fleet's pod is the base's but for that."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from sidecar.http.connections import open_files_needed
from sidecar.http.exposure import BrowserPolicy
from sidecar.http.guards import OPEN_PATHS
from sidecar.settings import Settings, load_settings
from tests.deploy.support import DEPLOY, load_documents, project_version
from tests.deploy.test_kubernetes import BASE, UID, env, kustomize, mount_holding

KUBERNETES = DEPLOY / "kubernetes"
HUB = KUBERNETES / "hub"
FLEET = KUBERNETES / "overlays" / "fleet"
HUB_NAME = "opencode-sidecar-hub"
# Followers the hub's connection bound must hold at the least: the fleet.
FLEET_SIZE = 1000
# The lowest hard RLIMIT_NOFILE of the common container runtimes (containerd 2's; Docker's is
# 1,048,576): the sidecar raises its soft limit to it, and its connections must fit under it.
CONTAINER_OPEN_FILES = 524_288

Objects = dict[tuple[str, str], dict[str, Any]]


def by_name(text: str, tmp_path: Path) -> Objects:
    path = tmp_path / "out.yaml"
    path.write_text(text)
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in load_documents(path)}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Objects:
    return by_name(kustomize(HUB), tmp_path_factory.mktemp("hub"))


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Objects:
    return by_name(kustomize(FLEET), tmp_path_factory.mktemp("fleet"))


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Objects:
    return by_name(kustomize(BASE), tmp_path_factory.mktemp("base"))


def pod(objects: Objects, name: str) -> dict[str, Any]:
    return objects[("Deployment", name)]["spec"]["template"]["spec"]


def hub_container(objects: Objects) -> dict[str, Any]:
    (only,) = pod(objects, HUB_NAME)["containers"]
    assert "initContainers" not in pod(objects, HUB_NAME)
    return only


def follower(objects: Objects) -> dict[str, Any]:
    return sidecar_of(objects[("Deployment", "opencode-sidecar")])


def sidecar_of(deployment: dict[str, Any]) -> dict[str, Any]:
    (sidecar,) = [c for c in deployment["spec"]["template"]["spec"]["initContainers"] if c["name"] == "sidecar"]
    return sidecar


def settings_of(container: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Settings:
    """The container's environment as the kubelet gives it, a Secret's keys as placeholders (each
    key's own, so that two variables from one key are equal), its paths moved under tmp_path."""
    for name in [name for name in os.environ if name.startswith("SIDECAR_")]:
        monkeypatch.delenv(name)
    for name, value in env(container).items():
        if isinstance(value, dict):
            value = f"placeholder-{value['secretKeyRef']['key']}-" + "x" * 32
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SIDECAR_BASE_CONFIG", raising=False)  # a file of the ConfigMap's, not here
    monkeypatch.setenv("SIDECAR_STATE_DIR", str(tmp_path / "state"))
    if "SIDECAR_OPENCODE_CONFIG" in os.environ:
        monkeypatch.setenv("SIDECAR_OPENCODE_CONFIG", str(tmp_path / "shared" / "opencode.json"))
    return load_settings()


# --- the hub ------------------------------------------------------------------------------------


def test_the_hub_is_two_catalog_only_sidecars_behind_a_service_of_their_own(hub: Objects, base: Objects) -> None:
    deployment = hub[("Deployment", HUB_NAME)]
    assert deployment["spec"]["replicas"] == 2
    hub_pods = deployment["spec"]["template"]["metadata"]["labels"]
    follower_pods = base[("Deployment", "opencode-sidecar")]["spec"]["template"]["metadata"]["labels"]
    # Each Service selects its own pods only: a follower's API is not the hub's, nor the reverse.
    hub_selector = hub[("Service", HUB_NAME)]["spec"]["selector"]
    base_selector = base[("Service", "opencode-sidecar")]["spec"]["selector"]
    assert hub_selector.items() <= hub_pods.items() and not hub_selector.items() <= follower_pods.items()
    assert not base_selector.items() <= hub_pods.items()
    assert [(p["port"], p["targetPort"]) for p in hub[("Service", HUB_NAME)]["spec"]["ports"]] == [(4097, 4097)]
    # A drain leaves one replica serving.
    budget = hub[("PodDisruptionBudget", HUB_NAME)]["spec"]
    assert budget["minAvailable"] == 1 and budget["selector"]["matchLabels"].items() <= hub_pods.items()
    container = hub_container(hub)
    assert container["args"] == ["opencode-sidecar", "run"] and "command" not in container
    assert container["image"] == f"opencode-sidecar:{project_version()}"
    values = env(container)
    assert values["SIDECAR_CATALOG_ONLY"] == "true"
    assert values["SIDECAR_LISTEN"] == "0.0.0.0:4097"
    assert not [name for name in values if name.startswith(("SIDECAR_OPENCODE", "OPENCODE_"))]


def test_the_hub_settings_load_in_catalog_only_mode(hub: Objects, base: Objects, monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    container = hub_container(hub)
    settings = settings_of(container, monkeypatch, tmp_path)
    assert settings.catalog_only is True
    assert settings.api_key is not None
    assert settings.max_connections == int(env(container)["SIDECAR_MAX_CONNECTIONS"])
    # The hub serves the gateway under the id the pods' one-gateway shorthand gives it too.
    pods = settings_of(follower(base), monkeypatch, tmp_path / "pod")
    assert [g.id for g in settings.gateways] == [g.id for g in pods.gateways]
    assert [g.api_base for g in settings.gateways] == [g.api_base for g in pods.gateways]


def test_the_hub_holds_every_follower_s_long_poll(hub: Objects) -> None:
    # A held long-poll is a connection in the bound: one replica must carry the whole fleet while
    # the other restarts, within the files a container may open.
    fields = Settings.model_fields
    value = int(env(hub_container(hub))["SIDECAR_MAX_CONNECTIONS"])
    assert value > FLEET_SIZE
    needed = open_files_needed(value, fields["max_streams"].default, fields["max_websockets"].default)
    assert needed <= CONTAINER_OPEN_FILES


def test_the_hub_accepts_the_name_followers_use_and_the_probes_send_it(hub: Objects, fleet: Objects) -> None:
    values = env(hub_container(hub))
    hosts = values["SIDECAR_ALLOWED_HOSTS"].split(",")
    policy = BrowserPolicy.for_listen("0.0.0.0", hosts)
    catalog_url = urlsplit(env(follower(fleet))["SIDECAR_CATALOG_URL"])
    assert policy.refusal([catalog_url.netloc], []) is None
    # The kubelet's probes connect to the pod's address, a Host the hub refuses: they send the name.
    assert policy.refusal(["10.1.2.3:4097"], []) is not None
    container = hub_container(hub)
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    for kind, path in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz")):
        probe = container[kind]["httpGet"]
        assert probe["path"] == path and path in OPEN_PATHS
        assert ports[probe["port"]] == 4097
        (host,) = [header["value"] for header in probe["httpHeaders"] if header["name"].lower() == "host"]
        assert policy.refusal([host], []) is None, kind


def test_the_hub_runs_locked_down_and_writes_only_to_empty_dirs(hub: Objects) -> None:
    spec = pod(hub, HUB_NAME)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == spec["securityContext"]["runAsGroup"] == UID
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False and spec["enableServiceLinks"] is False
    container = hub_container(hub)
    context = container["securityContext"]
    assert context["allowPrivilegeEscalation"] is False and context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert set(container["resources"]["requests"]) == set(container["resources"]["limits"]) == {"cpu", "memory"}
    all_volumes = {volume["name"]: volume for volume in spec["volumes"]}
    state_dir = env(container)["SIDECAR_STATE_DIR"]
    for path in ("/tmp", state_dir):
        mount = mount_holding(container, path)
        assert mount is not None and "emptyDir" in all_volumes[mount["name"]] and not mount.get("readOnly"), path
    # A folder the sidecar creates 0700 inside the volume (whose root is root's, mode 0777).
    assert state_dir != mount_holding(container, state_dir)["mountPath"]


# --- the fleet ------------------------------------------------------------------------------------


def test_the_fleet_is_the_base_and_the_hub_with_the_pods_following_it(
    fleet: Objects, base: Objects, hub: Objects
) -> None:
    assert set(fleet) == set(base) | set(hub)
    for key in hub:
        assert fleet[key] == hub[key], key
    # The pod is the base's but for the two variables that make its sidecar follow the hub.
    pod_key = ("Deployment", "opencode-sidecar")
    expected = copy.deepcopy(base[pod_key])
    got = copy.deepcopy(fleet[pod_key])
    added = [item for item in follower(fleet)["env"] if item["name"].startswith("SIDECAR_CATALOG_")]
    assert [item["name"] for item in added] == ["SIDECAR_CATALOG_URL", "SIDECAR_CATALOG_API_KEY"]
    sidecar_of(got)["env"] = [item for item in sidecar_of(got)["env"] if item not in added]
    assert got == expected


def test_the_pods_follow_the_hub_service_with_the_hub_s_key(fleet: Objects) -> None:
    values = env(follower(fleet))
    url = urlsplit(values["SIDECAR_CATALOG_URL"])
    service = fleet[("Service", HUB_NAME)]
    assert url.scheme == "http" and url.hostname == service["metadata"]["name"]
    assert url.port in [port["port"] for port in service["spec"]["ports"]]
    assert (url.path, url.query, url.username) == ("", "", None)
    # The key the hub checks, from the Secret, never a literal.
    assert values["SIDECAR_CATALOG_API_KEY"] == env(hub_container(fleet))["SIDECAR_API_KEY"]
    assert "secretKeyRef" in values["SIDECAR_CATALOG_API_KEY"]
    # A key of the hub's own: the followers' key opens their opencode, the hub's only catalogs.
    assert values["SIDECAR_CATALOG_API_KEY"] != values["SIDECAR_API_KEY"]
    # opencode's container (its shell) gets neither the hub's URL nor its key.
    (opencode,) = pod(fleet, "opencode-sidecar")["containers"]
    refs = [v["secretKeyRef"]["key"] for v in env(opencode).values() if isinstance(v, dict)]
    assert "hub-api-key" not in refs and not [n for n in env(opencode) if n.startswith("SIDECAR_")]
    # Model traffic still goes to the gateway itself, the one the hub polls.
    assert values["SIDECAR_GATEWAY_URL"] == env(hub_container(fleet))["SIDECAR_GATEWAY_URL"]


def test_the_follower_settings_load_with_the_hub_as_the_catalog(
    fleet: Objects, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = settings_of(follower(fleet), monkeypatch, tmp_path)
    (gateway,) = settings.gateways
    assert str(gateway.catalog_url).rstrip("/") == env(follower(fleet))["SIDECAR_CATALOG_URL"]
    assert settings.attached and settings.key_custody and not settings.catalog_only


# --- every sidecar of every kustomization -------------------------------------------------------


def test_every_sidecar_variable_is_a_setting_and_every_secret_a_secret_key_ref(
    base: Objects, hub: Objects, fleet: Objects, tmp_path_factory: pytest.TempPathFactory
) -> None:
    single = by_name(kustomize(KUBERNETES / "overlays" / "single-container"), tmp_path_factory.mktemp("single"))
    (secret,) = load_documents(KUBERNETES / "secret.example.yaml")
    checked = 0
    for objects in (base, single, hub, fleet):
        for (kind, _), obj in objects.items():
            if kind != "Deployment":
                continue
            spec = obj["spec"]["template"]["spec"]
            for container in [*spec.get("initContainers", []), *spec["containers"]]:
                for name, value in env(container).items():
                    if name.startswith("SIDECAR_"):
                        # A misspelt variable is ignored by the sidecar, silently: it must name a field.
                        assert name.removeprefix("SIDECAR_").lower() in Settings.model_fields, name
                        checked += 1
                    if any(word in name for word in ("KEY", "TOKEN", "PASSWORD")):
                        assert isinstance(value, dict) and set(value) == {"secretKeyRef"}, name
                        ref = value["secretKeyRef"]
                        assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"], name
    assert checked > 30
