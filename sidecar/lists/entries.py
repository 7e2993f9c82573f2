"""What every list reader shares: the one error, the parsed list, and the walk over its entries.

An entry a reader cannot use is counted in `rejected` by reason, never by its text. Nothing here
raises anything but MalformedModelList, and its messages name the shape expected, never what was
sent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from sidecar.catalog import ModelInfo, NewestModels, invalid_model_id_reason, reserved_key_reason

# A model list is small; an answer bigger than this is not an answer to the question asked.
MAX_LIST_BYTES = 16 * 1024 * 1024


class MalformedModelList(ValueError):
    """The gateway answered, but not with a model list. The message never quotes the answer."""


@dataclass
class ParsedList:
    models: list[ModelInfo]
    skipped_non_chat: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)  # reasons, never the raw names
    # Ids opencode's config cannot hold (catalog.OPENCODE_RESERVED_KEYS), dropped: safe to name,
    # each is one of a dozen names fixed by JavaScript.
    reserved: list[str] = field(default_factory=list)
    # Read through a NewestModels: how many models its globs wanted, of which `models` holds the newest.
    listed: int | None = None
    # ... and the ids of the wanted ones it did not keep.
    trimmed: set[str] = field(default_factory=set)


def id_problem(model_id: Any) -> str | None:
    if (reason := invalid_model_id_reason(model_id)) is not None:
        return f"id {reason}"
    if "*" in model_id:
        return "id is a wildcard route, not a model"
    return None


# A reader turns one entry with a valid id into a record, or None for a model that cannot chat.
Reader = Callable[[dict[str, Any], str], ModelInfo | None]


def read_entries(
    entries: Iterable[Any], read: Reader, id_key: str = "id", keep: NewestModels | None = None
) -> ParsedList:
    """Every entry read; with `keep`, the models go there (bounded) and `models` is what it kept."""
    parsed = ParsedList(models=[])
    add = parsed.models.append if keep is None else keep.add
    for entry in entries:
        if not isinstance(entry, dict):
            parsed.rejected.append("entry is not an object")
            continue
        model_id = entry.get(id_key)
        if reserved_key_reason(model_id) is not None:
            parsed.reserved.append(model_id)
            continue
        if (reason := id_problem(model_id)) is not None:
            parsed.rejected.append(reason)
            continue
        try:
            model = read(entry, model_id)
        except ValidationError:
            # The readers hand over only clean values; this is the net under them, not a path.
            parsed.rejected.append("entry has values a catalog record cannot hold")
            continue
        if model is None:
            parsed.skipped_non_chat.append(model_id)
        else:
            add(model)
    if keep is not None:
        parsed.models, parsed.listed, parsed.trimmed = keep.candidates(), keep.listed, keep.trimmed
    return parsed


def data_list(payload: Any) -> list[Any]:
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
        raise MalformedModelList("expected a JSON object with a 'data' list")
    return payload["data"]
