"""The README's demo command works: `scripts/demo --check` runs its steps and stops."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.sidecar_process import ROOT

pytestmark = pytest.mark.integration


@pytest.mark.timeout(300)
def test_demo_runs_its_steps(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py"), "--check", "--state", str(tmp_path / "demo")],
        capture_output=True, text=True, timeout=280,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "fails" in result.stdout
    assert "added to the gateway a moment ago" in result.stdout
    assert "Stopped." in result.stdout
