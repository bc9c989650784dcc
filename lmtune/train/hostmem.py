"""CPU training: keep freed memory in the process for the next step instead of handing it back to the OS.

glibc serves allocations above its mmap threshold (at most 32 MiB by default, often far less) with fresh mmaps and
returns freed heap tops above its trim threshold to the OS. A training step on the CPU allocates and frees the
same large activation, logit and gradient buffers every step, so every step page-faults (and the kernel zeroes)
them again. Raising both thresholds with mallopt(3), glibc's documented tuning call, keeps those pages mapped for
reuse. The peak memory stays that of the largest step; what changes is that it is not given back in between.
torch has no switch for its CPU allocator (it uses the C library's malloc), hence this small call.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
_MMAP_MAX = 1 << 30  # allocations up to 1 GiB come from the heap (glibc accepts up to HEAP_MAX_SIZE / 2 on 64-bit)
_TRIM = (1 << 31) - 1  # the largest value mallopt's int takes: freed heap is practically never trimmed


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; False where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, _MMAP_MAX)) and bool(mallopt(M_TRIM_THRESHOLD, _TRIM))
