"""What a newcomer sees of scripts/setup: a line before each install step and its time after, then
nothing at all on a run with everything installed. Run on a copy of the checkout's install files,
with stand-ins for python, pip and npm (the real installs are what every test run does anyway)."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.deploy.support import ROOT

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="setup reads opencode's pin with node")

FAKE_PYTHON = """#!/usr/bin/env bash
# python3 --version, the version check (-c ...), and -m venv DIR
case "$1" in
  --version) echo "Python 3.11.7" ;;
  -c) exit 0 ;;
  -m) mkdir -p "$3/bin"; printf '#!/usr/bin/env bash\\necho pip "$@" >> pip.log\\n' > "$3/bin/python"; chmod +x "$3/bin/python" ;;
esac
"""
FAKE_INSTALL_OPENCODE = """#!/usr/bin/env bash
mkdir -p "$1/node_modules/.bin"
printf '#!/bin/sh\\necho 1.18.33\\n' > "$1/node_modules/.bin/opencode"
chmod +x "$1/node_modules/.bin/opencode"
"""


def executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    root = tmp_path / "checkout"
    (root / "scripts").mkdir(parents=True)
    (root / "tools" / "opencode").mkdir(parents=True)
    shutil.copy2(ROOT / "scripts" / "setup", root / "scripts" / "setup")
    shutil.copy2(ROOT / "pyproject.toml", root)
    for name in ("package.json", "package-lock.json"):
        shutil.copy2(ROOT / "tools" / "opencode" / name, root / "tools" / "opencode" / name)
    executable(root / "scripts" / "install-opencode", FAKE_INSTALL_OPENCODE)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    executable(bin_dir / "python3", FAKE_PYTHON)
    executable(bin_dir / "npm", "#!/bin/sh\n")
    return root


def run_setup(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{root.parent / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PYTHON", None)
    return subprocess.run(
        ["bash", str(root / "scripts" / "setup")], cwd=root, env=env, capture_output=True, text=True, timeout=60
    )


def test_a_first_run_says_each_step_before_it_and_its_time_after(checkout: Path) -> None:
    pin = json.loads((ROOT / "tools" / "opencode" / "package.json").read_text())["dependencies"]["opencode-ai"]
    first = run_setup(checkout)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    steps = [
        "setup: creating .venv with Python 3.11.7",
        "setup: installing the Python packages into .venv (first run: a few minutes)",
        f"setup: installing opencode {pin} from npm into tools/opencode",
    ]
    starts = [lines.index(f"{step} ...") for step in steps]  # ValueError: a step not announced
    assert starts == sorted(starts), first.stdout
    for step, start, end in zip(steps, starts, [*starts[1:], len(lines)], strict=True):
        done = [line for line in lines[start + 1 : end] if re.fullmatch(re.escape(step) + r": done in \d+ s", line)]
        assert len(done) == 1, first.stdout
    assert "-e .[test,demo]" in (checkout / "pip.log").read_text()


def test_a_run_with_everything_installed_says_nothing(checkout: Path) -> None:
    assert run_setup(checkout).returncode == 0
    again = run_setup(checkout)
    assert again.returncode == 0 and again.stdout == "" and again.stderr == ""
