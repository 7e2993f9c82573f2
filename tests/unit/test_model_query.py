"""The MCP tools' filters and pages (sidecar/model_query.py), and the `/mcp` request split."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from sidecar.catalog import Catalog, ModelCost, ModelInfo
from sidecar.http.mcp_route import is_mcp_request
from sidecar.model_query import (
    MAX_PAGE_SIZE,
    ModelQuery,
    QueryError,
    check_page_size,
    details,
    page,
    select,
    summary,
)
from sidecar.naming import ModelRef


def model(model_id: str, day: int, **fields: object) -> ModelInfo:
    created = datetime(2026, 1, day, tzinfo=timezone.utc)
    return ModelInfo(id=model_id, display_name=model_id.upper(), created_at=created, **fields)  # type: ignore[arg-type]


CATALOG = Catalog(
    [
        model("cheap-vision", 5, max_input_tokens=128_000, cost=ModelCost(input=0.5, output=1.5),
              input_modalities=("text", "image"), tool_call=True),
        model("big-thinker", 4, max_input_tokens=1_000_000, cost=ModelCost(input=15, output=75), reasoning=True,
              tool_call=True),
        model("silent", 3),  # the gateway published nothing but the name
        model("other/pdf-reader", 2, max_input_tokens=200_000, input_modalities=("text", "pdf"),
              cost=ModelCost(input=1, output=2)),
    ]
)


def ref_of(listed_id: str) -> ModelRef | None:
    if listed_id not in CATALOG:
        return None
    provider, _, model_id = listed_id.rpartition("/")
    return ModelRef(provider or "litellm", model_id)


def ids(query: ModelQuery) -> list[str]:
    return [m.id for m, _ref in select(CATALOG, ref_of, query)]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (ModelQuery(), ["cheap-vision", "big-thinker", "silent", "other/pdf-reader"]),
        (ModelQuery(gateway="other"), ["other/pdf-reader"]),
        (ModelQuery(gateway="nobody"), []),
        (ModelQuery(capabilities=("tools",)), ["cheap-vision", "big-thinker"]),
        (ModelQuery(capabilities=("vision",)), ["cheap-vision"]),
        (ModelQuery(capabilities=("reasoning", "tools")), ["big-thinker"]),
        (ModelQuery(capabilities=("pdf",)), ["other/pdf-reader"]),
        (ModelQuery(min_context=200_000), ["big-thinker", "other/pdf-reader"]),
        # Unknown prices never pass a price bound: "cheap" must be known to be cheap.
        (ModelQuery(max_input_price=1), ["cheap-vision", "other/pdf-reader"]),
        (ModelQuery(max_output_price=1.5), ["cheap-vision"]),
        (ModelQuery(text="THINK"), ["big-thinker"]),
        (ModelQuery(text="pdf-READER"), ["other/pdf-reader"]),
        (ModelQuery(capabilities=("tools",), max_input_price=1, min_context=100_000), ["cheap-vision"]),
    ],
)
def test_filters(query: ModelQuery, expected: list[str]) -> None:
    assert ids(query) == expected


def test_a_model_with_no_opencode_name_is_left_out() -> None:
    assert [m.id for m, _ in select(CATALOG, lambda i: None, ModelQuery())] == []


def test_pages_follow_the_cursor_to_the_end() -> None:
    items = select(CATALOG, ref_of, ModelQuery())
    seen, cursor, pages = [], None, 0
    while True:
        chosen, cursor = page(items, cursor=cursor, limit=3)
        seen += [m.id for m, _ in chosen]
        pages += 1
        if cursor is None:
            break
    assert seen == ["cheap-vision", "big-thinker", "silent", "other/pdf-reader"] and pages == 2
    # A page that ends exactly at the end says so: no cursor to an empty page.
    assert page(items, cursor=None, limit=4)[1] is None
    assert page(items, cursor="silent", limit=1) == (items[3:], None)


def test_a_stale_cursor_is_refused() -> None:
    with pytest.raises(QueryError, match="cursor"):
        page(select(CATALOG, ref_of, ModelQuery()), cursor="gone", limit=5)


@pytest.mark.parametrize("limit", [0, -1, MAX_PAGE_SIZE + 1])
def test_page_size_is_bounded(limit: int) -> None:
    with pytest.raises(QueryError, match="limit"):
        check_page_size(limit)
    assert check_page_size(None) == 20 and check_page_size(MAX_PAGE_SIZE) == MAX_PAGE_SIZE


def test_records_name_the_model_for_opencode() -> None:
    record = CATALOG.get("other/pdf-reader")
    assert record is not None
    ref = ModelRef("other", "pdf-reader")
    assert summary(record, ref) == {
        "id": "other/pdf-reader", "model": "other/pdf-reader", "gateway": "other", "name": "OTHER/PDF-READER",
        "context": 200_000, "max_output": None, "input_price": 1.0, "output_price": 2.0, "capabilities": ["pdf"],
    }
    full = details(record, ref)
    assert full["model"] == "other/pdf-reader" and full["status"] == "listed" and full["lifecycle"] == "active"
    assert full["cost"] == {"input": 1.0, "output": 2.0, "cache_read": None, "cache_write": None}
    assert full["input_modalities"] == ["text", "pdf"] and "release_date" in full and "created_at" in full


def scope(method: str, path: str, headers: dict[str, str]) -> dict:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return {"type": "http", "method": method, "path": path, "headers": raw}


@pytest.mark.parametrize(
    ("method", "path", "headers", "ours"),
    [
        # The transport's requests: the SDKs' POST accepts both, GET the stream, later ones name a version.
        ("POST", "/mcp", {"accept": "application/json, text/event-stream"}, True),
        ("GET", "/mcp", {"accept": "text/event-stream"}, True),
        ("DELETE", "/mcp", {"mcp-session-id": "abc"}, True),
        ("POST", "/mcp", {"mcp-protocol-version": "2025-06-18", "accept": "application/json"}, True),
        # opencode's own GET /mcp (status) and POST /mcp (add a server), as its clients ask.
        ("GET", "/mcp", {"accept": "application/json"}, False),
        ("POST", "/mcp", {"content-type": "application/json"}, False),
        ("GET", "/mcp", {}, False),
        # Not the path: opencode's /mcp/<name>/connect and the rest stay opencode's.
        ("POST", "/mcp/sidecar/connect", {"accept": "text/event-stream"}, False),
        ("POST", "/mcpx", {"accept": "text/event-stream"}, False),
    ],
)
def test_which_mcp_requests_are_ours(method: str, path: str, headers: dict[str, str], ours: bool) -> None:
    assert is_mcp_request(scope(method, path, headers)) is ours
