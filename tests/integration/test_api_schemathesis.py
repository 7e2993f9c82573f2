"""The real sidecar (real LiteLLM proxy, real opencode) against the OpenAPI document it serves.

A few examples per operation: the in-process run (tests/unit/test_api_schema.py) is the thorough
one; this one proves the document and the served API agree over a real socket. POST
/v1/models/resolve is left out because every new name registers a model and reloads opencode;
tests/integration/test_resolve.py drives it for real.
"""

from __future__ import annotations

import pytest
import schemathesis
from schemathesis import GenerationMode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from sidecar.http.routes import create_app
from tests.support.api_view import view_of
from tests.support.sidecar_process import SidecarProcess

pytestmark = pytest.mark.integration

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def serves_status() -> bool:
    app = create_app(view_of())
    return any(getattr(route, "path", None) == "/v1/status" for route in app.routes)


def check_operation(operation: schemathesis.APIOperation) -> None:
    checks = [c for c in CHECKS if c is not not_a_server_error] if operation.path == "/readyz" else CHECKS
    cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE))

    @settings(max_examples=10, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(case=cases)
    def answers_as_documented(case: schemathesis.Case) -> None:
        case.call_and_validate(checks=checks)

    answers_as_documented()


def test_live_sidecar_answers_as_documented(shared_sidecar: SidecarProcess) -> None:
    # Operation by operation through hypothesis, not @schema.parametrize over a fixture:
    # schemathesis.pytest.from_fixture reads Function._nodeid, which pytest 9 no longer has.
    schema = schemathesis.openapi.from_url(f"{shared_sidecar.api_url}/openapi.json").exclude(method="POST")
    if not serves_status():
        schema = schema.exclude(path="/v1/status")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} >= {"GET /v1/models", "GET /v1/models/{model_id}", "GET /readyz"}
    for operation in operations:
        check_operation(operation)
