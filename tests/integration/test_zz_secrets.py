"""Last in the run (by name): no secret a test gave a sidecar shows up in any file a sidecar or
its opencode wrote during the suite, in their logs, or on any command line seen meanwhile."""

from __future__ import annotations

import time

import pytest

from tests.support import secrets_audit
from tests.support.sidecar_process import SidecarProcess

pytestmark = pytest.mark.integration


def test_no_secret_in_any_file_log_or_command_line(
    shared_sidecar: SidecarProcess, command_line_sampler: secrets_audit.CommandLineSampler
) -> None:
    # Run alone, this module still audits one whole sidecar: its log, its state, its opencode.
    with shared_sidecar.api() as api:
        assert api.get("/v1/models").status_code == 200
    samples = command_line_sampler.samples
    while command_line_sampler.samples < samples + 2:
        time.sleep(0.1)
    assert shared_sidecar.password in secrets_audit.secrets
    assert any("sidecar" in line and " run" in line for line in secrets_audit.command_lines)
    assert secrets_audit.files_scanned() > 3
    assert secrets_audit.leaks() == []
