"""The tar underneath every archive reader: decompression and member headers, checked.

:class:`TarInput` reads one tar front to back from a byte stream (a file or a pipe, in
any of the three compressions, recognised by magic bytes), with the guards every reader
needs: a decompression bomb or a forged header cannot make a read allocate more than a
bound, a cut zstd frame fails instead of ending quietly, and only plain regular members
are accepted. Every error of the tar, the decompressor or the stream becomes one
:class:`ArchiveError` naming ``location``.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import tarfile
import zlib
from typing import IO, Any, cast

import zstandard

from ..errors import ArchiveError
from .manifest import MAX_MANIFEST_BYTES

_COPY_CHUNK = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# zlib.error: a damaged gzip stream (GzipFile lets it through as it is).
_TAR_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error, zstandard.ZstdError)


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


class _GuardedStream:
    """A member stream whose read errors become :class:`ArchiveError` (only read())."""

    def __init__(self, inner: IO[bytes], location: str, member: str) -> None:
        self._inner = inner
        self._where = f"{location}: member {member}"

    def read(self, size: int = -1) -> bytes:
        try:
            data = self._inner.read(size)
        except _TAR_ERRORS as error:
            raise ArchiveError(f"{self._where}: archive is damaged ({error})") from None
        return data


class _Prefixed(io.RawIOBase):
    """``head`` (bytes already read to recognise the stream), then the rest of ``raw``."""

    def __init__(self, head: bytes, raw: IO[bytes]) -> None:
        self._head = head
        self._raw = raw

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._head:
            if size < 0:
                data, self._head = self._head + self._raw.read(), b""
                return data
            data, self._head = self._head[:size], self._head[size:]
            return data
        return self._raw.read(size)


class TarInput:
    """The members of the tar in ``raw`` (``head``: its first bytes, already read)."""

    def __init__(self, raw: IO[bytes], head: bytes, location: str) -> None:
        self.location = location
        source = cast(IO[bytes], _Prefixed(head, raw))
        compression = _detect(head)
        stream: Any = source
        if compression == "gzip":
            stream = gzip.GzipFile(fileobj=source, mode="rb")
        elif compression == "zstd":
            stream = ZstdFramesReader(source)
        self._stream = stream
        forward = _ForwardStream(stream, MAX_MANIFEST_BYTES + _COPY_CHUNK)
        try:  # reads the first header already
            self._tar = tarfile.TarFile(fileobj=cast(IO[bytes], forward), mode="r")
        except _TAR_ERRORS as error:
            raise ArchiveError(f"{location}: not a readable archive ({error})") from None
        self._iter = iter(self._tar)

    def next_member(self) -> tarfile.TarInfo | None:
        try:
            member = next(self._iter, None)
        except _TAR_ERRORS as error:
            raise ArchiveError(f"{self.location}: archive is damaged ({error})") from None
        if member is not None and (not member.isreg() or member.issparse()):
            # A sparse member's holes are filled in by the reader: its size on disk says
            # nothing of what it expands to. Only plain regular files are backups.
            raise ArchiveError(f"{self.location}: member {member.name!r} is not a regular file")
        return member

    def open_member(self, member: tarfile.TarInfo) -> IO[bytes]:
        handle = self._tar.extractfile(member)
        assert handle is not None
        return cast(IO[bytes], _GuardedStream(handle, self.location, member.name))

    def read_small(self, member: tarfile.TarInfo, what: str) -> bytes:
        """A member read whole: a manifest or a plan, bounded."""
        if member.size > MAX_MANIFEST_BYTES:
            raise ArchiveError(f"{self.location}: {what} is implausibly large")
        handle = self._tar.extractfile(member)
        assert handle is not None
        try:
            data = handle.read(member.size)
        except _TAR_ERRORS as error:
            raise ArchiveError(f"{self.location}: archive is damaged ({error})") from None
        if len(data) != member.size:
            raise ArchiveError(f"{self.location}: archive is truncated")
        return data

    def expect_end(self) -> None:
        """No member may follow; then only tar padding, and reading to the end makes
        gzip check its trailer (CRC-32 and length)."""
        extra = self.next_member()
        if extra is not None:
            raise ArchiveError(f"{self.location}: unexpected extra member {extra.name!r}")
        try:
            while chunk := self._stream.read(_COPY_CHUNK):
                if chunk.strip(b"\0"):
                    raise ArchiveError(f"{self.location}: data after the end of the archive")
        except _TAR_ERRORS as error:
            raise ArchiveError(f"{self.location}: archive is damaged ({error})") from None

    def close(self) -> None:
        for closer in (self._tar, self._stream):
            with contextlib.suppress(Exception):
                closer.close()
