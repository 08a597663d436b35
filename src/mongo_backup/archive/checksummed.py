"""Members checked against the manifest as they are read, for a caller that writes while
it reads (a restore in one pass, see :mod:`mongo_backup.restore.one_pass`).

:class:`HashedStream` hashes a member's bytes whatever its caller reads of them and
reads the rest at :meth:`~HashedStream.finish`. :class:`ChecksummedReader` wraps a reader
whose manifest came first (an archive file, a backup folder) and checks every member
against its entry (SHA-256 and size): the read that reaches the member's end raises
:class:`ArchiveError` if it does not match, or ``members`` does, before the next one is
handed on, for a member the caller left unfinished; ``complete`` turns true once every
member has been read and checked. So the caller learns of damage at the end of the
member that holds it, and must undo what it wrote from that member and the ones before.

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
    """A member's stream, hashed as it is read and checked against its manifest entry
    by the read that reaches its end, when the entry is known before the member (not so
    in the streamed form, whose manifest comes last). A caller that reads to the end so
    learns of damage there, before it reports on what it read (a restore's "already
    exists" warnings for documents a damaged member made up)."""

    def __init__(
        self, inner: IO[bytes], entry: CollectionEntry | None = None, location: str = ""
    ) -> None:
        self._inner = inner
        self._entry = entry
        self._location = location
        self._sha256 = hashlib.sha256()
        self._checked = False
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self._inner.read(size)
        if data:
            self._sha256.update(data)
            self.size += len(data)
        elif size != 0 and not self._checked:
            self._checked = True
            self._check()
        return data

    def finish(self) -> str:
        """Read what the caller left of the member (which checks it); its SHA-256."""
        while self.read(_CHUNK):
            pass
        return self._sha256.hexdigest()

    def _check(self) -> None:
        entry = self._entry
        if entry is None:
            return
        if self.size != entry.bytes:
            raise ArchiveError(
                f"{self._location}: {entry.file}: size is {self.size} bytes, the "
                f"manifest says {entry.bytes} (a damaged archive)"
            )
        digest = self._sha256.hexdigest()
        if digest != entry.sha256:
            raise ArchiveError(
                f"{self._location}: {entry.file}: sha256 is {digest}, the manifest says "
                f"{entry.sha256} (a damaged archive)"
            )


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
            handle = HashedStream(stream, entry, str(self.location))
            yield entry, handle  # type: ignore[misc]
            handle.finish()
        self.complete = True

    def close(self) -> None:
        self._inner.close()
