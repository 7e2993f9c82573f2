"""deploy/kubernetes: every manifest and the kustomize output of the base and the overlay against
the Kubernetes 1.29 schemas (strict: no unknown fields), then what the schemas can't see."""

from __future__ import annotations

import json
import os
import posixpath
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import json5
import pytest
import yaml

from sidecar.catalog import Catalog
from sidecar.http.guards import OPEN_PATHS
from sidecar.opencode.config import render_provider
from sidecar.settings import SettingsError, load_settings
from tests.deploy.support import DEPLOY, ROOT, load_documents, project_version, tool

KUBERNETES = DEPLOY / "kubernetes"
BASE = KUBERNETES / "base"
OVERLAY = KUBERNETES / "overlays" / "single-container"
# The catalog hub and the fleet that follows it: tests/deploy/test_kubernetes_fleet.py checks them.
HUB = KUBERNETES / "hub"
FLEET = KUBERNETES / "overlays" / "fleet"
KINDS = {
    "base": {"Deployment", "Service", "ConfigMap"},
    "single-container": {"Deployment", "Service", "ConfigMap"},
    "hub": {"Deployment", "Service", "PodDisruptionBudget"},
    "fleet": {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget"},
}
# The native sidecar (an init container's restartPolicy) needs 1.29.
KUBERNETES_VERSION = "1.29.0"
UID = 10001

Objects = dict[str, dict[str, Any]]


def kustomize(directory: Path) -> str:
    done = tool("kubectl", "kustomize", directory)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("kustomize")
    paths = {}
    for name, directory in (("base", BASE), ("single-container", OVERLAY), ("hub", HUB), ("fleet", FLEET)):
        paths[name] = out / f"{name}.yaml"
        paths[name].write_text(kustomize(directory))
    return paths


def by_kind(path: Path) -> Objects:
    return {doc["kind"]: doc for doc in load_documents(path)}


@pytest.fixture(scope="module")
def base(rendered: dict[str, Path]) -> Objects:
    return by_kind(rendered["base"])


@pytest.fixture(scope="module")
def overlay(rendered: dict[str, Path]) -> Objects:
    return by_kind(rendered["single-container"])


def pod(objects: Objects) -> dict[str, Any]:
    return objects["Deployment"]["spec"]["template"]["spec"]


def containers(objects: Objects) -> list[dict[str, Any]]:
    spec = pod(objects)
    return [*spec.get("initContainers", []), *spec["containers"]]


def container(objects: Objects, name: str) -> dict[str, Any]:
    (found,) = [c for c in containers(objects) if c["name"] == name]
    return found


def env(of: dict[str, Any]) -> dict[str, Any]:
    """Name -> value, or the valueFrom object."""
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in of.get("env", [])}


def mounts_by_path(of: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {mount["mountPath"]: mount for mount in of.get("volumeMounts", [])}


def volumes(objects: Objects) -> dict[str, dict[str, Any]]:
    return {volume["name"]: volume for volume in pod(objects)["volumes"]}


def mount_holding(of: dict[str, Any], path: str) -> dict[str, Any] | None:
    """The volume mount whose directory holds path (the longest that does), if any."""
    holding = [
        mount for mount in of.get("volumeMounts", [])
        if PurePosixPath(path) == PurePosixPath(mount["mountPath"])
        or PurePosixPath(mount["mountPath"]) in PurePosixPath(path).parents
    ]
    return max(holding, key=lambda mount: len(mount["mountPath"]), default=None)


def manifest_files() -> list[Path]:
    """Whole resources: not the kustomizations, not the overlay's patches (checked in the output)."""
    return [*sorted(BASE.glob("*.yaml")), *sorted(HUB.glob("*.yaml")), KUBERNETES / "secret.example.yaml"]


# --- schemas ------------------------------------------------------------------------------------


def test_every_manifest_validates_strictly() -> None:
    files = [path for path in manifest_files() if path.name != "kustomization.yaml"]
    assert len(files) >= 7
    done = tool("kubernetes-validate", "--strict", "-k", KUBERNETES_VERSION, "--quiet", *files)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("name", sorted(KINDS))
def test_the_kustomize_output_validates_strictly(rendered: dict[str, Path], name: str) -> None:
    done = tool("kubernetes-validate", "--strict", "-k", KUBERNETES_VERSION, "--quiet", rendered[name])
    assert done.returncode == 0, done.stdout + done.stderr
    assert {doc["kind"] for doc in load_documents(rendered[name])} == KINDS[name]


def test_kustomizations_use_labels_and_the_project_version() -> None:
    for directory in (BASE, OVERLAY, HUB, FLEET):
        kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
        assert "commonLabels" not in kustomization, directory
    for directory in (BASE, HUB):
        own = yaml.safe_load((directory / "kustomization.yaml").read_text())
        assert own["labels"]
        assert own["images"] == [{"name": "opencode-sidecar", "newTag": project_version()}]


# --- the base: native sidecar in attach mode, opencode as the main container ---------------------


def test_restart_policy_always_only_on_the_sidecar_init_container(base: Objects) -> None:
    spec = pod(base)
    assert [c["name"] for c in spec["initContainers"]] == ["sidecar"]
    assert spec["initContainers"][0]["restartPolicy"] == "Always"
    assert [c["name"] for c in spec["containers"]] == ["opencode"]
    assert all("restartPolicy" not in c for c in spec["containers"])
    assert base["Deployment"]["spec"]["replicas"] == 1


def check_sidecar_probes(sidecar: dict[str, Any]) -> None:
    assert sidecar["startupProbe"]["httpGet"]["path"] == "/startupz"
    assert sidecar["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert sidecar["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_probes_hit_routes_that_exist_and_need_no_key(base: Objects, overlay: Objects) -> None:
    check_sidecar_probes(container(base, "sidecar"))
    check_sidecar_probes(container(overlay, "sidecar"))
    for objects in (base, overlay):
        for each in containers(objects):
            ports = {port["name"]: port["containerPort"] for port in each.get("ports", [])}
            for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
                probe = each.get(kind)
                if probe is None:
                    continue
                if "exec" in probe:
                    # Only opencode's, which listens on the pod's loopback, out of the kubelet's reach.
                    assert each["name"] == "opencode", f"{each['name']}.{kind}"
                    command = probe["exec"]["command"]
                    assert command[:2] == ["python", "-c"] and "('127.0.0.1', 4096)" in command[2]
                    continue
                handler = probe.get("httpGet") or probe.get("tcpSocket")
                assert handler is not None, f"{each['name']}.{kind}"
                # A named port must be one this container declares.
                assert handler["port"] in ports or handler["port"] in ports.values(), f"{each['name']}.{kind}"
                if "httpGet" in probe:
                    # Probes can't send SIDECAR_API_KEY: only the open routes will answer them.
                    assert probe["httpGet"]["path"] in OPEN_PATHS, f"{each['name']}.{kind}"
                    assert ports[handler["port"]] == 4097


def test_restrictive_security_context_everywhere(base: Objects, overlay: Objects) -> None:
    for objects in (base, overlay):
        spec = pod(objects)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] == UID
        assert spec["securityContext"]["runAsGroup"] == UID
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        assert spec["enableServiceLinks"] is False
        for each in containers(objects):
            context = each["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, each["name"]
            assert context["readOnlyRootFilesystem"] is True, each["name"]
            assert context["capabilities"]["drop"] == ["ALL"], each["name"]
            assert "add" not in context["capabilities"]
            assert "privileged" not in context and "runAsUser" not in context
            resources = each["resources"]
            assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}, each["name"]


def test_the_uid_is_the_images() -> None:
    assert f"USER {UID}:{UID}" in (ROOT / "Dockerfile").read_text()


def test_every_writable_path_is_on_an_empty_dir(base: Objects, overlay: Objects) -> None:
    for objects in (base, overlay):
        all_volumes = volumes(objects)
        for each in containers(objects):
            values = env(each)
            writable = ["/tmp"]
            writable += [values[name] for name in ("SIDECAR_STATE_DIR", "SIDECAR_OPENCODE_CONFIG", "HOME", "TMPDIR")
                         if isinstance(values.get(name), str)]
            writable += [value for name, value in values.items() if name.startswith("XDG_")]
            if each["name"] == "opencode" or "SIDECAR_OPENCODE_URL" not in values:
                # opencode runs here (main container, or the sidecar's child): its home and project.
                writable += ["/home/opencode", each.get("workingDir", "/workspace")]
            for path in writable:
                mount = mount_holding(each, path)
                assert mount is not None, f"{each['name']}: {path} is on the read-only root filesystem"
                assert "emptyDir" in all_volumes[mount["name"]], f"{each['name']}: {path}"
                assert not mount.get("readOnly"), f"{each['name']}: {path} is mounted read-only"
            for mount in each["volumeMounts"]:
                assert mount["name"] in all_volumes


def test_the_base_config_map_is_mounted_as_a_directory(base: Objects, overlay: Objects) -> None:
    for objects in (base, overlay):
        sidecar = container(objects, "sidecar")
        path = env(sidecar)["SIDECAR_BASE_CONFIG"]
        mount = mount_holding(sidecar, path)
        assert mount is not None
        # A subPath mount never sees the ConfigMap's updates (the ..data symlink swap).
        assert "subPath" not in mount and "subPathExpr" not in mount
        assert mount["mountPath"] == posixpath.dirname(path) and mount.get("readOnly") is True
        volume = volumes(objects)[mount["name"]]
        assert "items" not in volume["configMap"]
        config_map = objects["ConfigMap"]
        assert volume["configMap"]["name"] == config_map["metadata"]["name"]
        assert posixpath.basename(path) in config_map["data"]
    for each in containers(base) + containers(overlay):
        assert all("subPath" not in mount for mount in each["volumeMounts"])


def secret_keys(of: dict[str, Any]) -> set[str]:
    return {value["secretKeyRef"]["key"] for value in env(of).values() if isinstance(value, dict) and "secretKeyRef" in value}


def test_only_the_sidecar_gets_the_gateway_key_and_both_get_the_token(base: Objects) -> None:
    sidecar, opencode = env(container(base, "sidecar")), env(container(base, "opencode"))
    assert sidecar["SIDECAR_GATEWAY_API_KEY"]["secretKeyRef"]["key"] == "gateway-api-key"
    # Key custody: opencode's shell reads its environment, so the gateway key is never in it ...
    assert secret_keys(container(base, "opencode")) == {"opencode-password", "gateway-token"}
    assert not [name for name in opencode if name.startswith("SIDECAR_")]
    # ... only the token its providers send to the sidecar, the same Secret key the sidecar checks.
    assert sidecar["SIDECAR_GATEWAY_TOKEN"] == opencode["OPENCODE_SIDECAR_TOKEN"]
    assert "secretKeyRef" in opencode["OPENCODE_SIDECAR_TOKEN"]
    assert "SIDECAR_KEY_CUSTODY" not in sidecar, "custody is the default"
    # And opencode's password: the one the sidecar attaches with is the one opencode requires.
    assert sidecar["SIDECAR_OPENCODE_PASSWORD"] == opencode["OPENCODE_SERVER_PASSWORD"]
    assert "secretKeyRef" in opencode["OPENCODE_SERVER_PASSWORD"]


def test_every_secret_key_referred_to_is_in_the_example_secret(base: Objects, overlay: Objects) -> None:
    (secret,) = load_documents(KUBERNETES / "secret.example.yaml")
    for each in containers(base) + containers(overlay):
        for value in env(each).values():
            if isinstance(value, dict) and "secretKeyRef" in value:
                ref = value["secretKeyRef"]
                assert ref["name"] == secret["metadata"]["name"]
                assert ref["key"] in secret["stringData"]
                assert ref.get("optional") is not True


def test_the_base_sidecar_settings_load_and_send_opencode_to_the_pods_loopback(
    base: Objects, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The sidecar container's environment as the kubelet gives it, a Secret's keys as placeholders:
    # attach mode with custody starts only with the token, and opencode reaches the sidecar on the
    # pod's loopback, which the two containers share.
    for name in [name for name in os.environ if name.startswith("SIDECAR_")]:
        monkeypatch.delenv(name)
    for name, value in env(container(base, "sidecar")).items():
        if isinstance(value, dict):
            value = f"placeholder-{value['secretKeyRef']['key']}-" + "x" * 32
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SIDECAR_BASE_CONFIG")  # a file of the ConfigMap's, not here
    monkeypatch.setenv("SIDECAR_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("SIDECAR_OPENCODE_CONFIG", str(tmp_path / "shared" / "opencode.json"))
    settings = load_settings()
    assert settings.attached and settings.key_custody
    assert settings.sidecar_origin == "http://127.0.0.1:4097"
    options = render_provider(settings.gateways[0], Catalog(), settings)["options"]
    assert options == {"baseURL": "http://127.0.0.1:4097/gateway/litellm/v1", "apiKey": "{env:OPENCODE_SIDECAR_TOKEN}"}
    assert "OPENCODE_SIDECAR_TOKEN" in env(container(base, "opencode"))
    monkeypatch.delenv("SIDECAR_GATEWAY_TOKEN")
    with pytest.raises(SettingsError, match="SIDECAR_GATEWAY_TOKEN: is required in attach mode"):
        load_settings()


def test_opencode_reads_the_file_the_sidecar_writes(base: Objects) -> None:
    sidecar, opencode = container(base, "sidecar"), container(base, "opencode")
    config = env(sidecar)["SIDECAR_OPENCODE_CONFIG"]
    assert env(opencode)["OPENCODE_CONFIG"] == config
    # The same volume in both; only the sidecar may write it.
    writer, reader = mount_holding(sidecar, config), mount_holding(opencode, config)
    assert writer is not None and reader is not None
    assert writer["name"] == reader["name"] and writer["mountPath"] == reader["mountPath"]
    assert not writer.get("readOnly") and reader["readOnly"] is True
    assert "emptyDir" in volumes(base)[writer["name"]]


def test_the_sidecar_attaches_to_the_opencode_container(base: Objects) -> None:
    sidecar, opencode = container(base, "sidecar"), container(base, "opencode")
    assert "command" not in opencode, "keep the image's entrypoint (tini) as PID 1"
    # opencode on the pod's loopback only: the sidecar reaches it there, nothing outside the pod does.
    assert opencode["args"] == ["opencode", "serve", "--hostname", "127.0.0.1", "--port", "4096"]
    assert env(sidecar)["SIDECAR_OPENCODE_URL"] == "http://127.0.0.1:4096"
    assert env(sidecar)["SIDECAR_LISTEN"] == "0.0.0.0:4097"
    assert "secretKeyRef" in env(sidecar)["SIDECAR_API_KEY"], "listening on 0.0.0.0 needs a key"
    assert env(opencode)["OPENCODE_DISABLE_MODELS_FETCH"] == "1"
    assert "ports" not in opencode
    assert sidecar["image"] == opencode["image"] == f"opencode-sidecar:{project_version()}"


def test_the_service_exposes_only_the_sidecar(base: Objects) -> None:
    # opencode's port would let its password bypass the sidecar's key, Host checks and redaction.
    service = base["Service"]["spec"]
    assert service["selector"].items() <= base["Deployment"]["spec"]["template"]["metadata"]["labels"].items()
    assert [(port["port"], port["targetPort"]) for port in service["ports"]] == [(4097, 4097)]


# --- the overlay: one container, supervise mode --------------------------------------------------


def test_the_overlay_runs_the_sidecar_alone_in_supervise_mode(overlay: Objects) -> None:
    spec = pod(overlay)
    assert "initContainers" not in spec
    assert [c["name"] for c in spec["containers"]] == ["sidecar"]
    sidecar = spec["containers"][0]
    assert "restartPolicy" not in sidecar and "command" not in sidecar
    assert sidecar["args"] == ["opencode-sidecar", "run"]
    values = env(sidecar)
    assert not {"SIDECAR_OPENCODE_URL", "SIDECAR_OPENCODE_CONFIG", "SIDECAR_OPENCODE_PASSWORD"} & values.keys()
    # Its own child's password and token are made up per start, in no Secret.
    assert secret_keys(sidecar) == {"gateway-api-key", "sidecar-api-key"}
    assert values["SIDECAR_OPENCODE_PORT"] == "4096"
    assert "shared" not in volumes(overlay)
    assert "/shared" not in mounts_by_path(sidecar)


def test_the_overlay_service_exposes_only_the_sidecar(overlay: Objects) -> None:
    assert [(port["port"], port["targetPort"]) for port in overlay["Service"]["spec"]["ports"]] == [(4097, 4097)]


# --- the operator's base config ------------------------------------------------------------------

OPENCODE_BIN = ROOT / "tools" / "opencode" / "node_modules" / ".bin" / "opencode"


@pytest.mark.skipif(not OPENCODE_BIN.exists(), reason=f"opencode is not installed at {OPENCODE_BIN}")
def test_the_pinned_opencode_accepts_the_config_map(tmp_path: Path) -> None:
    (config_map,) = [doc for doc in load_documents(BASE / "configmap.yaml") if doc["kind"] == "ConfigMap"]
    path = tmp_path / "base.json"
    path.write_text(config_map["data"]["opencode.json"])
    done = subprocess.run(
        [str(OPENCODE_BIN), "debug", "config", "--pure"],
        cwd=tmp_path,
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(tmp_path / "home"),
            **{f"XDG_{kind}_HOME": str(tmp_path / kind.lower()) for kind in ("CONFIG", "DATA", "CACHE", "STATE")},
            "OPENCODE_CONFIG": str(path),
            "OPENCODE_DISABLE_PROJECT_CONFIG": "1",
            "OPENCODE_DISABLE_MODELS_FETCH": "1",
        },
        capture_output=True, text=True, timeout=90, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout)
    # opencode drops keys it does not know: every key set must come back with its value.
    for key, value in json5.loads(config_map["data"]["opencode.json"]).items():
        assert seen.get(key) == value, key



def test_the_state_directory_is_a_folder_the_sidecar_creates_inside_its_volume(base: Objects, overlay: Objects) -> None:
    # An emptyDir's root belongs to root with mode 0777: the sidecar (UID 10001) could not make it
    # 0700, so its state directory is a folder inside, which it creates private.
    for objects in (base, overlay):
        sidecar = container(objects, "sidecar")
        state_dir = env(sidecar)["SIDECAR_STATE_DIR"]
        mount = mount_holding(sidecar, state_dir)
        assert mount is not None and state_dir != mount["mountPath"].rstrip("/")
