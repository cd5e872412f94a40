"""system/heap.py: the freed C heap goes back to the system (a --loop agent's RSS, run after run)."""

from __future__ import annotations

import platform

import psutil
import pytest

from fakerun.system import heap

MIB = 1024 * 1024


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_freed_memory_inside_the_heap_goes_back() -> None:
    # 64 MiB of 16 KiB blocks (malloc's, not pymalloc's; below the mmap
    # threshold, so inside the heap), every other one freed: free pages
    # between live blocks, which glibc keeps resident and does not trim from the top.
    blocks = [bytearray(16 * 1024) for _ in range(4096)]
    del blocks[::2]
    me = psutil.Process()
    before = me.memory_info().rss
    assert heap.release_freed()
    released = before - me.memory_info().rss
    assert released >= 16 * MIB, f"released only {released / MIB:.1f} MiB of 32 MiB freed"
    assert len(blocks) == 2048  # what was kept stays


def test_a_platform_without_it_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    heap._malloc_trim.cache_clear()
    monkeypatch.setattr(heap.sys, "platform", "darwin")
    try:
        assert heap.release_freed() is False
    finally:
        heap._malloc_trim.cache_clear()
