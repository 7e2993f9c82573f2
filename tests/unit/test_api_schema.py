"""The API against its own OpenAPI document: schemathesis sends what the document allows, and what it
doesn't (negative mode), to the app in process, and every answer must be documented and no 5xx."""

from __future__ import annotations

import base64
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote_from_bytes

import anyio
import schemathesis
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from sidecar.catalog import Catalog, ModelInfo
from sidecar.matching import Listed, MatchIndex
from sidecar.http.routes import create_app
from sidecar.naming import ModelRef
from sidecar.resolve import Resolver
from sidecar.served import ServedCatalogs
from tests.support.api_view import view_of

KEY = "schema-test-key-0123456789abcdef0123"
AUTH = {"x-api-key": KEY}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]

CATALOG = Catalog(
    [
        ModelInfo(id="claude-sonnet-4-5", display_name="Claude Sonnet 4.5", max_input_tokens=200_000, max_tokens=64_000),
        ModelInfo(id="openai/gpt-5.5", display_name="GPT 5.5", input_modalities=("text", "image")),
        ModelInfo(id="wildcard/asked-for", display_name="asked-for", registered=True),
    ]
)


class FakeReconciler:
    """What the real Resolver and the catalog routes ask of the reconciler, over a fixed catalog."""

    catalog = CATALOG
    base_config: dict[str, Any] = {}
    owners = {model.id: "litellm" for model in CATALOG}
    names = MatchIndex(tuple(Listed(model.id, model.id, "litellm", model.display_name) for model in CATALOG))

    def ref_of(self, listed_id: str) -> ModelRef | None:
        return ModelRef("litellm", listed_id) if listed_id in CATALOG else None

    def model(self, ref: ModelRef) -> ModelInfo | None:
        return CATALOG.get(ref.model_id) if ref.provider_id == "litellm" else None

    known = model

    def note_used(self, ref: ModelRef) -> None:
        pass

    async def register(self, ref: ModelRef) -> ModelInfo:
        return ModelInfo(id=ref.model_id, display_name=ref.model_id, registered=True)

    async def unregister(self, listed_id: str) -> None:
        pass


class IdleApplier:
    default_directory = "/work/project"

    async def wait_usable(self, directory: str, ref: ModelRef, timeout: float) -> bool:
        return True


STATUS = {
    "ready": False,
    "models": 2,
    "gateways": {"litellm": {"models": 2, "catalog_age": 3.5, "stale": False, "last_poll_ok": True,
                             "last_error": None, "last_success": 1.0, "shrink_guard": None,
                             "capped": {"listed_models": 100_001, "kept_models": 5_000}}},
    "opencode": {"state": "backoff", "pid": None, "healthy": False, "uptime": None, "restarts": 2,
                 "backoff_until": 12.0},
    "reloads": {"config_version": 3, "applied_version": 2, "pending_reloads": ["/work"]},
    "traffic": {"litellm": {"gpt-4o": {"requests": 3, "errors": 1,
                                       "last_error": {"status": 429, "message": "rate limited", "at": 12.5}},
                            "unknown": {"requests": 1, "errors": 1,
                                        "last_error": {"status": None, "message": "no answer", "at": 13.0}}}},
    "failing": {"litellm": {"gpt-4o": {"kind": "not_found", "reason": "The model `gpt-4o` does not exist",
                                       "since": 12.0, "status": 404, "retries": 1, "next_retry": 72.0}}},
    "state_dir": {"path": "/state", "write_error": None},
}


def build_app() -> Any:
    reconciler = FakeReconciler()
    served = ServedCatalogs(["litellm"])
    served.update("litellm", CATALOG, ["wildcard/*"])
    # The real Resolver, so that hostile names go through the real normalisation.
    resolver = Resolver(
        SimpleNamespace(gateways=[], model_aliases={"sonnet": "claude-sonnet-4-5"}, default_provider="litellm",
                        unlisted_policy="refuse", resolve_timeout=1.0),  # type: ignore[arg-type]
        reconciler,  # type: ignore[arg-type]
        IdleApplier(),  # type: ignore[arg-type]
        {"litellm": SimpleNamespace(routes=("wildcard/*",), unkept=frozenset())},  # type: ignore[dict-item]
    )
    view = view_of(
        readiness=lambda: {"ready": False, "opencode_healthy": False, "models": len(CATALOG)},
        models=reconciler,
        resolver=resolver,
        api_key=KEY,
        status=lambda: STATUS,
        metrics=lambda: b"# TYPE opencode_sidecar_opencode_up gauge\nopencode_sidecar_opencode_up 1.0\n",
        catalogs=served,
    )
    return create_app(view)


APP = build_app()
schema = schemathesis.openapi.from_asgi("/openapi.json", APP, headers=AUTH)
schema.config.generation.update(max_examples=50, deterministic=True, with_security_parameters=False)
if not any(getattr(route, "path", None) == "/v1/status" for route in APP.routes):
    # Described already; the route itself is on its way (the supervisor's status report).
    schema = schema.exclude(path="/v1/status")


@schema.parametrize()
@settings(max_examples=50, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_answers_as_documented(case: schemathesis.Case) -> None:
    # Not ready is a documented 503 there: the one 5xx that is an answer, not a failure.
    checks = [c for c in CHECKS if c is not not_a_server_error] if case.operation.path == "/readyz" else CHECKS
    case.call_and_validate(headers=AUTH, checks=checks)


def test_deleting_a_registered_model_answers_as_documented() -> None:
    case = schema["/v1/models/{model_id}"]["DELETE"].Case(path_parameters={"model_id": "wildcard/asked-for"})
    assert case.call_and_validate(headers=AUTH, checks=CHECKS).status_code == 200


def call(path: str, headers: list[tuple[bytes, bytes]], query: bytes = b"") -> int:
    """One GET straight through ASGI, so that headers can be any bytes, not just what httpx sends."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": query, "root_path": "",
        "headers": [(b"host", b"sidecar"), *headers], "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 4097),
    }
    anyio.run(APP, scope, receive, send)
    return sent[0]["status"]


header_value = st.binary(max_size=64).filter(lambda value: b"\r" not in value and b"\n" not in value)


@settings(max_examples=200, derandomize=True, deadline=None)
@given(
    api_key=header_value,
    scheme=st.sampled_from([b"Bearer ", b"bearer ", b"Basic ", b"", b"Digest "]),
    credentials=header_value | st.builds(lambda v: base64.b64encode(b"u:" + v), header_value),
    auth_token=st.binary(max_size=64),
)
def test_any_credentials_are_a_200_or_a_401(api_key: bytes, scheme: bytes, credentials: bytes, auth_token: bytes) -> None:
    assume(KEY.encode() not in api_key + credentials + auth_token)
    headers = [(b"x-api-key", api_key), (b"authorization", scheme + credentials)]
    query = b"auth_token=" + quote_from_bytes(auth_token).encode()
    assert call("/v1/models", headers, query) == 401
    assert call("/v1/models", [(b"authorization", b"Basic " + base64.b64encode(b"u:" + KEY.encode()))], query) == 200
    assert call("/livez", headers, query) == 200
