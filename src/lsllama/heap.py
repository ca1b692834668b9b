"""Keep freed tensor memory from piling up in the process heap (glibc only).

glibc raises its mmap threshold each time a large block is freed, so after the first training steps
activations come from the heap, and what is freed there stays mapped: RSS then grows with every new
batch shape, far beyond the live tensors (`benchmarks/profile_step.py` prints both after each step).
A fixed threshold keeps large blocks in their own mappings, returned to the system when freed. It is
set at 1 MiB: lower thresholds kept RSS lower still but made CPU steps markedly slower (every
activation then costs a fresh mapping and its page faults). Once a model is built, the free pages that
loading and converting its weights left inside the heap are handed back too (`malloc_trim`): training's
activations would not reuse all of them, and a run's peak RSS counts them. Training hands back its
freed activations before each evaluation for the same reason. Elsewhere (macOS, musl) this does nothing.
"""

from __future__ import annotations

import ctypes
import functools

M_MMAP_THRESHOLD = -3
THRESHOLD_BYTES = 1 << 20


def _libc_function(name: str):
    try:
        return getattr(ctypes.CDLL(None), name)  # the C library this process already runs on
    except (OSError, AttributeError):
        return None


@functools.cache
def return_freed_tensors_to_the_system() -> bool:
    """Called before a model is built; True where the heap was tuned."""
    mallopt = _libc_function("mallopt")
    return bool(mallopt and mallopt(M_MMAP_THRESHOLD, THRESHOLD_BYTES))


def release_free_heap_pages() -> bool:
    """Called once a model is built and before each evaluation in training; True where the heap gave pages
    back to the system."""
    malloc_trim = _libc_function("malloc_trim")
    return bool(malloc_trim and malloc_trim(0))
