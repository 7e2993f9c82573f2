"""Freed memory given back to the system after a big catalog's work (glibc's malloc_trim).

Reading and writing a 10,000-model catalog allocates tens of MiB that are freed once the poll or
the reload is done, but glibc keeps the freed pages in its heap, so they stay resident: 18 MiB of
the sidecar's 113 MiB after a 10,000-model reload (measured, issue 19). malloc_trim returns them.
Called after a change only (never on an unchanged poll), so the idle sidecar pays nothing; where
the C library has no malloc_trim (musl, macOS) it does nothing.

A full garbage collection comes first: some of a change's garbage is held in reference cycles
until the cyclic collector's third generation runs, which at 10,000 models kept ~6 MiB resident
that a trim alone could not give back (95 -> 89 MiB after a reload; the collection takes ~12-20 ms
with 10,000 records alive, once per change; measured, issue 19).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
from collections.abc import Callable


# glibc's malloc.h: the size from which an allocation is its own mapping, unmapped when freed.
M_MMAP_THRESHOLD = -3
# glibc's default starting value. Set explicitly, it stays there: left alone, glibc raises it to the
# size of each mapped block freed (up to 32 MiB), so once a change has freed a 10,000-model answer,
# every later block of that size (the next answer, a 10,000-entry dict's table, a saved list's
# text) is carved from the main heap, where one long-lived block left near its top keeps the pages
# below it; mapped, each is given back whole when freed. At 10,000 models, after three changes:
# 88 -> 82 MiB resident, the main heap 23 -> 16.5 MiB (measured, issue 19).
MMAP_THRESHOLD = 128 * 1024


def _libc_function(name: str) -> Callable[..., int] | None:
    library = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(library), name) if library else None
    except (OSError, AttributeError):
        return None


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    return _libc_function("malloc_trim")


@functools.cache
def _mallopt() -> Callable[[int, int], int] | None:
    return _libc_function("mallopt")


def fix_mmap_threshold(size: int = MMAP_THRESHOLD) -> bool:
    """Blocks of `size` bytes or more mapped on their own for the rest of the process (see
    MMAP_THRESHOLD); whether the C library could. Called once, as the sidecar starts."""
    mallopt = _mallopt()
    return mallopt is not None and mallopt(M_MMAP_THRESHOLD, size) == 1


def release_free_memory() -> bool:
    """Give the heap's free pages back; whether the C library could."""
    gc.collect()
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
