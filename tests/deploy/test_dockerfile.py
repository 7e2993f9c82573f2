"""The Dockerfile and .dockerignore, checked without a Docker engine: hadolint, and what the
image promises (pins that must not drift, the user, the init, the ports, the probe)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.support import DEPLOY, ROOT, pinned_opencode_version, project_version, tool

DOCKERFILE = ROOT / "Dockerfile"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined and comment lines dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = (pending + stripped).strip()
        pending = ""
        if full:
            keyword, _, rest = full.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


STEPS = instructions(DOCKERFILE.read_text())


def final_stage() -> list[tuple[str, str]]:
    last_from = max(i for i, (keyword, _) in enumerate(STEPS) if keyword == "FROM")
    return STEPS[last_from:]


def test_hadolint_passes_at_warning_level() -> None:
    done = tool("hadolint", "--failure-threshold", "warning", DOCKERFILE)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_base_image_is_pinned_to_a_full_version_tag() -> None:
    images = [args.split()[0] for keyword, args in STEPS if keyword == "FROM"]
    assert len(images) == 3
    for image in images:
        name, _, tag = image.partition(":")
        assert re.fullmatch(r"\d+\.\d+\.\d+-\S+", tag), f"{image}: pin a full version tag"
    assert images[-1].startswith("python:3.11.")


def test_the_opencode_version_is_the_one_package_json_pins() -> None:
    args = [args for keyword, args in STEPS if keyword == "ARG" and args.startswith("OPENCODE_VERSION=")]
    assert args == [f"OPENCODE_VERSION={pinned_opencode_version()}"]
    lock = json.loads((ROOT / "tools" / "opencode" / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/opencode-ai"]["version"] == pinned_opencode_version()
    # Installed with the one install script, which also compares the ARG with the pin.
    runs = [args for keyword, args in STEPS if keyword == "RUN" and "install-opencode" in args]
    assert runs and 'OPENCODE_VERSION="${OPENCODE_VERSION}"' in runs[0]


def test_the_image_version_label_is_the_project_version() -> None:
    labels = " ".join(args for keyword, args in final_stage() if keyword == "LABEL")
    assert f'org.opencontainers.image.version="{project_version()}"' in labels
    for key in ("title", "description", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels


def test_tini_is_pid_1_and_signals_go_to_the_group() -> None:
    entrypoint = [args for keyword, args in final_stage() if keyword == "ENTRYPOINT"]
    assert [json.loads(args) for args in entrypoint] == [["tini", "-g", "--"]]
    assert [json.loads(args) for keyword, args in final_stage() if keyword == "CMD"] == [["opencode-sidecar", "run"]]
    installs = " ".join(args for keyword, args in final_stage() if keyword == "RUN")
    assert re.search(r"apt-get install [^&]*\btini\b", installs)


def test_it_runs_as_a_fixed_non_root_uid() -> None:
    users = [args for keyword, args in final_stage() if keyword == "USER"]
    assert users == ["10001:10001"]
    # What the Kubernetes manifests' runAsUser names.
    assert "--uid 10001" in " ".join(args for keyword, args in final_stage() if keyword == "RUN")


def test_environment_ports_and_health_check() -> None:
    env = " ".join(args for keyword, args in final_stage() if keyword == "ENV")
    assert "SIDECAR_LISTEN=0.0.0.0:4097" in env
    assert "SIDECAR_STATE_DIR=/var/lib/opencode-sidecar" in env
    # opencode's port is never published: it listens on loopback, behind the sidecar's key.
    assert [args.split() for keyword, args in final_stage() if keyword == "EXPOSE"] == [["4097"]]
    # No key is baked into the image: listening on 0.0.0.0, the sidecar refuses to start without one.
    assert "SIDECAR_API_KEY" not in env
    (health,) = [args for keyword, args in final_stage() if keyword == "HEALTHCHECK"]
    command = json.loads(health[health.index("CMD") + 3 :])
    assert command[:2] == ["python", "-c"] and "/livez" in command[2]


@pytest.fixture
def livez_server() -> Iterator[tuple[int, list[int]]]:
    """A loopback server whose /livez answers the status put in the list (200 to start with)."""
    status = [200]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status[0] if self.path == "/livez" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], status
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_the_health_check_follows_livez_on_the_listen_port(livez_server: tuple[int, list[int]]) -> None:
    port, status = livez_server
    (health,) = [args for keyword, args in final_stage() if keyword == "HEALTHCHECK"]
    command = json.loads(health[health.index("CMD") + 3 :])

    def check() -> int:
        # An HTTP proxy in the environment must not be used for loopback.
        env = {k: v for k, v in os.environ.items() if k.lower() not in {"no_proxy", "http_proxy"}}
        env.update(SIDECAR_LISTEN=f"0.0.0.0:{port}", http_proxy="http://127.0.0.1:9")
        return subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True, timeout=30).returncode

    assert check() == 0
    status[0] = 503
    assert check() != 0


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""

    def regex(pattern: str) -> re.Pattern[str]:
        out = re.escape(pattern.strip("/")).replace(r"\*\*", "\0").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        return re.compile(out.replace("\0", ".*") + "$")

    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        compiled = regex(pattern.lstrip("!"))
        if any(compiled.match(candidate) for candidate in candidates):
            excluded = not negated
    return excluded


def test_dockerignore_lets_in_what_the_dockerfile_copies_and_nothing_heavy() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    sources: list[str] = []
    for keyword, args in STEPS:
        if keyword == "COPY" and not args.startswith("--from"):
            sources += shlex.split(args)[:-1]
    assert sources
    for source in sources:
        path = ROOT / source
        assert path.exists(), f"COPY {source}: no such path"
        files = [p for p in path.rglob("*.py")] if path.is_dir() else [path]
        for file in files:
            if "__pycache__" not in file.parts:
                assert not dockerignore_excludes(file.relative_to(ROOT).as_posix(), patterns), file
    for heavy in (".venv/bin/python", "tools/opencode/node_modules/.bin/opencode", ".git/HEAD", ".state/x",
                  "sidecar/__pycache__/cli.cpython-311.pyc", "tests/unit/test_api.py", "build/lib/x.py"):
        assert dockerignore_excludes(heavy, patterns), heavy


def test_the_lock_pins_every_runtime_dependency_within_its_range() -> None:
    pins: dict[str, str] = {}
    for line in (DEPLOY / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version and re.fullmatch(r"[A-Za-z0-9._-]+", name), f"not name==version: {line}"
            pins[canonicalize_name(name)] = version
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for text in dependencies:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in deploy/requirements.lock: regenerate it (see its header)"
        assert requirement.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} vs {text}"


def test_setup_installs_opencode_with_the_same_script() -> None:
    setup = (ROOT / "scripts" / "setup").read_text()
    assert "scripts/install-opencode" in setup
    assert "npm install" not in setup


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_install_opencode_refuses_a_version_other_than_the_pin(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(ROOT / "scripts" / "install-opencode"), str(tmp_path / "opencode")],
        env={**os.environ, "OPENCODE_VERSION": "0.0.1"}, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 1
    assert f"pins {pinned_opencode_version()}" in done.stderr
    assert not (tmp_path / "opencode").exists()


def image_environment() -> dict[str, str]:
    """The final stage's ENV, as `docker run` would set it."""
    values: dict[str, str] = {}
    for keyword, args in final_stage():
        if keyword == "ENV":
            for pair in shlex.split(args.replace("\\\n", " ")):
                name, _, value = pair.partition("=")
                values[name] = value
    return values


def test_the_image_refuses_to_start_without_a_key(tmp_path: Path) -> None:
    # `docker run -p 4097:4097 IMAGE` without -e SIDECAR_API_KEY: the image's own settings (0.0.0.0)
    # with nothing added but a gateway and a writable state directory must not start a shell server.
    image = image_environment()
    assert image["SIDECAR_LISTEN"] == "0.0.0.0:4097"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
    env.update({name: value for name, value in image.items() if name.startswith("SIDECAR_")})
    env.update(
        SIDECAR_STATE_DIR=str(tmp_path / "state"),
        SIDECAR_OPENCODE_BIN=sys.executable,
        SIDECAR_GATEWAY_URL="http://127.0.0.1:9",
    )
    done = subprocess.run(
        [sys.executable, "-m", "sidecar", "run"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "SIDECAR_API_KEY: is required to listen on 0.0.0.0" in done.stderr
    assert "openssl rand -hex 32" in done.stderr
    assert not (tmp_path / "state").exists(), "nothing is written before the settings are checked"
