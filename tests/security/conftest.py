"""Attacks sent at the real sidecar in front of the real `opencode serve`: every test here is marked
`security` (run them alone with `-m security`)."""

from __future__ import annotations

import pytest

from tests.integration.conftest import _opencode_installed  # noqa: F401  (autouse here too)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/security/" in str(item.path):
            item.add_marker(pytest.mark.security)
