"""Writing archives: zstd members are compressed while they are exported, then joined.

A ``.tar.zst`` is one zstd stream of a tar. The zstd format defines a stream as a
sequence of independent frames, decompressed as one (RFC 8878, section 3). So instead of
compressing the whole tar again after the export (a second pass over every byte, all of
it added to the wall time), :class:`MemberWriter` compresses each collection's file while
it is written, as ``{file}.zst`` in the working folder; :func:`write_archive` then only
frames the tar headers and copies those files. ``tar``, ``zstd -d`` and the ``zstandard``
module read the result as usual. Each frame carries its content checksum.

gzip could be joined the same way, but Python's streaming ``tarfile`` mode (``r|gz``)
stops after the first gzip member, so a ``.tar.gz`` is compressed as one member at the
end, from plain files, as is a plain ``.tar``.

Contracts:
- ``MemberWriter.write`` writes the bytes to the member's working file (plain
  ``{file}``, or ``{file}.zst`` for zstd, or both with ``keep_plain``) and keeps the
  SHA-256 and byte count of the plain bytes. ``close`` completes the files; ``discard``
  removes them.
- ``MemberWriter.checkpoint`` ends the zstd frame and flushes the files to disk, and
  returns their sizes: a later ``MemberWriter(..., resume=...)`` continues from there
  (the backup keeps them in its unit checkpoints). ``join_parts`` joins the files of a
  split collection's ranges in order, leaving the range files for the caller to remove.
- ``write_archive`` writes ``manifest.json`` first, then the members in the given order,
  under a hidden temporary name, flushes it to disk, then renames it: a file under the
  final name is always complete.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, cast

import zstandard

from ..files import private_file, sync_folder
from ..names import COMPRESSIONS, MANIFEST_NAME
from .tar_stream import (
    COPY_CHUNK,
    TarStream,
    compressed_name,
    zstd_compressor,
)

# The converter process compresses on its own thread: zstd's worker threads cost more
# CPU in all and compete with the server for the cores without making the backup faster.
ZSTD_THREADS = 0
GZIP_LEVEL = 6


@contextlib.contextmanager
def _archive_stream(path: Path, compression: str) -> Iterator[tuple[IO[bytes], str]]:
    """The file to write the tar into, and how blocks must be framed for it."""
    with private_file(path) as raw:
        with framed(raw, compression) as framing:
            yield framing
        raw.flush()
        os.fsync(raw.fileno())


@contextlib.contextmanager
def framed(raw: IO[bytes], compression: str) -> Iterator[tuple[IO[bytes], str]]:
    """``raw`` as the tar is written into it, and how blocks must be framed for it."""
    if compression == "gzip":
        with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=GZIP_LEVEL, mtime=0) as out:
            # One gzip member: GzipFile compresses everything written to it.
            yield cast(IO[bytes], out), "none"
    else:
        yield raw, compression


def member_paths(folder: Path, file_name: str, compression: str, keep_plain: bool) -> list[Path]:
    """The working files that :class:`MemberWriter` writes for ``file_name``."""
    paths = []
    if compression != "zstd" or keep_plain:
        paths.append(folder / file_name)
    if compression == "zstd":
        paths.append(folder / compressed_name(file_name))
    return paths


def remove_member(folder: Path, file_name: str, compression: str, keep_plain: bool) -> None:
    """Remove the working files of ``file_name``, those that exist."""
    for path in member_paths(folder, file_name, compression, keep_plain):
        with contextlib.suppress(OSError):
            path.unlink()


def _open_for_append(path: Path, size: int) -> IO[bytes]:
    """``path`` cut back to ``size`` bytes and opened to write after them."""
    fd = os.open(path, os.O_WRONLY, 0o600)
    try:
        if os.fstat(fd).st_size < size:
            raise ValueError(f"{path.name} is shorter than its checkpoint says")
        os.ftruncate(fd, size)
        os.lseek(fd, size, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "wb")


def _plain_prefix(path: Path, size: int, compressed: bool) -> Iterator[bytes]:
    """The plain bytes of the first ``size`` bytes of a working file."""
    with open(path, "rb") as raw:
        if not compressed:
            remaining = size
            while remaining:
                chunk = raw.read(min(COPY_CHUNK, remaining))
                if not chunk:
                    return
                remaining -= len(chunk)
                yield chunk
            return
        limited = cast(
            IO[bytes], io.BytesIO(raw.read(size)) if size <= COPY_CHUNK else _Limited(raw, size)
        )
        decompressor = zstandard.ZstdDecompressor()
        with decompressor.stream_reader(limited, read_across_frames=True, closefd=False) as reader:
            while chunk := reader.read(COPY_CHUNK):
                yield chunk


class _Limited(io.RawIOBase):
    """The first ``size`` bytes of a file, as a readable stream."""

    def __init__(self, raw: IO[bytes], size: int) -> None:
        self._raw = raw
        self._left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(min(len(buffer), self._left))
        self._left -= len(data)
        buffer[: len(data)] = data
        return len(data)


class MemberWriter:
    """One data member's working file(s), with checksum and size of the plain bytes.

    ``resume`` (a unit checkpoint's ``sizes``, ``bytes`` and ``sha256``) continues files
    a previous run left: each is cut back to its recorded size (dropping a torn tail),
    the plain bytes are read again to rebuild the running SHA-256 (hashlib cannot save
    its state), and both size and hash must match the checkpoint, or ``ValueError``.
    A zstd file is always cut at the end of a frame (see :meth:`checkpoint`), and new
    data starts a new frame: concatenated frames are one valid stream.
    """

    def __init__(
        self,
        folder: Path,
        file_name: str,
        compression: str,
        keep_plain: bool,
        resume: dict[str, Any] | None = None,
    ) -> None:
        self.paths = member_paths(folder, file_name, compression, keep_plain)
        self.bytes = 0
        self._hash = hashlib.sha256()
        self._plain: IO[bytes] | None = None
        self._zst_file: IO[bytes] | None = None
        self._compressor: Any = None
        if resume is not None:
            self._rehash(resume)
        opened: list[IO[bytes]] = []
        for path in self.paths:
            if resume is not None:
                opened.append(_open_for_append(path, int(resume["sizes"][path.name])))
            else:
                opened.append(private_file(path))
        if compression != "zstd" or keep_plain:
            self._plain = opened.pop(0)
        if compression == "zstd":
            self._zst_file = opened.pop(0)
            compressor = zstd_compressor(threads=ZSTD_THREADS)
            self._compressor = compressor.stream_writer(self._zst_file, closefd=False)

    def _rehash(self, resume: dict[str, Any]) -> None:
        source = self.paths[0]  # the plain file when there is one: no decompression
        size = int(resume["sizes"][source.name])
        for chunk in _plain_prefix(source, size, source.suffix == ".zst"):
            self._hash.update(chunk)
            self.bytes += len(chunk)
        if self.bytes != resume["bytes"] or self.sha256 != resume["sha256"]:
            raise ValueError(f"{source.name} does not match its checkpoint")

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def write(self, data: bytes) -> None:
        self._hash.update(data)
        self.bytes += len(data)
        if self._plain is not None:
            self._plain.write(data)
        if self._compressor is not None:
            self._compressor.write(data)

    def checkpoint(self) -> dict[str, Any]:
        """End the zstd frame, put everything written so far on disk, and return the
        durable state: plain bytes, their SHA-256, and each working file's size."""
        if self._compressor is not None:
            self._compressor.flush(zstandard.FLUSH_FRAME)
        sizes: dict[str, int] = {}
        for path, handle in zip(self.paths, self._handles(), strict=True):
            handle.flush()
            os.fsync(handle.fileno())
            sizes[path.name] = handle.tell()
        return {"bytes": self.bytes, "sha256": self.sha256, "sizes": sizes}

    def _handles(self) -> list[IO[bytes]]:
        return [handle for handle in (self._plain, self._zst_file) if handle is not None]

    def close(self) -> None:
        if self._compressor is not None:
            self._compressor.close()  # ends the zstd frame
        for handle in self._handles():
            if not handle.closed:
                handle.flush()
                os.fsync(handle.fileno())  # a unit marked done must be on disk
                handle.close()

    def abandon(self) -> None:
        """Close the files as they are, and keep them (after a failure: ``--resume``
        cuts them back to their checkpoint)."""
        for handle in self._handles():
            with contextlib.suppress(OSError, ValueError):
                handle.close()

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
        for path in self.paths:
            with contextlib.suppress(OSError):
                path.unlink()


def member_digest(
    folder: Path, file_name: str, compression: str, keep_plain: bool
) -> tuple[int, str]:
    """The plain size and SHA-256 of a member's working file(s)."""
    source = member_paths(folder, file_name, compression, keep_plain)[0]
    size, digest = 0, hashlib.sha256()
    for chunk in _plain_prefix(source, source.stat().st_size, source.suffix == ".zst"):
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


def join_parts(
    folder: Path, file_name: str, parts: list[str], compression: str, keep_plain: bool
) -> tuple[int, str]:
    """Join the working files of a split collection's ranges, in order, into the
    member's working files; returns the plain size and SHA-256 of the joined member.
    zstd files are joined frame by frame (no recompression); the hash needs the plain
    bytes, so they are decompressed once, on the way."""
    size = 0
    digest = hashlib.sha256()
    targets = member_paths(folder, file_name, compression, keep_plain)
    outputs = [private_file(path) for path in targets]
    try:
        for part in parts:
            sources = member_paths(folder, part, compression, keep_plain)
            for source, output in zip(sources, outputs, strict=True):
                with open(source, "rb") as handle:
                    shutil.copyfileobj(handle, output, COPY_CHUNK)
            for chunk in _plain_prefix(
                sources[0], sources[0].stat().st_size, sources[0].suffix == ".zst"
            ):
                digest.update(chunk)
                size += len(chunk)
        for output in outputs:
            output.flush()
            os.fsync(output.fileno())
    finally:
        for output in outputs:
            output.close()
    # The range files stay: the caller removes them once the joined member is recorded,
    # so that a crash in between can join them again.
    return size, digest.hexdigest()


def write_archive(
    folder: Path, members: list[tuple[str, int]], destination: Path, compression: str
) -> Path:
    """Write ``folder``'s ``manifest.json`` and ``members`` ((name, plain size), in
    order) into ``destination``. Members must come from :class:`MemberWriter` with the
    same compression."""
    if compression not in COMPRESSIONS:
        raise ValueError(f"unknown compression {compression!r}")
    temporary = destination.with_name(f".{destination.name}.{os.getpid()}.partial")
    try:
        with _archive_stream(temporary, compression) as (out, framing):
            write_tar(folder, members, out, framing)
        os.replace(temporary, destination)
        sync_folder(destination.parent)  # the archive's name is durable too
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    return destination


def write_tar(folder: Path, members: list[tuple[str, int]], out: IO[bytes], framing: str) -> None:
    """The tar of ``manifest.json`` and ``members`` into ``out`` (see :func:`framed`)."""
    tar = TarStream(out, framing)
    tar.add_bytes(MANIFEST_NAME, (folder / MANIFEST_NAME).read_bytes())
    for name, size in members:
        tar.add_file(folder, name, size)
    tar.close()


def remove_compressed(folder: Path, members: list[tuple[str, int]]) -> None:
    """Remove the ``.zst`` working files (``--keep-folder`` keeps the plain ones)."""
    for name, _ in members:
        with contextlib.suppress(OSError):
            (folder / compressed_name(name)).unlink()
