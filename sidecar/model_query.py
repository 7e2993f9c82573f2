"""The MCP tools' questions about the catalog, answered without I/O: which listed models pass a
filter, one page of them, and each model as a small JSON record (pure)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from sidecar.catalog import ModelInfo
from sidecar.naming import ModelRef

# A page is what an agent reads in its context window: 20 summaries are about 4 KB of JSON.
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
MAX_TEXT_LENGTH = 256

Capability = Literal["tools", "vision", "reasoning", "pdf", "audio", "video"]
CAPABILITIES: tuple[str, ...] = Capability.__args__  # type: ignore[attr-defined]


class QueryError(ValueError):
    """The question can't be answered as asked; the message says why and is safe to show."""


@dataclass(frozen=True, kw_only=True)
class ModelQuery:
    gateway: str | None = None
    capabilities: tuple[Capability, ...] = ()
    min_context: int | None = None
    # US dollars per million tokens; a model whose price the gateway doesn't publish never passes.
    max_input_price: float | None = None
    max_output_price: float | None = None
    text: str | None = None


def has_capability(model: ModelInfo, capability: str) -> bool:
    """Only what the gateway said: a model it says nothing about has no capability here."""
    if capability == "tools":
        return model.tool_call is True
    if capability == "reasoning":
        return model.reasoning is True
    kind = "image" if capability == "vision" else capability
    return kind in (model.input_modalities or ())


def matches(model: ModelInfo, ref: ModelRef, query: ModelQuery) -> bool:
    if query.gateway is not None and ref.provider_id != query.gateway:
        return False
    if not all(has_capability(model, capability) for capability in query.capabilities):
        return False
    if query.min_context is not None and (model.max_input_tokens or 0) < query.min_context:
        return False
    if query.max_input_price is not None and (model.cost is None or model.cost.input > query.max_input_price):
        return False
    if query.max_output_price is not None and (model.cost is None or model.cost.output > query.max_output_price):
        return False
    if query.text:
        needle = query.text.casefold()
        if needle not in model.id.casefold() and needle not in model.display_name.casefold():
            return False
    return True


def select(
    models: Iterable[ModelInfo], ref_of: Callable[[str], ModelRef | None], query: ModelQuery
) -> list[tuple[ModelInfo, ModelRef]]:
    """The listed models that pass, in the catalog's order (newest first), with their opencode names."""
    chosen = []
    for model in models:
        ref = ref_of(model.id)
        if ref is not None and matches(model, ref, query):
            chosen.append((model, ref))
    return chosen


def check_page_size(limit: int | None) -> int:
    if limit is None:
        return DEFAULT_PAGE_SIZE
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise QueryError(f"limit must be from 1 to {MAX_PAGE_SIZE}")
    return limit


def page(items: list[tuple[ModelInfo, ModelRef]], *, cursor: str | None, limit: int) -> tuple[list[Any], str | None]:
    """Up to `limit` items after the one whose id is `cursor`, and the cursor of the next page (the
    last id given) or None when nothing follows. An id, not an offset: a poll between two pages
    shifts positions, not ids."""
    start = 0
    if cursor is not None:
        ids = [model.id for model, _ref in items]
        if cursor not in ids:
            raise QueryError("cursor names no model of this listing any more; start again without it")
        start = ids.index(cursor) + 1
    chosen = items[start : start + limit]
    more = start + limit < len(items)
    return chosen, chosen[-1][0].id if more and chosen else None


def summary(model: ModelInfo, ref: ModelRef) -> dict[str, Any]:
    """One line of `list_models`: what an agent chooses by, with None where the gateway is silent."""
    return {
        "id": model.id,
        "model": str(ref),
        "gateway": ref.provider_id,
        "name": model.display_name,
        "context": model.max_input_tokens,
        "max_output": model.max_tokens,
        "input_price": model.cost.input if model.cost else None,
        "output_price": model.cost.output if model.cost else None,
        "capabilities": [capability for capability in CAPABILITIES if has_capability(model, capability)],
    }


def details(model: ModelInfo, ref: ModelRef) -> dict[str, Any]:
    """Everything known of one model (`get_model`), with the name to give opencode."""
    record = model.model_dump(mode="json", exclude={"type"})
    return {
        **record,
        "model": str(ref),
        "gateway": ref.provider_id,
        "status": "registered" if model.registered else "listed",
        "capabilities": [capability for capability in CAPABILITIES if has_capability(model, capability)],
    }
