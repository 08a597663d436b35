"""Give big buffers back to the system when they are freed.

glibc's malloc serves a block of at least ``M_MMAP_THRESHOLD`` bytes (128 KiB at start)
with a mapping of its own, returned to the system by ``free``. But the threshold is
dynamic: each time such a block is freed, it rises to that block's size (up to 32 MiB). So
once one 15 MiB document has passed, every later 15 MiB buffer comes from the heap, and
the heap keeps what it was given: a thread's arena grows to its highest water mark and
stays there, and each thread (the reader, the inserters) has an arena of its own. With
documents of 15 MiB this made a restore peak at 250 MiB where the buffers it held at
once came to ~100 MiB, and a backup's reader at 195 MiB for ~110.

Setting the threshold explicitly turns the dynamic rise off: every block of
:data:`THRESHOLD` bytes or more is mapped, and freed for good. Ordinary documents are far
below it (a batch of 1,000 ``orders`` documents is ~400 KiB), so nothing changes for them;
a buffer above it costs one ``mmap`` and its page faults, negligible beside copying 4 MiB.

Process-wide, so only the command line's entry points call it (a library caller's
process is its own business). Anything but glibc: nothing to do.

Ground layer: imports nothing from the project.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys

THRESHOLD = 4 * 1024 * 1024
_M_MMAP_THRESHOLD = -3  # from glibc's malloc.h


def return_big_blocks_to_the_system(threshold: int = THRESHOLD) -> bool:
    """Map blocks of ``threshold`` bytes or more on their own; True when it took effect."""
    if not sys.platform.startswith("linux"):
        return False
    with contextlib.suppress(OSError, AttributeError):
        # The interpreter's own symbols include its C library's (find_library would
        # start a subprocess). musl has no mallopt: AttributeError, nothing changes.
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, threshold))
    return False
