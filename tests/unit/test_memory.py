"""memory.py: malloc_trim where the C library has it."""

from __future__ import annotations

import gc
import platform
import subprocess
import sys
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


# A 1 MiB block allocated after an 8 MiB one was freed: in the main heap ([heap]) or a mapping of its own.
_PROBE = """
import ctypes, sys
from sidecar import memory
if sys.argv[1] == "fixed":
    assert memory.fix_mmap_threshold()
freed = bytearray(8 << 20)
del freed
kept = bytearray(1 << 20)
address = ctypes.addressof((ctypes.c_char * len(kept)).from_buffer(kept))
for line in open("/proc/self/maps"):
    if line.rstrip().endswith("[heap]"):
        start, end = (int(part, 16) for part in line.split()[0].split("-"))
        print("heap" if start <= address < end else "mapped")
        break
else:
    print("mapped")
"""


def _where_a_big_block_goes(mode: str) -> str:
    done = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.strip()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_big_blocks_stay_mapped_once_the_threshold_is_fixed() -> None:
    # glibc's own way: the freed 8 MiB block raised its threshold, so the 1 MiB one is in the heap.
    assert _where_a_big_block_goes("default") == "heap"
    assert _where_a_big_block_goes("fixed") == "mapped"


def test_without_mallopt_the_threshold_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "_mallopt", lambda: None)
    assert memory.fix_mmap_threshold() is False
