"""allocator.py: after the call, a freed big buffer goes back to the system.

Without it glibc raises its mapping threshold to the size of each big block freed, and
the next block of that size stays in the heap once freed: the process keeps it. Checked
in child processes, since the setting is process-wide."""

from __future__ import annotations

import subprocess
import sys

import pytest

_CHILD = """
import sys
from mongo_backup.allocator import return_big_blocks_to_the_system

def rss_kib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))

if sys.argv[1] == "set":
    assert return_big_blocks_to_the_system()
before = rss_kib()
for _ in range(3):
    block = bytearray(15 * 1024 * 1024)
    block[::4096] = b"x" * len(block[::4096])  # touch every page
    del block
print(rss_kib() - before)
"""


def _kept_kib(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", _CHILD, mode], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_big_blocks_are_returned_once_the_threshold_is_set() -> None:
    if _kept_kib("plain") < 10 * 1024:
        pytest.skip("this C library gives big blocks back by itself")
    assert _kept_kib("set") < 2 * 1024


def test_without_glibc_nothing_happens(monkeypatch: pytest.MonkeyPatch) -> None:
    from mongo_backup import allocator

    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    assert allocator.return_big_blocks_to_the_system() is False
