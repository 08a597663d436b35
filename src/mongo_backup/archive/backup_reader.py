"""The interface every reader of a backup offers (:mod:`.reader` for our archives and
folders, :mod:`.mongodump` for mongodump's folders, :mod:`.single_file` for one JSON
Lines file): the manifest, then the members in manifest order. Readers that check each
member as it goes by (:mod:`.streamed`, :mod:`.checksummed`) offer a little more."""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO

from .manifest import CollectionEntry, Manifest


class BackupReader:
    """A backup to read: ``manifest``, then :meth:`members` in manifest order."""

    manifest: Manifest
    location: str

    def members(self) -> Iterator[tuple[CollectionEntry, IO[bytes]]]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> BackupReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CheckedAsRead(BackupReader):
    """A backup whose members are checked as they are read, for a caller that writes
    while it reads (:mod:`mongo_backup.restore.one_pass`): ``plan`` is a manifest known
    before the first member; ``members`` raises :class:`ArchiveError` for anything that
    does not match; ``complete`` turns true once every member has been read and checked,
    and ``manifest`` is then the authority."""

    plan: Manifest
    complete: bool = False
