"""The interface every reader of a backup offers (:mod:`.reader` for our archives and
folders, :mod:`.mongodump` for mongodump's folders, :mod:`.single_file` for one JSON
Lines file): the manifest, then the members in manifest order."""

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
