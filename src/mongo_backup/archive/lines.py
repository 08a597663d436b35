"""Reading members: Extended JSON lines back to raw BSON documents, a chunk at a time.

:func:`read_documents` is what restore and verify use. It hands whole buffers of lines
to the C converter (``_canonical.decode_lines``), which reads the lines our own encoder
writes ten times cheaper than python-bsonjs and a Python loop; any other line (an escape
line, another tool's JSON, a damaged line, the ``--pretty`` form) takes the python-bsonjs
path of :func:`~.extjson.document_from_line`, with the same result and the same errors.
Without the C converter everything takes that path.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Protocol

import bsonjs

from ..errors import LineFormatError
from .extjson import _unescape_if_escaped, accelerator, document_from_line

# The smallest possible line holds a document of a few bytes; the largest a 16 MiB
# document escaped as base64 (4/3) with room to spare. Longer lines are refused
# instead of being read into memory.
MAX_LINE_BYTES = 64 * 1024 * 1024


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class StreamStats:
    """Bytes and SHA-256 of everything read from a stream, updated a chunk at a time."""

    def __init__(self) -> None:
        self.bytes = 0
        self._hash = hashlib.sha256()

    def update(self, chunk: bytes) -> None:
        self.bytes += len(chunk)
        self._hash.update(chunk)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()


READ_CHUNK = 1 << 20


def iter_lines(
    stream: Readable, member: str, stats: StreamStats | None = None, first: int = 0
) -> Iterator[tuple[int, bytes]]:
    """Yield (line number, line without ``\\n``), splitting on ``\\n`` only.

    Reads big chunks (hashing them on the way) rather than line by line: per-line
    calls would cost more than the parsing. A line longer than :data:`MAX_LINE_BYTES`
    is refused before more of it is read.
    """
    number = first  # lines before the stream's start (read_documents' switch)
    # The line being read, in pieces: a 15 MiB line is joined once, not copied again
    # with every chunk (which held three copies of it at once).
    pieces: list[bytes] = []
    size = 0
    while True:
        chunk = stream.read(READ_CHUNK)
        if not chunk:
            break
        if stats is not None:
            stats.update(chunk)
        newline = chunk.find(b"\n")
        if newline < 0 or pieces:
            head = chunk if newline < 0 else chunk[:newline]
            pieces.append(head)
            size += len(head)
            if size > MAX_LINE_BYTES:
                raise LineFormatError(
                    member, number + 1, f"line longer than {MAX_LINE_BYTES} bytes"
                )
            if newline < 0:
                continue
            number += 1
            yield number, b"".join(pieces)
            pieces, size = [], 0
            chunk = chunk[newline + 1 :]
        lines = chunk.split(b"\n")
        tail = lines.pop()
        if len(tail) > MAX_LINE_BYTES:
            raise LineFormatError(
                member, number + len(lines) + 1, f"line longer than {MAX_LINE_BYTES} bytes"
            )
        if tail:
            pieces, size = [tail], len(tail)
        for line in lines:
            number += 1
            yield number, line
    if pieces:
        yield number + 1, b"".join(pieces)


def iter_document_texts(
    lines: Iterator[tuple[int, bytes]], member: str
) -> Iterator[tuple[int, bytes]]:
    """Group lines into documents: yield (first line number, document text).

    Accepts compact lines (ours, mongoexport's) and the multi-line ``--pretty`` form,
    where a document starts with a line ``{`` and ends with a line ``}``. Blank lines
    are skipped. Raises :class:`LineFormatError` only for problems of structure (a
    document never closed, or too long); parsing is :func:`document_from_line`'s job.
    """
    for number, line in lines:
        stripped = line.strip()
        if not stripped:
            continue
        if stripped != b"{":
            yield number, stripped
            continue
        parts = [line]
        total = len(line)
        for _, more in lines:
            parts.append(more)
            total += len(more)
            if total > MAX_LINE_BYTES:
                raise LineFormatError(
                    member, number, f"document longer than {MAX_LINE_BYTES} bytes"
                )
            if more.rstrip(b"\r") == b"}":
                break
        else:
            raise LineFormatError(member, number, "document not closed before end of file")
        yield number, b"\n".join(parts)


def iter_documents(
    lines: Iterator[tuple[int, bytes]], member: str, checked: bool = False
) -> Iterator[tuple[int, bytes]]:
    """Yield (line number, raw BSON) for every document in a stream of lines.

    ``checked``: every line already passed :func:`document_from_line` (restore's first
    pass), so the second pass skips the shape checks that cost a regex per line.
    """
    for number, text in iter_document_texts(lines, member):
        if checked:
            yield number, _parse_checked(text, member, number)
        else:
            yield number, document_from_line(text, member, number)


def _parse_checked(text: bytes, member: str, number: int) -> bytes:
    try:
        raw: bytes = bsonjs.loads(text)
    except ValueError as error:  # the file changed since it was checked
        raise LineFormatError(member, number, f"not an Extended JSON document ({error})") from None
    return _unescape_if_escaped(raw, member, number)


class _Rest:
    """The rest of a member: ``prefix`` (read and counted already), then ``stream``,
    whose chunks are added to ``stats``."""

    def __init__(self, prefix: bytes, stream: Readable, stats: StreamStats | None) -> None:
        self._prefix, self._stream, self._stats = prefix, stream, stats

    def read(self, size: int = -1) -> bytes:
        if self._prefix:
            prefix, self._prefix = self._prefix, b""
            return prefix
        chunk = self._stream.read(size)
        if self._stats is not None:
            self._stats.update(chunk)
        return chunk


def read_documents(
    stream: Readable,
    member: str,
    stats: StreamStats | None = None,
    on_error: Callable[[LineFormatError], None] | None = None,
    checked: bool = False,
) -> Iterator[tuple[int, bytes]]:
    """Yield (line number, raw BSON) for every document of a member.

    A line that is not a document raises :class:`LineFormatError`, or with ``on_error``
    is passed to it and skipped (verify goes on to report every bad line). Problems of
    structure (a line too long, a ``--pretty`` document never closed) always raise.
    ``checked``: as for :func:`iter_documents`. ``MONGO_BACKUP_NO_ACCELERATOR=1``
    reads every line through python-bsonjs.
    """
    converter = accelerator()
    if converter is None:
        yield from _read_slowly(iter_lines(stream, member, stats), member, on_error, checked)
        return
    decode: Callable[[bytes, int, int], tuple[list[bytes], int]] = converter.decode_lines
    number, tail = 0, b""
    while chunk := stream.read(READ_CHUNK):
        if stats is not None:
            stats.update(chunk)
        buffer = tail + chunk if tail else chunk
        end = buffer.rfind(b"\n") + 1
        tail = buffer[end:]
        if len(tail) > MAX_LINE_BYTES:
            raise LineFormatError(member, number + 1, f"line longer than {MAX_LINE_BYTES} bytes")
        pos = 0
        while pos < end:
            documents, pos = decode(buffer, pos, end)
            for raw in documents:
                number += 1
                yield number, raw
            if pos == end:
                break
            newline = buffer.index(b"\n", pos)
            line = buffer[pos:newline].strip()
            if line == b"{":  # the --pretty form: the line reader from here on
                lines = iter_lines(_Rest(buffer[pos:], stream, stats), member, first=number)
                yield from _read_slowly(lines, member, on_error, checked)
                return
            pos = newline + 1
            number += 1
            if line:
                one = _one_line(line, member, number, on_error, checked)
                if one is not None:
                    yield number, one
    if tail:
        yield from _read_slowly(iter([(number + 1, tail)]), member, on_error, checked)


def _one_line(
    line: bytes,
    member: str,
    number: int,
    on_error: Callable[[LineFormatError], None] | None,
    checked: bool = False,
) -> bytes | None:
    try:
        if checked:
            return _parse_checked(line, member, number)
        return document_from_line(line, member, number)
    except LineFormatError as error:
        if on_error is None:
            raise
        on_error(error)
        return None


def _read_slowly(
    lines: Iterator[tuple[int, bytes]],
    member: str,
    on_error: Callable[[LineFormatError], None] | None,
    checked: bool,
) -> Iterator[tuple[int, bytes]]:
    for number, text in iter_document_texts(lines, member):
        raw = _one_line(text, member, number, on_error, checked)
        if raw is not None:
            yield number, raw
