"""Members checked against the manifest as they are read, for a caller that writes while
it reads (a restore in one pass, see :mod:`mongo_backup.restore.one_pass`).

:class:`HashedStream` hashes a member's bytes whatever its caller reads of them and
reads the rest at :meth:`~HashedStream.finish`. :class:`ChecksummedReader` wraps a reader
whose manifest came first (an archive file, a backup folder) and checks every member
against its entry (SHA-256 and size) once the caller is done with it. A member that
does not match raises :class:`ArchiveError` from ``members``, before the next one is
handed on; ``complete`` turns true once every member has been read and checked. So the
caller learns of damage at the end of the member that holds it, and must undo what it
wrote from that member and the ones before.

The check is the verify pass's, less the parse of members nobody reads (a restore of
some collections): their bytes match the checksums, so their lines are those the backup
wrote.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import IO

from ..errors import ArchiveError
from .backup_reader import BackupReader, CheckedAsRead
from .manifest import CollectionEntry, Manifest

_CHUNK = 1 << 20


class HashedStream:
    """A member's stream, hashed as it is read."""

    def __init__(self, inner: IO[bytes]) -> None:
        self._inner = inner
        self._sha256 = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self._inner.read(size)
        self._sha256.update(data)
        self.size += len(data)
        return data

    def finish(self) -> str:
        """Read what the caller left of the member; its SHA-256."""
        while self.read(_CHUNK):
            pass
        return self._sha256.hexdigest()


def can_check(manifest: Manifest) -> bool:
    """Whether every data member of ``manifest`` has a checksum to check (not so for a
    mongodump folder, or a backup that failed for a collection)."""
    entries = manifest.data_entries
    return manifest.counted and all(entry.sha256 is not None for entry in entries)


class ChecksummedReader(CheckedAsRead):
    """``inner``'s members, each checked against its manifest entry once read."""

    def __init__(self, inner: BackupReader) -> None:
        if not can_check(inner.manifest):
            raise ValueError("a manifest without checksums for every member")
        self._inner = inner
        self.location = inner.location
        self.manifest = inner.manifest
        self.plan = inner.manifest  # known from the start, as a stream's plan is
        self.complete = False

    def members(self) -> Iterator[tuple[CollectionEntry, IO[bytes]]]:
        for entry, stream in self._inner.members():
            handle = HashedStream(stream)
            yield entry, handle  # type: ignore[misc]
            digest = handle.finish()
            if handle.size != entry.bytes:
                raise ArchiveError(
                    f"{self.location}: {entry.file}: size is {handle.size} bytes, the "
                    f"manifest says {entry.bytes} (a damaged archive)"
                )
            if digest != entry.sha256:
                raise ArchiveError(
                    f"{self.location}: {entry.file}: sha256 is {digest}, the manifest says "
                    f"{entry.sha256} (a damaged archive)"
                )
        self.complete = True

    def close(self) -> None:
        self._inner.close()
