"""The integration tests drive the real opencode and LiteLLM; their fixtures are in tests/support/fixtures.py."""

from __future__ import annotations

import pytest

from tests.support.sidecar_process import OPENCODE_BIN


@pytest.fixture(scope="session", autouse=True)
def _opencode_installed() -> None:
    if not OPENCODE_BIN.exists():
        pytest.fail(f"opencode is not installed at {OPENCODE_BIN}; run scripts/setup first")
