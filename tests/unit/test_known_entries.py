"""A list read again reads only the entries that changed (issue 19): the others keep the verdict
of the last read, the same record object, without a reader call."""

from __future__ import annotations

from typing import Any

from sidecar.catalog import ModelInfo, NewestModels
from sidecar.lists.entries import KnownEntries, read_entries


class CountingReader:
    """Reads an entry as the OpenAI reader would (chat unless `mode` says otherwise), counting calls."""

    def __init__(self) -> None:
        self.read: list[str] = []

    def __call__(self, entry: dict[str, Any], model_id: str) -> ModelInfo | None:
        self.read.append(model_id)
        if entry.get("mode") == "embedding":
            return None
        return ModelInfo(id=model_id, display_name=str(entry.get("name", model_id)))


ENTRIES: list[Any] = [
    {"id": "a"},
    {"id": "b", "name": "B"},
    {"id": "embed", "mode": "embedding"},
    {"id": "constructor"},
    {"id": ""},
    "not an object",
]


def test_an_entry_listed_again_as_it_was_is_not_read_again() -> None:
    reader = CountingReader()
    first = read_entries(ENTRIES, reader, known=KnownEntries())
    assert reader.read == ["a", "b", "embed"]
    second = read_entries([*ENTRIES, {"id": "c"}], reader, known=first.known)
    # Only the new entry and the one that gave no record (cheap to read again) were read.
    assert reader.read == ["a", "b", "embed", "embed", "c"]
    assert [m.id for m in second.models] == ["a", "b", "c"]
    assert second.models[0] is first.models[0]
    # Every other verdict is as the first read gave it.
    assert (second.skipped_non_chat, second.reserved, second.rejected) == (
        first.skipped_non_chat, first.reserved, first.rejected
    ) == (["embed"], ["constructor"], ["id is empty", "entry is not an object"])


def test_a_changed_entry_is_read_again_and_a_gone_one_forgotten() -> None:
    reader = CountingReader()
    first = read_entries(ENTRIES, reader, known=KnownEntries())
    second = read_entries([{"id": "a"}, {"id": "b", "name": "B2"}], reader, known=first.known)
    assert reader.read[3:] == ["b"]  # "a" remembered, "b" changed
    assert second.models[1].display_name == "B2"
    assert second.known is not None and len(second.known.records) == 2


def test_another_reader_reads_everything() -> None:
    first = read_entries(ENTRIES, CountingReader(), known=KnownEntries())
    other = CountingReader()
    read_entries(ENTRIES, other, known=first.known)
    assert other.read == ["a", "b", "embed"]


def test_without_known_nothing_is_remembered() -> None:
    parsed = read_entries(ENTRIES, CountingReader())
    assert parsed.known is None


def test_the_entries_are_remembered_by_a_short_digest() -> None:
    # Not the bytes orjson returns (each holds ~4 KiB of memory however short it is), nor the text
    # (a LiteLLM entry runs to kilobytes): 16 bytes an entry (issue 19).
    long = {"id": "long", "model_info": {"note": "x" * 4000}}
    parsed = read_entries([*ENTRIES, long], CountingReader(), known=KnownEntries())
    assert parsed.known is not None
    assert {(type(key), len(key)) for key in parsed.known.records} == {(bytes, 16)}


def test_a_list_far_over_the_bound_is_not_remembered() -> None:
    # Twice the NewestModels bound at most: beyond, every record would be held (issue 13's 100,001).
    entries = [{"id": f"m{i}"} for i in range(10)]
    parsed = read_entries(entries, CountingReader(), keep=NewestModels(4), known=KnownEntries())
    assert parsed.known is None and parsed.listed == 10
    within = read_entries(entries[:8], CountingReader(), keep=NewestModels(4), known=KnownEntries())
    assert within.known is not None and len(within.known.records) == 8
