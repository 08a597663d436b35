"""One lock per backup location: two backups in one ``--out-dir`` never run at once.

Two runs writing the same location would race for the newest unfinished folder
(``--resume``), and a retention run deleting backups while one is being written could
remove what the other depends on. So a run that writes a location first takes its lock,
the file ``{out_dir}/.mongo-backup.lock``, created with ``O_EXCL`` (atomic on local file
systems) and holding who took it: process id, host name, start time, what it does.

A lock is *stale*, and taken over with a warning, when its process is gone (same host:
the process id no longer exists) or when it is older than ``stale_after`` (another host,
or a process id reused by another program). A run that finds a live lock waits up to
``wait`` seconds, then fails with one line naming the holder. Nothing secret goes into
the file: no URI, no database credentials.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import LockedError

logger = logging.getLogger(__name__)

LOCK_NAME = ".mongo-backup.lock"
STALE_AFTER = 24 * 3600.0


def _describe(holder: dict[str, Any]) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(holder.get("time", 0))))
    return (
        f"{holder.get('what', 'a run')} (pid {holder.get('pid')} on {holder.get('host')}, "
        f"since {started} UTC)"
    )


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # unreadable: treated as stale once old enough (see _is_stale)
    return data if isinstance(data, dict) else {}


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def _is_stale(path: Path, holder: dict[str, Any], stale_after: float) -> bool:
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return True
    if age > stale_after:
        return True
    pid = holder.get("pid")
    if holder.get("host") == socket.gethostname() and isinstance(pid, int):
        return not _process_exists(pid)
    return False


def _create(path: Path, what: str) -> bool:
    record = {"pid": os.getpid(), "host": socket.gethostname(), "time": time.time(), "what": what}
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(record, handle)
    return True


@contextlib.contextmanager
def location_lock(
    location: Path, what: str, *, wait: float = 0.0, stale_after: float = STALE_AFTER
) -> Iterator[None]:
    """Hold the lock of ``location`` (a folder, created if needed) for the block."""
    location.mkdir(parents=True, exist_ok=True)
    path = location / LOCK_NAME
    deadline = time.monotonic() + wait
    while not _create(path, what):
        holder = _read(path)
        if holder is None:
            continue  # released between our two looks: try again
        if _is_stale(path, holder, stale_after):
            logger.warning(
                "taking over the stale lock of %s, left by %s", location, _describe(holder)
            )
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            continue
        if time.monotonic() >= deadline:
            raise LockedError(
                f"{location} is in use by {_describe(holder)}; wait for it to finish "
                f"(or remove {path} if that run is gone)"
            )
        time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if (_read(path) or {}).get("pid") == os.getpid():
                path.unlink()
