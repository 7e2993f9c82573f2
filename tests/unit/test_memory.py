"""memory.py: malloc_trim where the C library has it."""

from __future__ import annotations

import gc
import platform
import weakref

import pytest

from sidecar import memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_free_memory_is_given_back_with_glibc() -> None:
    assert memory.release_free_memory() is True


def test_without_malloc_trim_nothing_is_done(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "_malloc_trim", lambda: None)
    assert memory.release_free_memory() is False


class _Node:
    def __init__(self) -> None:
        self.other: object = self  # a reference cycle: only the cyclic collector frees it


def test_garbage_in_reference_cycles_is_collected_first() -> None:
    gc.disable()  # no automatic collection in between: only release_free_memory's can free it
    try:
        node = _Node()
        alive = weakref.ref(node)
        del node
        assert alive() is not None
        memory.release_free_memory()
        assert alive() is None
    finally:
        gc.enable()
