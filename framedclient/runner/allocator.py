"""
How much freed memory the gateway's process keeps: glibc's ``malloc`` is
told to serve large blocks from their own mappings, which go back to the
kernel when freed.

Why: a reply of 16 MB lives in one block.  By default glibc raises its
mmap threshold (up to 32 MiB) after the first large block is freed, so
later large blocks come from the heap, and a heap that held 40 of them in
a burst keeps that memory after they are gone: the process's RSS stays at
the burst's size although Python holds nothing (measured: 135 MB of RSS
growth for 64 MB of held replies, 65 MB with the fixed threshold).  A fixed
threshold also stops the dynamic adjustment, so every block above it is
mapped and unmapped: a syscall and page faults per large block, which is
small next to copying a megabyte.

Only under ``twist`` (the service calls :func:`limit_heap_retention` when
it owns the process) and only with glibc; elsewhere nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["MMAP_THRESHOLD", "M_MMAP_THRESHOLD", "limit_heap_retention"]

#: glibc's ``mallopt`` parameter number for the mmap threshold.
M_MMAP_THRESHOLD = -3

#: Blocks of at least this many bytes get their own mapping (glibc's own
#: default before it adjusts is 128 KiB; 1 MiB keeps mid-sized buffers such
#: as the 64 KiB reply chunks on the heap).
MMAP_THRESHOLD = 1 << 20


def limit_heap_retention(threshold: int = MMAP_THRESHOLD) -> bool:
    """
    Fix glibc's mmap threshold at ``threshold`` bytes; ``False`` where
    there is no glibc ``mallopt`` (musl, macOS) or it refused.
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, threshold))
