"""The catalog in pages, as Anthropic's Models API serves its list, and kept encoded."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.responses import JSONResponse, Response

from sidecar.catalog import Catalog, ModelList
from sidecar.errors import HttpError

DEFAULT_LIMIT = 20
MAX_LIMIT = 1000

# An answer's body and its headers, made once and sent as they are.
Prepared = tuple[bytes, list[tuple[bytes, bytes]]]


def page_of(catalog: Catalog, *, limit: int, after_id: str | None, before_id: str | None) -> ModelList:
    """One page of the catalog, newest first, paginated by model id like Anthropic's API."""
    models = list(catalog)
    if after_id is not None:
        start = _position(catalog, after_id, "after_id") + 1
        chosen = models[start : start + limit]
        has_more = start + limit < len(models)
    elif before_id is not None:
        end = _position(catalog, before_id, "before_id")
        chosen = models[max(0, end - limit) : end]
        has_more = end - limit > 0
    else:
        chosen = models[:limit]
        has_more = limit < len(models)
    return ModelList(
        data=chosen,
        has_more=has_more,
        first_id=chosen[0].id if chosen else None,
        last_id=chosen[-1].id if chosen else None,
    )


def _position(catalog: Catalog, model_id: str, name: str) -> int:
    if model_id not in catalog:
        raise HttpError(400, f"{name} {model_id!r} is not the id of a listed model")
    return catalog.index(model_id)


def parse_limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        raise HttpError(400, f"limit must be an integer from 1 to {MAX_LIMIT}") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise HttpError(400, f"limit must be an integer from 1 to {MAX_LIMIT}")
    return limit


class AnswerCache:
    """Encoded answers of one catalog: the catalog changes once per poll at most, and it is read
    far more often than that, so each page is serialised once per catalog, not once per request,
    and its headers with it (fast_reads.py sends both as they are)."""

    MAX_ENTRIES = 512

    def __init__(self) -> None:
        self._catalog: Catalog | None = None
        self._version = 0
        self._answers: dict[tuple[object, ...], Prepared] = {}

    def prepared(
        self, catalog: Catalog, key: tuple[object, ...], build: Callable[[], Any], version: int = 0
    ) -> Prepared:
        """`version`: what else the answers show (models' failing marks); a new one starts afresh."""
        if catalog is not self._catalog or version != self._version or len(self._answers) >= self.MAX_ENTRIES:
            self._catalog, self._version, self._answers = catalog, version, {}
        answer = self._answers.get(key)
        if answer is None:
            response = Response(JSONResponse(build()).body, media_type="application/json")
            answer = self._answers[key] = (response.body, response.raw_headers)
        return answer
