"""The archive edge, reading side (writing is in :mod:`.writer`).

Reading (:func:`open_backup`): one interface over a backup folder and a tar archive in
any of the three compressions (recognised by magic bytes, not by name). Members are
streamed; nothing is unpacked to disk. A reader refuses, with :class:`ArchiveError`,
anything this tool would not have written: a first member other than the manifest,
members out of manifest order, missing or extra or duplicate members, links, devices,
paths with directories or ``..``.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, cast

import zstandard

from ..errors import ArchiveError
from .backup_reader import BackupReader as BackupReader  # the interface, re-exported
from .manifest import MANIFEST_NAME, MAX_MANIFEST_BYTES, CollectionEntry, parse_manifest
from .mongodump import MongodumpReader, is_mongodump

_COPY_CHUNK = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


# Compressed bytes per decompression call. zstd expands a byte at most ~32,768 times (a
# 4-byte RLE block stands for 128 KiB), so one call yields at most ~32 MiB, whatever the
# archive's compression ratio: a decompression bomb cannot make a read allocate more.
_FEED = 1024


class ZstdFramesReader:
    """Decompresses a sequence of zstd frames, and notices when the last one is cut.

    (The ``zstandard`` stream reader returns end-of-file quietly when the input stops in
    the middle of a frame; a truncated archive must fail instead.) Input is fed in small
    pieces and only until the caller's request is met, so memory stays bounded.
    """

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._decompressor = zstandard.ZstdDecompressor()
        self._frame: Any = None  # the decompression object of the frame in progress
        self._input = b""
        self._input_position = 0
        self._buffer = b""
        self._position = 0  # callers read small pieces: move an index, do not re-slice
        self._decoded: list[bytes] = []

    def _feed(self, data: bytes) -> int:
        produced = 0
        while data:
            if self._frame is None:
                self._frame = self._decompressor.decompressobj()
            part = self._frame.decompress(data)
            self._decoded.append(part)
            produced += len(part)
            if not self._frame.eof:
                break
            data = self._frame.unused_data
            self._frame = None
        return produced

    def _next_piece(self) -> bytes:
        if self._input_position >= len(self._input):
            self._input, self._input_position = self._raw.read(_COPY_CHUNK), 0
        piece = self._input[self._input_position : self._input_position + _FEED]
        self._input_position += len(piece)
        return piece

    def read(self, size: int = -1) -> bytes:
        available = len(self._buffer) - self._position
        if size < 0 or available < size:
            while size < 0 or available < size:
                piece = self._next_piece()
                if not piece:
                    if self._frame is not None:
                        raise ArchiveError(
                            "archive is truncated (the last zstd frame is incomplete)"
                        )
                    break
                try:
                    available += self._feed(piece)
                except zstandard.ZstdError as error:
                    raise ArchiveError(f"archive is damaged ({error})") from None
            self._buffer = self._buffer[self._position :] + b"".join(self._decoded)
            self._decoded.clear()
            self._position = 0
            available = len(self._buffer)
        end = self._position + (available if size < 0 else min(size, available))
        data = self._buffer[self._position : end]
        self._position = end
        return data

    def close(self) -> None:
        self._buffer = b""


class _ForwardStream:
    """A decompressed archive stream for ``tarfile`` in random-access mode: ``tell`` and
    forward ``seek`` (by reading on), and no single read above ``limit`` bytes. tarfile's
    streaming mode would read a forged pax or GNU long-name header of any stated size
    into memory whole; in this mode that read comes here, and is refused."""

    def __init__(self, stream: Any, limit: int) -> None:
        self._stream = stream
        self._limit = limit
        self._offset = 0

    def read(self, size: int = -1) -> bytes:
        if size < 0 or size > self._limit:
            raise ArchiveError(f"a tar header claims {size} bytes (hostile or damaged archive)")
        data: bytes = self._stream.read(size)
        self._offset += len(data)
        return data

    def tell(self) -> int:
        return self._offset

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        target = offset if whence == os.SEEK_SET else self._offset + offset
        if whence not in (os.SEEK_SET, os.SEEK_CUR) or target < self._offset:
            raise ArchiveError("the archive asks to be read backwards (damaged or hostile)")
        while self._offset < target:
            if not self.read(min(_COPY_CHUNK, target - self._offset)):
                break
        return self._offset


def _detect(head: bytes) -> str:
    if head.startswith(_GZIP_MAGIC):
        return "gzip"
    if head.startswith(_ZSTD_MAGIC):
        return "zstd"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "none"
    raise ArchiveError("not a backup archive: neither tar, gzip nor zstd")


def _regular(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


class FolderReader(BackupReader):
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.location = str(folder)
        manifest_path = folder / MANIFEST_NAME
        if not _regular(manifest_path):
            raise ArchiveError(f"{folder}: no {MANIFEST_NAME} (not a backup folder, or unfinished)")
        with open(manifest_path, "rb") as handle:
            self.manifest = parse_manifest(handle.read(MAX_MANIFEST_BYTES + 1))

    def members(self) -> Iterator[tuple[CollectionEntry, IO[bytes]]]:
        for entry in self.manifest.data_entries:
            assert entry.file is not None
            path = self.folder / entry.file
            compressed = self.folder / f"{entry.file}.zst"
            # A folder kept because archiving failed holds zstd-compressed members.
            if not _regular(path) and _regular(compressed):
                with open(compressed, "rb") as handle:
                    yield entry, cast(IO[bytes], ZstdFramesReader(handle))
                continue
            if not _regular(path):
                raise ArchiveError(f"{self.folder}: member {entry.file} is missing")
            with open(path, "rb") as handle:
                yield entry, handle


class TarReader(BackupReader):
    def __init__(self, path: Path) -> None:
        self.location = str(path)
        self._file = open(path, "rb")  # noqa: SIM115 - closed in close()
        try:
            head = self._file.read(512)
            self._file.seek(0)
            compression = _detect(head)
            stream: Any = self._file
            if compression == "gzip":
                stream = gzip.GzipFile(fileobj=self._file, mode="rb")
            elif compression == "zstd":
                stream = ZstdFramesReader(self._file)
            self._stream = stream
            forward = _ForwardStream(stream, MAX_MANIFEST_BYTES + _COPY_CHUNK)
            try:  # reads the first header already
                self._tar = tarfile.TarFile(fileobj=cast(IO[bytes], forward), mode="r")
            except (tarfile.TarError, OSError, EOFError, zstandard.ZstdError) as error:
                raise ArchiveError(f"{path}: not a readable archive ({error})") from None
            self._iter = iter(self._tar)
            first = self._next_member()
            if first is None or first.name != MANIFEST_NAME:
                raise ArchiveError(
                    f"{path}: first member is not {MANIFEST_NAME} (foreign archive?)"
                )
            if first.size > MAX_MANIFEST_BYTES:
                raise ArchiveError(f"{path}: {MANIFEST_NAME} is implausibly large")
            handle = self._tar.extractfile(first)
            assert handle is not None
            self.manifest = parse_manifest(self._read_all(handle, first.size))
        except BaseException:
            self.close()
            raise

    def _read_all(self, handle: IO[bytes], size: int) -> bytes:
        try:
            data = handle.read(size)
        except (tarfile.TarError, OSError, EOFError, zstandard.ZstdError) as error:
            raise ArchiveError(f"{self.location}: archive is damaged ({error})") from None
        if len(data) != size:
            raise ArchiveError(f"{self.location}: archive is truncated")
        return data

    def _next_member(self) -> tarfile.TarInfo | None:
        try:
            member = next(self._iter, None)
        except (tarfile.TarError, OSError, EOFError, zstandard.ZstdError) as error:
            raise ArchiveError(f"{self.location}: archive is damaged ({error})") from None
        if member is not None and (not member.isreg() or member.issparse()):
            # A sparse member's holes are filled in by the reader: its size on disk says
            # nothing of what it expands to. Only plain regular files are backups.
            raise ArchiveError(f"{self.location}: member {member.name!r} is not a regular file")
        return member

    def members(self) -> Iterator[tuple[CollectionEntry, IO[bytes]]]:
        for entry in self.manifest.data_entries:
            member = self._next_member()
            if member is None:
                raise ArchiveError(
                    f"{self.location}: member {entry.file} is missing (truncated archive?)"
                )
            if member.name != entry.file:
                raise ArchiveError(
                    f"{self.location}: unexpected member {member.name!r} where {entry.file!r} "
                    "should be (re-ordered, extra or foreign member)"
                )
            handle = self._tar.extractfile(member)
            assert handle is not None
            yield entry, cast(IO[bytes], _GuardedStream(handle, self.location, member.name))
        extra = self._next_member()
        if extra is not None:
            raise ArchiveError(f"{self.location}: unexpected extra member {extra.name!r}")
        self._drain_to_end()

    def _drain_to_end(self) -> None:
        """Read the rest of the decompressed stream: only tar padding may follow, and
        reading to the end makes gzip check its trailer (CRC-32 and length)."""
        try:
            while chunk := self._stream.read(_COPY_CHUNK):
                if chunk.strip(b"\0"):
                    raise ArchiveError(f"{self.location}: data after the end of the archive")
        except (tarfile.TarError, OSError, EOFError, zstandard.ZstdError) as error:
            raise ArchiveError(f"{self.location}: archive is damaged ({error})") from None

    def close(self) -> None:
        for closer in (getattr(self, "_tar", None), getattr(self, "_stream", None), self._file):
            if closer is not None:
                with contextlib.suppress(Exception):
                    closer.close()


class _GuardedStream:
    """A member stream whose read errors become :class:`ArchiveError` (only read())."""

    def __init__(self, inner: IO[bytes], location: str, member: str) -> None:
        self._inner = inner
        self._where = f"{location}: member {member}"

    def read(self, size: int = -1) -> bytes:
        try:
            data = self._inner.read(size)
        except (tarfile.TarError, OSError, EOFError, zstandard.ZstdError) as error:
            raise ArchiveError(f"{self._where}: archive is damaged ({error})") from None
        return data


def open_backup(location: str | os.PathLike[str]) -> BackupReader:
    """A reader for a backup folder or archive file; :class:`ArchiveError` if neither."""
    path = Path(location)
    if path.is_dir():
        if not (path / MANIFEST_NAME).exists() and is_mongodump(path):
            return MongodumpReader(path)
        return FolderReader(path)
    if not path.is_file():
        raise ArchiveError(f"{path}: no such backup archive or folder")
    return TarReader(path)
