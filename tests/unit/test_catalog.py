"""The one check of a model id: what opencode's config can hold as a key, measured in catalog.py."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from sidecar.catalog import (
    OPENCODE_RESERVED_KEYS,
    Catalog,
    ModelCost,
    ModelInfo,
    invalid_model_id_reason,
    reserved_key_reason,
)

# What Bun 1.3.14 (the runtime inside opencode 1.18.33) lists, in its order.
OBJECT_PROTOTYPE = [
    "toString", "toLocaleString", "valueOf", "hasOwnProperty", "propertyIsEnumerable", "isPrototypeOf",
    "__defineGetter__", "__defineSetter__", "__lookupGetter__", "__lookupSetter__", "__proto__", "constructor",
]


def test_the_reserved_keys_are_exactly_object_prototypes_own_names() -> None:
    assert OPENCODE_RESERVED_KEYS == set(OBJECT_PROTOTYPE)


@pytest.mark.parametrize("name", OBJECT_PROTOTYPE)
def test_each_reserved_key_is_refused_with_its_name_and_why(name: str) -> None:
    reason = invalid_model_id_reason(name)
    assert reason == reserved_key_reason(name)
    assert reason is not None and repr(name) in reason and "Object.prototype" in reason


@pytest.mark.parametrize(
    "name",
    [
        # Case-sensitive, exact: opencode listed all of these (and every other built-in name).
        "Constructor", "CONSTRUCTOR", "tostring", "__PROTO__", "__proto", "constructor ", " toString",
        "constructor/x", "x/constructor", "prototype", "then", "length", "name", "toJSON", "apply",
        "call", "bind", "caller", "arguments", "Object", "Array", "globalThis", "eval", "undefined",
    ],
)
def test_names_opencode_holds_are_accepted(name: str) -> None:
    assert invalid_model_id_reason(name) is None
    assert reserved_key_reason(name) is None


def test_non_strings_are_never_reserved() -> None:
    assert reserved_key_reason(None) is None
    assert reserved_key_reason(["constructor"]) is None


def test_the_saved_text_is_made_once_and_reads_back_as_the_same_models() -> None:
    # Catalogs never change, so StateFiles' every publish reuses the text (issue 19).
    catalog = Catalog([ModelInfo(id="b", display_name="B é", max_tokens=5), ModelInfo(id="a", display_name="A")])
    assert catalog.to_json() is catalog.to_json()
    again = Catalog.from_json(catalog.to_json())
    assert again.same_models(catalog) and again.ids == catalog.ids


def test_a_list_saved_by_an_earlier_version_still_reads() -> None:
    # Before issue 19 the records were written one at a time by json.dumps, indent=1.
    models = [ModelInfo(id="a", display_name="Ä", cost=ModelCost(input=1, output=2), input_modalities=("text", "image"))]
    old_text = json.dumps([model.model_dump(mode="json") for model in models], indent=1)
    assert Catalog.from_json(old_text).same_models(Catalog(models))


def test_the_fingerprint_is_the_models_in_any_order_but_not_their_dates() -> None:
    one = ModelInfo(id="a", display_name="a")
    two = ModelInfo(id="b", display_name="b", created_at=datetime(2025, 1, 1, tzinfo=timezone.utc))
    assert Catalog([one, two]).fingerprint == Catalog([two, one]).fingerprint
    assert Catalog([one]).same_models(Catalog([one.model_copy(update={"created_at": two.created_at})]))
    assert not Catalog([one]).same_models(Catalog([one.model_copy(update={"display_name": "A"})]))


def test_records_given_the_same_fields_share_one_fields_set() -> None:
    first = ModelInfo(id="a", display_name="A", max_tokens=5)
    second = ModelInfo.model_validate_json('{"id": "b", "display_name": "B", "max_tokens": 7}')
    other = ModelInfo(id="c", display_name="C")
    assert first.model_fields_set is second.model_fields_set
    assert first.model_fields_set == {"id", "display_name", "max_tokens"}
    assert other.model_fields_set == {"id", "display_name"}
    # A copy with more fields gets a set of its own: the shared one is left as it was.
    copied = first.model_copy(update={"reasoning": True})
    assert copied.model_fields_set == {"id", "display_name", "max_tokens", "reasoning"}
    assert first.model_fields_set == second.model_fields_set == {"id", "display_name", "max_tokens"}
