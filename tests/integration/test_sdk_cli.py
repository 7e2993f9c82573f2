"""`opencode-sidecar models` as a user runs it (a real `python -m sidecar` process), against loopback
servers speaking each shape."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.support.fake_runtimes import Canned, FakeRuntime, anthropic_error, anthropic_model, running

pytestmark = pytest.mark.integration

KEY = "sk-cli-secret-42"
MODELS = [
    anthropic_model("claude-opus-4-5", "Claude Opus 4.5", "2025-11-24T00:00:00Z"),
    anthropic_model("claude-sonnet-4-5", "Claude Sonnet 4.5", "2025-09-29T00:00:00Z", max_input_tokens=None),
    anthropic_model("claude-haiku-4-5", "Claude Haiku 4.5", "2025-10-15T00:00:00Z"),
]


def sidecar_models(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    # Nothing from the caller's environment decides where the models come from.
    names = ("SIDECAR_", "ANTHROPIC_", "CURSOR_")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(names)}
    return subprocess.run(
        [sys.executable, "-m", "sidecar", "models", *args],
        env=clean | env, capture_output=True, text=True, timeout=60,
    )


@pytest.fixture
def server() -> Iterator[FakeRuntime]:
    with running(FakeRuntime("anthropic", MODELS, key=KEY, page_size=2)) as running_server:
        yield running_server


def test_table_shows_id_name_and_context(server: FakeRuntime) -> None:
    result = sidecar_models("--runtime", "anthropic", ANTHROPIC_API_KEY=KEY, ANTHROPIC_BASE_URL=server.url)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ID", "DISPLAY", "NAME", "CONTEXT"]
    assert lines[1].split() == ["claude-opus-4-5", "Claude", "Opus", "4.5", "200000"]
    assert lines[2].split() == ["claude-sonnet-4-5", "Claude", "Sonnet", "4.5", "-"]
    assert len(lines) == 4 and result.stderr == ""
    # Columns line up.
    assert lines[0].index("DISPLAY") == lines[1].index("Claude") == lines[3].index("Claude")


def test_json_with_limit_is_the_anthropic_shape(server: FakeRuntime) -> None:
    result = sidecar_models("--runtime", "opencode", "--json", "--limit", "2", SIDECAR_URL=server.url,
                            SIDECAR_API_KEY=KEY)
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert [m["id"] for m in listed["data"]] == ["claude-opus-4-5", "claude-sonnet-4-5"]
    assert (listed["has_more"], listed["first_id"], listed["last_id"]) == (True, "claude-opus-4-5",
                                                                           "claude-sonnet-4-5")
    assert listed["data"][0]["created_at"] == "2025-11-24T00:00:00Z" and listed["data"][0]["type"] == "model"


def test_limit_in_the_table_says_there_are_more(server: FakeRuntime) -> None:
    result = sidecar_models("--runtime", "anthropic", "--limit", "1", "--base-url", server.url, ANTHROPIC_API_KEY=KEY)
    assert result.returncode == 0, result.stderr
    assert "raise --limit" in result.stdout.splitlines()[-1]


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (Canned(401, anthropic_error("authentication_error", f"bad key {KEY}")), "the key was refused (HTTP 401"),
        (Canned(200, b"not json"), "the answer is not JSON"),
    ],
)
def test_errors_are_one_line_on_stderr_without_traceback_or_key(
    server: FakeRuntime, answer: Canned, expected: str
) -> None:
    server.answer_next(answer)
    result = sidecar_models("--runtime", "anthropic", ANTHROPIC_API_KEY=KEY, ANTHROPIC_BASE_URL=server.url)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("opencode-sidecar: anthropic: ") and expected in lines[0]
    assert KEY not in result.stderr and "Traceback" not in result.stderr


def test_bad_settings_and_arguments_exit_2() -> None:
    bad_url = sidecar_models("--runtime", "cursor", CURSOR_BASE_URL="cursor.example")
    assert bad_url.returncode == 2 and "CURSOR_BASE_URL" in bad_url.stderr and "Traceback" not in bad_url.stderr
    unknown = sidecar_models("--runtime", "gemini")
    assert unknown.returncode == 2 and "anthropic" in unknown.stderr and "cursor" in unknown.stderr
    zero = sidecar_models("--limit", "0")
    assert zero.returncode == 2 and "--limit" in zero.stderr
