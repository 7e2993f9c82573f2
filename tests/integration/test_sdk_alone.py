"""The SDK stands alone: a user of `sidecar.models()` loads none of the daemon, and the daemon none
of the SDK (issue 14). Each import runs in a fresh interpreter, so nothing this test process has
already imported can hide one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

# The SDK and the layer it shares with the daemon: the model record and catalog, the list readers,
# the retry policy, the secret redactor, the server-reason scrubber and the URL rule. Each imports no server machinery.
ALLOWED = {
    "sidecar",
    "sidecar.sdk",
    "sidecar.sdk.client",
    "sidecar.sdk.config",
    "sidecar.sdk.errors",
    "sidecar.sdk.runtimes",
    "sidecar.catalog",
    "sidecar.lists",
    "sidecar.lists.anthropic",
    "sidecar.lists.entries",
    "sidecar.lists.formats",
    "sidecar.lists.values",
    "sidecar.backoff",
    "sidecar.retry",
    "sidecar.reasons",
    "sidecar.redact",
    "sidecar.urls",
}
# What only the daemon needs: its HTTP server, its file watcher, its metrics.
SERVER_PACKAGES = ("starlette", "uvicorn", "watchfiles", "prometheus_client")


def loaded_by(statement: str) -> set[str]:
    """The modules a fresh interpreter holds after `statement`, run from this checkout."""
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    return set(json.loads(done.stdout.splitlines()[-1]))


@pytest.mark.parametrize("statement", ["import sidecar.sdk", "from sidecar import amodels, models"])
def test_the_sdk_loads_nothing_of_the_daemon(statement: str) -> None:
    loaded = loaded_by(statement)
    assert "sidecar.sdk" in loaded
    assert sorted(name for name in loaded if name.startswith("sidecar") and name not in ALLOWED) == []
    servers = [name for name in loaded if name.split(".")[0] in SERVER_PACKAGES]
    assert servers == []


def test_the_daemon_loads_nothing_of_the_sdk() -> None:
    loaded = loaded_by("import sidecar.supervisor")
    assert "sidecar.supervisor" in loaded
    assert sorted(name for name in loaded if name.startswith("sidecar.sdk")) == []
