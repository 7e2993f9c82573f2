"""What counts as a project directory: checked once, where a directory enters the sidecar.

A directory from a client or from opencode becomes a key in the applier's reload set and a
`directory=` opencode builds an instance for, so it is checked and brought to one spelling first.
opencode 1.18.33 resolves a directory lexically itself (`/p/`, `//p/./` and `/p/x/..` are all `/p`)
and answers HTTP 500 for a NUL byte or a name longer than the filesystem allows (measured).
"""

from __future__ import annotations

import unicodedata
from typing import Any

# Linux's PATH_MAX and NAME_MAX, in bytes: nothing longer can be a directory opencode can open.
MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255

# Control characters (NUL among them), invisible format characters (bidi overrides, zero-width
# ones: they make a path in a log or a listing read as another), lone surrogates (no UTF-8 form)
# and line or paragraph separators.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


class InvalidDirectory(ValueError):
    """A directory the sidecar refuses; the message never repeats the value (it may be hostile)."""


def check_directory(value: Any) -> str:
    """`value` as an absolute path in its one normal spelling, or InvalidDirectory saying why.

    Redundant `/`, `.` and a trailing `/` are removed, as opencode would read them anyway. A `..`
    is refused rather than resolved: before a symlink it means another directory to the
    filesystem than to a lexical resolution, so which one the client meant can't be known, and
    no client needs it.
    """
    if not isinstance(value, str):
        raise InvalidDirectory("directory must be a string")
    if any(unicodedata.category(char) in _REFUSED_CATEGORIES for char in value):
        raise InvalidDirectory("directory must not contain control or invisible characters")
    if len(value.encode()) > MAX_PATH_BYTES:
        raise InvalidDirectory(f"directory must not be longer than {MAX_PATH_BYTES} bytes")
    if not value.startswith("/"):
        raise InvalidDirectory("directory must be an absolute path")
    names = [name for name in value.split("/") if name not in ("", ".")]
    if ".." in names:
        raise InvalidDirectory("directory must not contain '..'")
    if any(len(name.encode()) > MAX_NAME_BYTES for name in names):
        raise InvalidDirectory(f"a name in directory must not be longer than {MAX_NAME_BYTES} bytes")
    return "/" + "/".join(names)
