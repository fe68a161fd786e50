"""Process-wide memory settings for long CPU simulations."""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # mallopt parameter numbers (glibc malloc.h)


def keep_freed_memory() -> bool:
    """Let glibc's allocator reuse freed large blocks instead of returning them to the OS.

    Each CNN round on a CPU allocates and frees tens of tensors of the model's size (26 MB per client for the
    FEMNIST CNN). glibc serves blocks above 32 MB by ``mmap`` and unmaps them on free, so every round page-faults
    its memory in again: on 2 cores the kernel's page zeroing took more time than the arithmetic (a tiny B.3 run:
    sys 555 s, user 510 s; 2.4x faster per round with this setting). Turns ``mmap`` allocation and heap trimming
    off for this process (``mallopt(M_MMAP_MAX, 0)``, ``mallopt(M_TRIM_THRESHOLD, -1)``; the largest positive
    threshold, ``2**31 - 1``, still gave back every freed block above 2 GiB, and a round of 32 CNN runs ran at half
    speed): the process keeps its peak memory. The price is fragmentation, which grows that peak: a round of 64
    CNN runs (15-18 GB with freed memory released) outgrows 24 GB with it (``bench/fedsgd_engine_throughput.py
    --release-memory``). The CLI's CPU simulations call it; returns whether the settings took (``False`` without
    glibc).
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, -1))
