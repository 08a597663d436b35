"""Archives through pipes: ``backup --archive -`` writes one to stdout, ``restore -`` and
``verify -`` read one from stdin.

A stream in the streamed form ``backup --archive -`` writes (plan first, manifest last:
see archive/streamed.py) is read as it arrives (:func:`open_streamed_stdin`); its reader
checks every member against the manifest at the end, and the commands built on it say
what they do until then (restore/streamed.py). Any other stream on stdin is kept in a
private temporary file until its end, then verified and read from there like any archive
file: memory stays flat, and the disk it takes is the archive's size, released when the
command ends.

Contract: :func:`open_streamed_stdin` returns a reader (or None) and the
:class:`RecordedStdin` that keeps every byte read until ``forget``; :func:`spooled_stdin`
yields the path of a complete copy of stdin, beginning with those bytes (named as an
age-encrypted archive when it starts with age's header, so that ``--identity`` applies),
and removes it afterwards; an empty stdin is a ConfigError. :class:`StdoutWriter` writes
bytes to the process's stdout and turns a reader that went away into one ArchiveError
line instead of a BrokenPipeError traceback; :func:`reader_gone` notices that without
writing.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, cast

from ..archive.encryption import DecryptedStream, identities
from ..archive.streamed import StreamedReader
from ..errors import ArchiveError, ConfigError

STDIO = "-"
_HEAD = 64  # enough to recognise age's header
_AGE_HEADER = b"age-encryption.org/v1"
_CHUNK = 1 << 20


def is_stdio(source: str) -> bool:
    return source == STDIO


def is_encrypted(head: bytes) -> bool:
    """Whether a stream beginning with ``head`` is age-encrypted."""
    return head.startswith(_AGE_HEADER)


def check_stdin() -> None:
    if sys.stdin.buffer.isatty():
        raise ConfigError("reading an archive from stdin ('-'), but stdin is a terminal")


@contextlib.contextmanager
def spooled_stdin(already: bytes = b"") -> Iterator[Path]:
    """A private temporary copy of the archive on stdin; ``already``: its first bytes,
    read from stdin before (a restore that looked at the stream first)."""
    source = sys.stdin.buffer
    check_stdin()
    with tempfile.TemporaryDirectory(prefix="mongo-backup-stdin-") as work:
        path = Path(work) / "stdin.tar"
        with open(path, "wb") as copy:
            head = already + source.read(max(0, len(_AGE_HEADER) - len(already)))
            copy.write(head)
            shutil.copyfileobj(source, copy, _CHUNK)
        if not head:
            raise ConfigError("stdin ('-') is empty: no archive came through the pipe")
        if is_encrypted(head):
            encrypted = path.with_name("stdin.tar.age")
            path.rename(encrypted)
            path = encrypted
        yield path


class RecordedStdin:
    """stdin, every byte read from it kept until :meth:`forget` (a fallback to the
    temporary copy must write them first); :meth:`rewind` reads them again."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.head = bytearray()
        self._keep = True
        self._again = b""

    def read(self, size: int = -1) -> bytes:
        if self._again:
            count = len(self._again) if size < 0 else min(size, len(self._again))
            data, self._again = self._again[:count], self._again[count:]
            return data
        data = self._raw.read(size)
        if self._keep:
            self.head += data
        return data

    def rewind(self) -> None:
        self._again = bytes(self.head)

    def forget(self) -> None:
        self._keep = False
        self.head = bytearray()

    def close(self) -> None:
        pass  # stdin stays open: the fallback reads on


def open_streamed_stdin(identity: Path | None) -> tuple[StreamedReader | None, RecordedStdin]:
    """The archive on stdin, read as it arrives if it is in the streamed form that
    ``backup --archive -`` writes (decrypted on the way with ``identity`` when it is
    age-encrypted); None for anything else (the file form, no or a wrong key, damage:
    the spooled copy's reading says which). Either way, the recorder of what was read."""
    check_stdin()
    stdin = RecordedStdin(sys.stdin.buffer)
    encrypted = is_encrypted(stdin.read(_HEAD))
    stdin.rewind()
    if encrypted and identity is None:
        return None, stdin
    source: Any = stdin
    if encrypted:
        assert identity is not None
        source = DecryptedStream(cast(IO[bytes], stdin), identities(identity), "stdin")
    try:
        return StreamedReader(cast(IO[bytes], source), "stdin"), stdin
    except ArchiveError:
        source.close()
        return None, stdin


class StdoutWriter:
    """stdout as a binary file for an archive; a closed pipe becomes an ArchiveError."""

    def __init__(self, out: IO[bytes] | None = None) -> None:
        self._out = out if out is not None else sys.stdout.buffer
        self.bytes = 0
        # The error raised, kept: a caller between (age encryption) may wrap it in its own.
        self.failure: ArchiveError | None = None

    def write(self, data: bytes) -> int:
        try:
            written = self._out.write(data)
        except OSError as error:
            self.failure = _pipe_error(error)
            raise self.failure from None
        self.bytes += len(data)
        return written if written is not None else len(data)

    def flush(self) -> None:
        try:
            self._out.flush()
        except OSError as error:
            self.failure = _pipe_error(error)
            raise self.failure from None


def reader_gone() -> ArchiveError | None:
    """The error to stop with if stdout is a pipe whose reader has closed it (the write
    end of such a pipe polls POLLERR on Linux), noticed without writing; else None."""
    try:
        poller = select.poll()
        poller.register(1, select.POLLERR)  # the descriptor the archive is written to
        gone = any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no poll(), no file descriptor
        return None
    return _pipe_error(OSError(errno.EPIPE, "Broken pipe")) if gone else None


def _pipe_error(error: OSError) -> ArchiveError:
    if error.errno in (errno.EPIPE, errno.ECONNRESET):  # BrokenPipeError is EPIPE
        # Python would print another error at exit flushing the dead pipe: point
        # stdout at /dev/null so that the one line below is all the user sees.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return ArchiveError("the archive's reader closed the pipe before the end (stdout)")
    return ArchiveError(f"writing the archive to stdout: {error.strerror or error}")
