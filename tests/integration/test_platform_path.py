"""The README's agent-platform path, run as written against the real sidecar, LiteLLM and opencode:
its Python block (a resolve, a session, a prompt) and its `opencode run --attach` line, with the
test's own address, key and directory put in place of the README's."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import litellm_proxy as lp
from tests.support.sidecar_process import OPENCODE_BIN, ROOT, SidecarProcess, start_sidecar

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

KEY = "platform-path-test-key-0123456789abcdef"
ANSWER = "hello from the platform's model"
SECTION = "## From an agent platform"


def readme_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(SECTION)
    return text[start : text.index("\n## ", start + len(SECTION))]


def as_here(text: str, sidecar: SidecarProcess) -> str:
    return (
        text.replace("http://127.0.0.1:4097", sidecar.api_url)
        .replace("<SIDECAR_API_KEY>", KEY)
        .replace("/work/project", str(sidecar.directory))
    )


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SidecarProcess]:
    gateway = lp.start_proxy(tmp_path_factory.mktemp("platform-gateway"), [lp.mock_model("claude-sonnet-4-5", ANSWER)])
    try:
        process = start_sidecar(tmp_path_factory.mktemp("platform"), gateway.url, gateway.master_key, api_key=KEY)
        yield process
        process.stop()
    finally:
        lp.stop_proxy(gateway)


def test_the_readme_python_block_resolves_a_users_name_and_gets_an_answer(sidecar: SidecarProcess) -> None:
    (block,) = re.findall(r"```python\n(.*?)```", readme_section(), re.S)
    scope: dict[str, Any] = {}
    try:
        exec(compile(as_here(block, sidecar), "README.md", "exec"), scope)  # noqa: S102 (our own README)
    finally:
        if "sidecar" in scope:
            scope["sidecar"].close()
    assert scope["model"] == {"providerID": "litellm", "modelID": "claude-sonnet-4-5"}
    answer = scope["answer"]
    assert isinstance(answer, dict) and answer["info"].get("error") is None, answer
    assert ANSWER in "".join(part.get("text", "") for part in answer["parts"] if part["type"] == "text")


def test_the_readme_opencode_run_line_answers(sidecar: SidecarProcess, tmp_path: Path) -> None:
    (line,) = [line for line in readme_section().splitlines() if "opencode run --attach" in line]
    command = shlex.split(as_here(line.strip().strip("`"), sidecar))
    assignments = {}
    while "=" in command[0]:
        name, _, value = command.pop(0).partition("=")
        assignments[name] = value
    assert command[0] == "opencode"
    env = {**os.environ, **assignments, "HOME": str(tmp_path / "home"), "OPENCODE_DISABLE_MODELS_FETCH": "1"}
    run = subprocess.run(
        [str(OPENCODE_BIN), *command[1:]], env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    with sidecar.api() as api:
        sessions = api.get("/session", params={"directory": str(sidecar.directory)}, headers={"x-api-key": KEY}).json()
        texts = []
        for session in sessions:
            for message in api.get(
                f"/session/{session['id']}/message", params={"directory": str(sidecar.directory)}, headers={"x-api-key": KEY}
            ).json():
                if message["info"]["role"] == "assistant":
                    texts.append("".join(p.get("text", "") for p in message["parts"] if p["type"] == "text"))
    assert texts.count(ANSWER) >= 2, texts  # the Python block's answer, and this one's
