"""Keeping the resident memory flat over long runs (glibc only; elsewhere a no-op).

A backup or restore allocates and frees buffers of a megabyte or more for every batch.
glibc serves the first ones with mmap and unmaps them when freed, but it then raises its
mmap threshold (up to 32 MiB) and serves later ones from the heap, where freed space is
kept and fragments: the resident size creeps up with the amount of data, not with the
work in flight. Fixing the threshold keeps every batch-sized buffer on mmap, returned to
the system as soon as it is freed, at the cost of a few system calls per batch.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util

_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 256 * 1024


def keep_large_buffers_off_the_heap() -> None:
    """Ask glibc to mmap every allocation of MMAP_THRESHOLD_BYTES or more."""
    with contextlib.suppress(OSError, AttributeError, TypeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
