"""Keep freed tensor memory from piling up in the process heap (glibc only): the application's choice.

glibc raises its mmap threshold each time a large block is freed, so after the first training steps
activations come from the heap, and what is freed there stays mapped: RSS then grows with every new
batch shape, far beyond the live tensors (`benchmarks/profile_step.py` prints both after each step).
A fixed threshold (`lsllama.tuning.MMAP_THRESHOLD_BYTES`) keeps large blocks in their own mappings,
returned to the system when freed. Once a model is built, the free pages that loading and converting its
weights left inside the heap are handed back too (`malloc_trim`): training's activations would not reuse
all of them, and a run's peak RSS counts them. Training hands back its freed activations before each
evaluation for the same reason. Elsewhere (macOS, musl) this does nothing.

The allocator belongs to the process, not to a library: only an application opts in
(`tune_process_heap`: the `lsllama` CLI does, for every command). A notebook or server that calls
`Classifier.load` keeps its allocator as it was; the library's `release_free_heap_pages` calls then do
nothing.
"""

from __future__ import annotations

import ctypes
import functools

from lsllama.tuning import MMAP_THRESHOLD_BYTES

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
_TUNED = {"process": False}


def _libc_function(name: str):
    try:
        return getattr(ctypes.CDLL(None), name)  # the C library this process already runs on
    except (OSError, AttributeError):
        return None


@functools.cache
def tune_process_heap() -> bool:
    """Called by an application (the CLI) once, before a model is built; True where the heap was tuned."""
    mallopt = _libc_function("mallopt")
    _TUNED["process"] = bool(mallopt and mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    return _TUNED["process"]


def release_free_heap_pages() -> bool:
    """Called once a model is built and before each evaluation in training; True where the heap gave pages
    back to the system. Only in a process whose application tuned its heap (`tune_process_heap`)."""
    if not _TUNED["process"]:
        return False
    malloc_trim = _libc_function("malloc_trim")
    return bool(malloc_trim and malloc_trim(0))
