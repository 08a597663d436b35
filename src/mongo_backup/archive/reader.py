"""The archive edge, reading side (writing is in :mod:`.writer`).

Reading (:func:`open_backup`): one interface over a backup folder and a tar archive in
any of the three compressions (recognised by magic bytes, not by name). Members are
streamed; nothing is unpacked to disk. A reader refuses, with :class:`ArchiveError`,
anything this tool would not have written: a first member other than the manifest (or
the plan of the streamed form a pipe carries, read by :mod:`.streamed`), members out of
manifest order, missing or extra or duplicate members, links, devices, paths with
directories or ``..``. The tar and its compression are read by :mod:`.tar_input`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, cast

from ..errors import ArchiveError
from .backup_reader import BackupReader as BackupReader  # the interface, re-exported
from .manifest import (
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    PLAN_NAME,
    CollectionEntry,
    parse_manifest,
)
from .mongodump import MongodumpReader, is_mongodump
from .streamed import open_streamed_file
from .tar_input import TarInput, ZstdFramesReader


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
    """An archive file whose first member is its manifest: members in manifest order."""

    def __init__(self, path: Path) -> None:
        self.location = str(path)
        self._file = open(path, "rb")  # noqa: SIM115 - closed in close()
        self._input: TarInput | None = None
        try:
            self._input = TarInput(self._file, self._file.read(512), self.location)
            first = self._input.next_member()
            # The streamed form (see :mod:`.streamed`): open_backup reads it instead.
            self.plan_first = first is not None and first.name == PLAN_NAME
            if self.plan_first:
                return
            if first is None or first.name != MANIFEST_NAME:
                raise ArchiveError(
                    f"{path}: first member is not {MANIFEST_NAME} (foreign archive?)"
                )
            self.manifest = parse_manifest(self._input.read_small(first, MANIFEST_NAME))
        except BaseException:
            self.close()
            raise

    def members(self) -> Iterator[tuple[CollectionEntry, IO[bytes]]]:
        assert self._input is not None
        for entry in self.manifest.data_entries:
            member = self._input.next_member()
            if member is None:
                raise ArchiveError(
                    f"{self.location}: member {entry.file} is missing (truncated archive?)"
                )
            if member.name != entry.file:
                raise ArchiveError(
                    f"{self.location}: unexpected member {member.name!r} where {entry.file!r} "
                    "should be (re-ordered, extra or foreign member)"
                )
            yield entry, self._input.open_member(member)
        self._input.expect_end()

    def close(self) -> None:
        if self._input is not None:
            self._input.close()
        with contextlib.suppress(Exception):
            self._file.close()


def open_backup(location: str | os.PathLike[str]) -> BackupReader:
    """A reader for a backup folder or archive file; :class:`ArchiveError` if neither."""
    path = Path(location)
    if path.is_dir():
        if not (path / MANIFEST_NAME).exists() and is_mongodump(path):
            return MongodumpReader(path)
        return FolderReader(path)
    if not path.is_file():
        raise ArchiveError(f"{path}: no such backup archive or folder")
    reader = TarReader(path)
    if reader.plan_first:
        reader.close()
        return open_streamed_file(path)
    return reader
