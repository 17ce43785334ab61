"""Give freed tensor memory back to the operating system on CPU runs.

PyTorch allocates CPU tensors with the C library's malloc. glibc serves requests above its mmap threshold
with mappings of their own, returned when freed, but it raises that threshold (up to 32 MiB) each time such a
block is freed; from then on a training step's activations (5-15 MiB each at SmolVLM-256M's widths) come from
its heaps, which keep the pages of freed blocks. A LoRA step on SmolVLM-256M (2 chats of 1,177 tokens) then
held 13.6 GB of RSS for about 8 GB of live tensors, and 10.4 GB between steps. Fixing the threshold at 4 MiB
gives 9.7 GB at the same seconds per step; at 1 MiB it gives 9.0 GB but steps take 13-15 % longer (every
large block is fresh, zeroed pages). Figures: benchmarks/RESULTS.md, 2026-12-07.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3  # glibc's malloc.h
THRESHOLD = 4 << 20


def return_freed_memory() -> bool:
    """Serve allocations of 4 MiB and more with mappings of their own from now on (glibc; elsewhere nothing
    changes). True where it took effect."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError):  # no C library found, or one without mallopt (musl)
        return False
    return mallopt(M_MMAP_THRESHOLD, THRESHOLD) == 1
