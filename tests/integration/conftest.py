"""The integration tests drive the real opencode and LiteLLM; their fixtures are in tests/support/fixtures.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import secrets_audit
from tests.support.sidecar_process import OPENCODE_BIN


@pytest.fixture(scope="session", autouse=True)
def command_line_sampler() -> Iterator[secrets_audit.CommandLineSampler]:
    """Every command line seen while the integration tests run, for tests/integration/test_zz_secrets.py."""
    sampler = secrets_audit.CommandLineSampler()
    sampler.start()
    yield sampler
    sampler.stop()


@pytest.fixture(scope="session", autouse=True)
def _opencode_installed() -> None:
    if not OPENCODE_BIN.exists():
        pytest.fail(f"opencode is not installed at {OPENCODE_BIN}; run scripts/setup first")
