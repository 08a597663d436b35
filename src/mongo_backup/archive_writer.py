"""Writing archives: each member is compressed while it is exported, then joined.

A ``.tar.zst`` (or ``.tar.gz``) is one compressed stream of a tar. Both zstd and gzip
allow a stream to be a sequence of independent frames (members, in gzip's words), and
every reader decompresses the sequence as one. So instead of compressing the whole tar
again after the export (a second pass over every byte, all of it added to the wall time),
:class:`MemberWriter` compresses each collection's file while it is written, into a
hidden part file beside it; :func:`write_archive` then only frames the tar headers and
copies the parts. The result is an ordinary archive that ``tar``, ``zstd -d`` and
Python's ``tarfile`` read as usual.

Contracts:
- ``MemberWriter.write`` writes the same bytes to the plain ``.jsonl`` file (kept when
  archiving fails, and for ``--keep-folder``) and to the compressed part, and keeps the
  SHA-256 and the byte count. ``close`` completes both files; ``discard`` removes both.
- ``write_archive`` writes ``manifest.json`` first, then the members in the given order,
  under a hidden temporary name, flushes it to disk, then renames it: a file under the
  final name is always complete. It removes the parts folder when it is done.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import shutil
import tarfile
import time
from pathlib import Path
from typing import IO, Any

import zstandard

from .manifest import MANIFEST_NAME

COMPRESSIONS = ("none", "gzip", "zstd")
SUFFIXES = {"none": ".tar", "gzip": ".tar.gz", "zstd": ".tar.zst"}
PARTS_FOLDER = ".parts"
ZSTD_LEVEL = 3
GZIP_LEVEL = 6
# Compression workers run outside the GIL, so they overlap with the conversion work.
ZSTD_THREADS = 2
_BLOCK = tarfile.BLOCKSIZE
_RECORD = tarfile.RECORDSIZE
_COPY_CHUNK = 1 << 20


def private_file(path: Path) -> IO[bytes]:
    """Open a new file for writing with mode 0600, whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "wb")


def _compress_block(data: bytes, compression: str) -> bytes:
    """``data`` as one complete, independent frame (or the bytes themselves)."""
    if compression == "zstd":
        return bytes(zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(data))
    if compression == "gzip":
        return gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)
    return data


def _part_path(folder: Path, file_name: str) -> Path:
    return folder / PARTS_FOLDER / file_name


class MemberWriter:
    """One data member, written plain and (for a compressed archive) compressed."""

    def __init__(self, folder: Path, file_name: str, compression: str) -> None:
        self.path = folder / file_name
        self.compression = compression
        self.bytes = 0
        self._hash = hashlib.sha256()
        self._plain = private_file(self.path)
        self._part: IO[bytes] | None = None
        self._compressor: Any = None
        if compression != "none":
            parts = folder / PARTS_FOLDER
            parts.mkdir(mode=0o700, exist_ok=True)
            self._part = private_file(_part_path(folder, file_name))
            if compression == "zstd":
                compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=ZSTD_THREADS)
                self._compressor = compressor.stream_writer(self._part, closefd=False)
            else:
                self._compressor = gzip.GzipFile(
                    fileobj=self._part, mode="wb", compresslevel=GZIP_LEVEL, mtime=0
                )

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def write(self, data: bytes) -> None:
        self._plain.write(data)
        self._hash.update(data)
        self.bytes += len(data)
        if self._compressor is not None:
            self._compressor.write(data)

    def close(self) -> None:
        self._plain.close()
        if self._compressor is not None:
            self._compressor.close()  # ends the frame (zstd) or member (gzip)
        if self._part is not None:
            self._part.close()

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
        for path in (self.path, _part_path(self.path.parent, self.path.name)):
            with contextlib.suppress(OSError):
                path.unlink()


def _header(name: str, size: int, mtime: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o600
    info.mtime = mtime
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _padding(size: int) -> bytes:
    return b"\0" * (-size % _BLOCK)


def write_archive(folder: Path, members: list[str], destination: Path, compression: str) -> Path:
    """Write ``folder``'s ``manifest.json`` and ``members`` (in order) into ``destination``.

    Members must have been written with :class:`MemberWriter` using the same compression.
    """
    if compression not in COMPRESSIONS:
        raise ValueError(f"unknown compression {compression!r}")
    temporary = destination.with_name(f".{destination.name}.{os.getpid()}.partial")
    now = int(time.time())
    try:
        with private_file(temporary) as out:
            manifest = (folder / MANIFEST_NAME).read_bytes()
            pending = (
                _header(MANIFEST_NAME, len(manifest), now) + manifest + _padding(len(manifest))
            )
            offset = len(pending)
            for name in members:
                size = (folder / name).stat().st_size
                header = _header(name, size, now)
                out.write(_compress_block(pending + header, compression))
                source = folder / name if compression == "none" else _part_path(folder, name)
                with open(source, "rb") as part:
                    shutil.copyfileobj(part, out, _COPY_CHUNK)
                pending = _padding(size)
                offset += len(header) + size + len(pending)
            # End of archive: two zero blocks, then zeros up to a whole record, as tar does.
            pending += b"\0" * (2 * _BLOCK)
            offset += 2 * _BLOCK
            pending += b"\0" * (-offset % _RECORD)
            out.write(_compress_block(pending, compression))
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, destination)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    finally:
        shutil.rmtree(folder / PARTS_FOLDER, ignore_errors=True)
    return destination
