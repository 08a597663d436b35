"""Durable, private files: the one place that knows how to write them.

Three habits every writer in the project shares, kept here so that each exists once:

- :func:`private_file`: a new file that only its owner can read (mode 0600 whatever the
  umask), because backups, checkpoints and manifests hold the database's data.
- :func:`write_json_atomic`: a small JSON document that is either the old one or the new
  one after a crash, never half of each (write a temporary, fsync, rename, fsync the
  folder).
- :func:`sync_folder`: make a rename durable; POSIX needs the folder itself fsynced.

Ground layer: imports nothing from the project.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import IO, Any


def private_file(path: Path) -> IO[bytes]:
    """Open a new file for writing with mode 0600, whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "wb")


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` with ``data`` as JSON, durably and all at once (mode 0600)."""
    write_atomic(path, json.dumps(data, ensure_ascii=False).encode("utf-8"))


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data``, durably and all at once: a reader sees the old
    file or the new one, never a part."""
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    sync_folder(path.parent)


def sync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable. Some platforms (Windows) cannot open a folder
    for fsync; the rename is then as durable as that file system makes it."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
