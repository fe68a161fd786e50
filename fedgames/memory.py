"""Process-wide memory settings for long CPU simulations, and the memory budget that batch sizes and game sizes
are checked against (:func:`check_fits`)."""

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


def available_bytes() -> int | None:
    """Memory the machine can give this process now: ``MemAvailable`` of ``/proc/meminfo`` (Linux), else the free
    physical pages (``sysconf``), else ``None`` (unknown: nothing is refused)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


MEMORY_SHARE = 0.5
"""The share of the available memory (:func:`available_bytes`) one allocation plan may take: the rest is left to
the temporaries the estimates do not count and to the rest of the machine."""


def memory_budget() -> int | None:
    """:data:`MEMORY_SHARE` of :func:`available_bytes` (``None``: unknown)."""
    available = available_bytes()
    return None if available is None else int(available * MEMORY_SHARE)


def size_text(n_bytes: float) -> str:
    """``n_bytes`` for messages, in the largest of KiB, MiB, GiB and TiB that leaves at least 1."""
    value, unit = n_bytes / 1024, "KiB"
    for larger in ("MiB", "GiB", "TiB"):
        if value < 1024:
            break
        value, unit = value / 1024, larger
    return f"{value:.3g} {unit}"


def check_fits(what: str, needed: float) -> None:
    """Raise a ``ValueError`` when ``what`` needs about ``needed`` bytes, more than :func:`memory_budget`, with
    the estimate and the budget in the message (checked before anything is allocated)."""
    budget = memory_budget()
    if budget is not None and needed > budget:
        raise ValueError(
            f"{what} needs about {size_text(needed)}, more than {MEMORY_SHARE:.0%} of the "
            f"{size_text(budget / MEMORY_SHARE)} of memory available"
        )
