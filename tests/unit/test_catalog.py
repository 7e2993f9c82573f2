"""The one check of a model id: what opencode's config can hold as a key, measured in catalog.py."""

from __future__ import annotations

import pytest

from sidecar.catalog import OPENCODE_RESERVED_KEYS, invalid_model_id_reason, reserved_key_reason

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
