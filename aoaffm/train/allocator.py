"""Keep the memory a training step frees for the next step, instead of glibc returning it
to the kernel and faulting it back in, page by page, a step later.

A CPU training step of the attention models allocates and frees a few [B·P, K] float
buffers of ~6 MB each (pair products, hidden layer, their gradients). glibc's malloc serves
blocks that large from mmap or from the top of its heap and, on free, hands them back
(munmap, or a trim of the heap top beyond ``M_TRIM_THRESHOLD``), so the next step takes a
page fault (and the kernel zeroes a page) for every 4 KB it touches again: measured here,
500-5,000 minor faults and up to 13 ms of system time per AoAFFM step at K = 256, more than
half the step again. Raising the mmap and trim thresholds keeps those blocks in the heap
for reuse (no faults after the first step); the price is that the process keeps up to
``trim_threshold`` bytes of freed memory. The same as ``MALLOC_MMAP_THRESHOLD_`` /
``MALLOC_TRIM_THRESHOLD_`` in the environment, which glibc reads only at start-up: when either
is set, the user's settings stand and nothing is changed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 * 2**20  # glibc's ceiling for M_MMAP_THRESHOLD on 64-bit
ENVIRONMENT = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def keep_freed_memory(
    mmap_threshold: int = MMAP_THRESHOLD_MAX, trim_threshold: int = 256 * 2**20
) -> bool:
    """Have glibc's malloc serve blocks below ``mmap_threshold`` bytes from its heap and keep
    up to ``trim_threshold`` bytes of freed heap. True when set; False where this is not
    glibc, or the environment already sets either threshold."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if any(name in os.environ for name in ENVIRONMENT):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(
        mallopt(M_MMAP_THRESHOLD, mmap_threshold) and mallopt(M_TRIM_THRESHOLD, trim_threshold)
    )
