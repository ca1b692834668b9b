"""lsllama.heap: freed tensor memory goes back to the system (glibc)."""

from __future__ import annotations

import os
import sys

import pytest
import torch

from lsllama.heap import release_free_heap_pages, return_freed_tensors_to_the_system


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's heap")
def test_free_pages_inside_the_heap_are_released():
    assert return_freed_tensors_to_the_system()
    blocks, pins = [], []
    for _ in range(400):  # 400 KB blocks (heap, below the mmap threshold), each followed by a live pin
        blocks.append(torch.ones(100_000))
        pins.append(torch.ones(2_000))  # 8 KB, live: the freed blocks stay inside the heap, away from its top
    before = _rss_mb()
    del blocks
    assert _rss_mb() > before - 10  # freeing alone keeps those pages (glibc only trims the heap's top)
    assert release_free_heap_pages()
    assert _rss_mb() < before - 100  # ~160 MB were freed inside the heap
    assert len(pins) == 400
