"""Shared by the deploy checks: the checkout's paths, the linters from this venv, YAML loading."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
# The linters come with the test extra; call this venv's copies, never whatever PATH has.
BIN = Path(sys.executable).parent


def tool(name: str, *args: str | Path, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Runs one of the venv's linters; the caller asserts on the result."""
    path = BIN / name
    assert path.exists(), f"{path} is missing: scripts/setup installs the test extra"
    return subprocess.run(
        [str(path), *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def load_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def project_version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def pinned_opencode_version() -> str:
    package = json.loads((ROOT / "tools" / "opencode" / "package.json").read_text())
    return package["dependencies"]["opencode-ai"]
