"""Reading the streamed form of an archive: the plan first, the manifest last.

``backup --archive -`` writes its archive in the order the work happens, so that a
restore at the other end of the pipe starts on the first collection while the backup
still reads the next: ``plan.json`` (a manifest written before the export: every
namespace with its type, member file, options and indexes, no counts or checksums yet),
then each member as its collection is finished, then ``manifest.json``, the authority.

:class:`StreamedReader` reads it front to back from any byte stream (a pipe cannot seek).
``manifest`` is the plan until :meth:`~StreamedReader.members` is exhausted, then the
manifest. Every member is hashed as it goes by, whatever its caller reads of it. When
the manifest arrives, each member must match its entry (SHA-256 and size), no entry may
be missing, the plan must agree with the manifest and nothing may follow; otherwise
:class:`ArchiveError`, raised from ``members``. So a caller that writes while reading
learns only at the end that the stream was whole, and must undo what it wrote when
``members`` raises (see :mod:`mongo_backup.restore.one_pass`).

:func:`open_streamed_file` reads such an archive saved to a file: once to check it and
learn its manifest, then again for its members, in the file's order, under the
manifest's entries (the usual reader contract).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from ..errors import ArchiveError
from .backup_reader import CheckedAsRead
from .checksummed import HashedStream
from .manifest import (
    CHANGES_FILE,
    CHANGES_NAME,
    MANIFEST_NAME,
    PLAN_NAME,
    CollectionEntry,
    Manifest,
    parse_manifest,
)
from .tar_input import TarInput

_HEAD = 512


class StreamedReader(CheckedAsRead):
    """The streamed form from ``raw``; ``manifest``: the one already known (a file read
    twice), else the plan until the members are read."""

    def __init__(self, raw: IO[bytes], location: str, manifest: Manifest | None = None) -> None:
        self.location = location
        self._raw = raw
        head = b""
        while len(head) < _HEAD and (more := raw.read(_HEAD - len(head))):
            head += more  # a pipe may give less than asked: the magic bytes need a block
        self._input = TarInput(raw, head, location)
        try:
            first = self._input.next_member()
            if first is None or first.name != PLAN_NAME:
                raise ArchiveError(f"{location}: first member is not {PLAN_NAME}")
            self.plan = parse_manifest(self._input.read_small(first, PLAN_NAME))
        except BaseException:
            self._input.close()
            raise
        self.manifest = manifest if manifest is not None else self.plan
        self.complete = False  # every member read and checked against the manifest

    def members(self) -> Iterator[tuple[CollectionEntry, IO[bytes]]]:
        entries = {entry.file: entry for entry in self.manifest.data_entries}
        seen: dict[str, tuple[str, int]] = {}
        while True:
            member = self._input.next_member()
            if member is None:
                raise ArchiveError(
                    f"{self.location}: the archive ends before its {MANIFEST_NAME} "
                    "(a cut stream or a truncated file)"
                )
            if member.name == MANIFEST_NAME:
                final = parse_manifest(self._input.read_small(member, MANIFEST_NAME))
                break
            entry = entries.get(member.name)
            if entry is None and member.name == CHANGES_FILE:  # captured after the plan
                entry = CollectionEntry(CHANGES_NAME, "changes", CHANGES_FILE)
            if entry is None or member.name in seen:
                raise ArchiveError(
                    f"{self.location}: unexpected member {member.name!r} "
                    "(extra, repeated or foreign)"
                )
            handle = HashedStream(self._input.open_member(member))
            yield entry, handle  # type: ignore[misc]
            seen[member.name] = (handle.finish(), handle.size)
        self._input.expect_end()
        _check(final, self.plan, seen, self.location)
        self.manifest = final
        self.complete = True

    def close(self) -> None:
        self._input.close()
        with contextlib.suppress(Exception):
            self._raw.close()


def _check(
    final: Manifest, plan: Manifest, seen: dict[str, tuple[str, int]], location: str
) -> None:
    """The members read are those the manifest lists, byte for byte, and the manifest
    describes what the plan announced (what a restore acted on)."""
    if (final.database, final.databases, final.kind, final.backup_id) != (
        plan.database,
        plan.databases,
        plan.kind,
        plan.backup_id,
    ):
        raise ArchiveError(f"{location}: the manifest does not match the archive's plan")
    planned = {entry.name: entry for entry in plan.collections}
    for entry in final.collections:
        before = planned.pop(entry.name, None)
        if before is None and entry.type != "changes":
            raise ArchiveError(f"{location}: {entry.name!r} is in the manifest, not the plan")
        if before is not None and (
            (before.type, before.options, before.indexes)
            != (entry.type, entry.options, entry.indexes)
            or entry.file not in (None, before.file)
        ):
            raise ArchiveError(f"{location}: the manifest and the plan differ on {entry.name!r}")
        if entry.file is None:
            continue
        got = seen.pop(entry.file, None)
        if got is None:
            raise ArchiveError(f"{location}: member {entry.file} is missing")
        if got != (entry.sha256, entry.bytes):
            raise ArchiveError(
                f"{location}: member {entry.file} does not match its checksum (damaged)"
            )
    if planned or seen:
        left = sorted(planned) + sorted(seen)
        raise ArchiveError(f"{location}: {left[0]!r} is in the plan but not the manifest")


# The manifests of streamed-form files read whole once, by (path, size, mtime): a restore
# opens its archive several times (chain, verify, restore), and every reader checks each
# member against the manifest anyway. A few are kept (a long-running process reads many).
_KNOWN: dict[tuple[str, int, int], Manifest] = {}
_KNOWN_MAX = 16


def open_streamed_file(path: Path) -> StreamedReader:
    """A streamed-form archive file: checked once whole, then opened for its members."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    manifest = _KNOWN.get(key)
    if manifest is None:
        with open(path, "rb") as first:
            scan = StreamedReader(first, str(path))
            for _entry, _stream in scan.members():
                pass  # hashed and checked as they go by
            manifest = scan.manifest
        if len(_KNOWN) >= _KNOWN_MAX:
            _KNOWN.pop(next(iter(_KNOWN)))
        _KNOWN[key] = manifest
    return StreamedReader(open(path, "rb"), str(path), manifest)
