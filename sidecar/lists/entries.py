"""What every list reader shares: the one error, the parsed list, and the walk over its entries.

An entry a reader cannot use is counted in `rejected` by reason, never by its text. Nothing here
raises anything but MalformedModelList, and its messages name the shape expected, never what was
sent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from pydantic import ValidationError

from sidecar.catalog import ModelInfo, NewestModels, invalid_model_id_reason, reserved_key_reason

# A model list is small; an answer bigger than this is not an answer to the question asked.
MAX_LIST_BYTES = 16 * 1024 * 1024


class MalformedModelList(ValueError):
    """The gateway answered, but not with a model list. The message never quotes the answer."""


# What one entry came to: a record, or the id or reason it gave none for.
Verdict = tuple[Literal["model", "skipped", "reserved", "rejected"], Any]


@dataclass
class KnownEntries:
    """The records of one reader's last read of a gateway, by a digest of each entry's JSON text: an entry
    listed again as it was is not read again (no pydantic record built for it). A list with one
    model more then costs ~2 us an entry instead of ~15 (10,000 models, measured, issue 19).
    Only records are kept (an entry that gives none is cheap to read again), and no more than
    twice the NewestModels bound: a list far over SIDECAR_MAX_MODELS is not remembered, or every
    one of its records would be held (100,001 models: the sidecar's peak over its 256 MiB limit).
    Keyed by a 16-byte blake2b digest, not the text: 49 bytes an entry however long the gateway
    writes it (LiteLLM's /model/info entries run to kilobytes), and the record itself as the
    value, not a (kind, record) tuple (10,000 models: 2.0 MiB -> 0.9; measured, issue 19)."""

    read: Reader | None = None  # None: nothing read yet
    records: dict[bytes, ModelInfo] = field(default_factory=dict)


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
    # Read with `known`: this read's records, for the next.
    known: KnownEntries | None = None


def id_problem(model_id: Any) -> str | None:
    if (reason := invalid_model_id_reason(model_id)) is not None:
        return f"id {reason}"
    if "*" in model_id:
        return "id is a wildcard route, not a model"
    return None


# A reader turns one entry with a valid id into a record, or None for a model that cannot chat.
Reader = Callable[[dict[str, Any], str], ModelInfo | None]


def read_entries(
    entries: Iterable[Any],
    read: Reader,
    id_key: str = "id",
    keep: NewestModels | None = None,
    known: KnownEntries | None = None,
) -> ParsedList:
    """Every entry read; with `keep`, the models go there (bounded) and `models` is what it kept.
    With `known` (the last read's, or an empty one), an entry read before as the same text keeps its
    verdict, and `known` of the result holds this read's."""
    parsed = ParsedList(models=[])
    add = parsed.models.append if keep is None else keep.add
    records: dict[bytes, ModelInfo] | None = None
    bound = None if keep is None else 2 * keep.limit
    if known is not None:
        parsed.known = KnownEntries(read)
        records = known.records if known.read is read else {}
    for entry in entries:
        if not isinstance(entry, dict):
            parsed.rejected.append("entry is not an object")
            continue
        if parsed.known is None:
            kind, value = _verdict(entry, read, id_key)
        else:
            # Exact for what orjson decoded; json's NaN would read as null here (GatewayClient
            # gives no `known` for a body json decoded).
            # A digest, never orjson's bytes themselves: each holds ~4 KiB of memory however short
            # it is (10,000 kept: 39 MiB of RSS; measured, issue 19).
            key = hashlib.blake2b(orjson.dumps(entry), digest_size=16).digest()
            record = records.get(key)
            kind, value = ("model", record) if record is not None else _verdict(entry, read, id_key)
            if kind == "model":
                parsed.known.records[key] = value
                if bound is not None and len(parsed.known.records) > bound:
                    parsed.known = None
        if kind == "model":
            add(value)
        elif kind == "skipped":
            parsed.skipped_non_chat.append(value)
        elif kind == "reserved":
            parsed.reserved.append(value)
        else:
            parsed.rejected.append(value)
    if keep is not None:
        parsed.models, parsed.listed, parsed.trimmed = keep.candidates(), keep.listed, keep.trimmed
    return parsed


def _verdict(entry: dict[str, Any], read: Reader, id_key: str) -> Verdict:
    model_id = entry.get(id_key)
    if reserved_key_reason(model_id) is not None:
        return "reserved", model_id
    if (reason := id_problem(model_id)) is not None:
        return "rejected", reason
    try:
        model = read(entry, model_id)
    except ValidationError:
        # The readers hand over only clean values; this is the net under them, not a path.
        return "rejected", "entry has values a catalog record cannot hold"
    return ("skipped", model_id) if model is None else ("model", model)


def data_list(payload: Any) -> list[Any]:
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
        raise MalformedModelList("expected a JSON object with a 'data' list")
    return payload["data"]
