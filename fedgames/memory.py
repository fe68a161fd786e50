"""Process-wide memory settings for long CPU simulations."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

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


def use_huge_pages() -> bool:
    """Ask PyTorch's CPU allocator to back large tensors with transparent huge pages: ``THP_MEM_ALLOC_ENABLE=1``
    (blocks of 2 MB and more aligned to 2 MB and ``madvise(MADV_HUGEPAGE)``-ed), unless the variable is set
    already.

    A CNN round on a CPU touches gigabytes of fresh memory; in 2 MB pages that takes 512 times fewer page faults
    than in 4 kB ones. On the 2-core development machine (``transparent_hugepage`` in ``madvise`` mode) the
    ``tiny`` B.3 reproduction took 200 s instead of 216 (system time 5.3 s instead of 7.8), with the same results,
    and a round of 32 CNN runs needed a third of the system time. PyTorch reads the variable once, at its first
    allocation, so this must run before ``torch`` is imported; returns whether it takes effect (``False`` once
    ``torch`` is imported, unless the variable was set before). The CLI calls it first thing.
    """
    if "torch" in sys.modules:
        return os.environ.get("THP_MEM_ALLOC_ENABLE") == "1"
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    return os.environ["THP_MEM_ALLOC_ENABLE"] == "1"
