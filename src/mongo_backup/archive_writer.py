"""Writing archives: zstd members are compressed while they are exported, then joined.

A ``.tar.zst`` is one zstd stream of a tar. The zstd format defines a stream as a
sequence of independent frames, decompressed as one (RFC 8878, section 3). So instead of
compressing the whole tar again after the export (a second pass over every byte, all of
it added to the wall time), :class:`MemberWriter` compresses each collection's file while
it is written, into a hidden part file beside it; :func:`write_archive` then only frames
the tar headers and copies the parts. ``tar``, ``zstd -d`` and the ``zstandard`` module
read the result as usual.

gzip could be joined the same way, but Python's streaming ``tarfile`` mode (``r|gz``)
stops after the first gzip member, so a ``.tar.gz`` is compressed as one member at the end.

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
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, cast

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


def _zstd_compressor(threads: int) -> zstandard.ZstdCompressor:
    # Every frame carries its content checksum: a flipped bit anywhere, even in the
    # small frames of tar headers and padding, fails decompression instead of passing.
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=threads, write_checksum=True)


def _compress_block(data: bytes, compression: str) -> bytes:
    """``data`` as one complete, independent zstd frame (or the bytes themselves)."""
    if compression == "zstd":
        return bytes(_zstd_compressor(threads=0).compress(data))
    return data


@contextlib.contextmanager
def _archive_stream(path: Path, compression: str) -> Iterator[tuple[IO[bytes], str]]:
    """The file to write the tar into, and how blocks must be framed for it."""
    with private_file(path) as raw:
        if compression == "gzip":
            with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=GZIP_LEVEL, mtime=0) as out:
                yield (
                    cast(IO[bytes], out),
                    "none",
                )  # one gzip member: GzipFile compresses everything
        else:
            yield raw, compression
        raw.flush()
        os.fsync(raw.fileno())


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
        if compression == "zstd":
            parts = folder / PARTS_FOLDER
            parts.mkdir(mode=0o700, exist_ok=True)
            self._part = private_file(_part_path(folder, file_name))
            compressor = _zstd_compressor(threads=ZSTD_THREADS)
            self._compressor = compressor.stream_writer(self._part, closefd=False)

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
        with _archive_stream(temporary, compression) as (out, framing):
            manifest = (folder / MANIFEST_NAME).read_bytes()
            pending = (
                _header(MANIFEST_NAME, len(manifest), now) + manifest + _padding(len(manifest))
            )
            offset = len(pending)
            for name in members:
                size = (folder / name).stat().st_size
                header = _header(name, size, now)
                out.write(_compress_block(pending + header, framing))
                source = _part_path(folder, name) if framing == "zstd" else folder / name
                with open(source, "rb") as part:
                    shutil.copyfileobj(part, out, _COPY_CHUNK)
                pending = _padding(size)
                offset += len(header) + size + len(pending)
            # End of archive: two zero blocks, then zeros up to a whole record, as tar does.
            pending += b"\0" * (2 * _BLOCK)
            offset += 2 * _BLOCK
            pending += b"\0" * (-offset % _RECORD)
            out.write(_compress_block(pending, framing))
        os.replace(temporary, destination)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    finally:
        remove_parts(folder)
    return destination


def remove_parts(folder: Path) -> None:
    """Remove the compressed parts (they only exist to build the archive)."""
    shutil.rmtree(folder / PARTS_FOLDER, ignore_errors=True)
