"""Resident memory: freed tensor memory goes back to the system (lsllama.heap, glibc); training loads no
library it does not use."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# In a fresh process: in a long-lived one the heap's earlier holes decide where blocks land.
SCRIPT = """
import json, os, torch
from lsllama.heap import release_free_heap_pages, return_freed_tensors_to_the_system

def rss_mb():
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

assert return_freed_tensors_to_the_system()
blocks, pins = [], []
for _ in range(400):  # 400 KB blocks (heap, below the mmap threshold), each followed by a live 8 KB pin
    blocks.append(torch.ones(100_000))
    pins.append(torch.ones(2_000))  # keeps the freed blocks inside the heap, away from its top
before = rss_mb()
del blocks
after_free = rss_mb()
released = release_free_heap_pages()
print(json.dumps({"freed": before - after_free, "released": released, "trimmed": after_free - rss_mb()}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's heap")
def test_free_pages_inside_the_heap_are_released():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["freed"] < 10  # freeing alone keeps those pages: glibc only trims the heap's top
    assert result["released"] and result["trimmed"] > 100  # ~160 MB handed back


def test_training_and_prediction_imports_leave_the_metric_libraries_out():
    """scikit-learn (also behind seqeval) loads when scores are computed: libraries imported at start-up stay
    resident through every training step and add to its peak."""
    script = (
        "import sys, lsllama.api, lsllama.cli, lsllama.training.loop, lsllama.evaluation.evaluate\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'sklearn', 'seqeval', 'pandas', 'matplotlib'}))"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"
