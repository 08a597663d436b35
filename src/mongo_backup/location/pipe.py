"""Archives through pipes: ``backup --archive -`` writes one to stdout, ``restore -`` and
``verify -`` read one from stdin.

A backup is only known to be whole once its last member's checksum is read, and a
restore must not write anything from a stream that is cut or damaged (the rule for every
archive). So a stream read from stdin is kept in a private temporary file until its end,
then verified and restored from there like any archive file: memory stays flat, and the
disk it takes is the archive's size, released when the command ends.

Contract: :func:`spooled_stdin` yields the path of a complete copy of stdin (named as an
age-encrypted archive when it starts with age's header, so that ``--identity`` applies)
and removes it afterwards; an empty stdin is a ConfigError. :class:`StdoutWriter` writes
bytes to the process's stdout and turns a reader that went away into one ArchiveError
line instead of a BrokenPipeError traceback.
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
from typing import IO

from ..errors import ArchiveError, ConfigError

STDIO = "-"
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
        poller.register(sys.stdout.fileno(), select.POLLERR)
        gone = bool(poller.poll(0))
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
