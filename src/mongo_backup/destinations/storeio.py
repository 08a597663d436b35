"""The byte streams between this process and obstore: uploads written chunk by chunk,
and ranged reads seen as a binary file.

:class:`Upload` drives one multipart upload through obstore's ``WritableFile``, whose
parts are all ``buffer_size`` bytes (see :mod:`.objectstore` for why the upload is
driven from Python). It counts what it sends, stops with :class:`TooLarge` before the
store's part limit, and wraps store failures in :class:`StoreFailed` so that they stay
apart from the caller's own exceptions.

:class:`RangedReader` serves ``read`` from obstore's ``ReadableFile`` (ranged GETs of a
fixed size) and turns its failures into DestinationError.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import DestinationError

if TYPE_CHECKING:
    from obstore import ReadableFile, WritableFile

# Each write is a round trip into obstore's runtime: small chunks are joined first.
WRITE_SIZE = 1024 * 1024


class TooLarge(DestinationError):
    """The stream outgrew what MAX_PARTS parts of the chosen size hold."""


class StoreFailed(DestinationError):
    """The store refused a chunk or the completion (``cause`` says why)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class Upload:
    """One multipart upload through obstore's WritableFile: counts the bytes, stops
    past ``limit``, and joins small chunks into writes of at least ``WRITE_SIZE``
    (each write is a round trip into obstore's runtime)."""

    def __init__(self, writer: WritableFile, *, limit: int) -> None:
        self.writer = writer
        self.limit = limit
        self.size = 0
        self._pending: list[bytes] = []
        self._pending_size = 0

    def send(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            raise TooLarge()
        self._pending.append(chunk)
        self._pending_size += len(chunk)
        if self._pending_size >= WRITE_SIZE:
            self._write_pending()

    def finish(self) -> None:
        self._write_pending()
        try:
            self.writer.close()
        except Exception as error:
            raise StoreFailed(error) from error

    def _write_pending(self) -> None:
        if not self._pending:
            return
        block = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        self._pending_size = 0
        try:
            self.writer.write(block)
        except Exception as error:
            raise StoreFailed(error) from error


class RangedReader(io.RawIOBase):
    """obstore's ReadableFile (ranged GETs) as a raw binary file; its failures become
    DestinationError."""

    def __init__(
        self, reader: ReadableFile, translate: Callable[[BaseException], DestinationError]
    ) -> None:
        super().__init__()
        self._reader = reader
        self._translate = translate

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        try:
            data = self._reader.read(len(buffer))
        except Exception as error:
            raise self._translate(error) from None
        view = memoryview(data)
        memoryview(buffer).cast("B")[: len(view)] = view
        return len(view)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        try:
            return self._reader.seek(offset, whence)
        except Exception as error:
            raise self._translate(error) from None

    def tell(self) -> int:
        return self._reader.tell()

    def close(self) -> None:
        if not self.closed:
            self._reader.close()
        super().close()
