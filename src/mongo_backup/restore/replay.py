"""Restoring a chain: the full backup, then each increment in order, up to ``--until``.

:func:`plan_chain` decides which backups of a chain a restore applies and refuses, before
anything is written, a time the chain cannot reach: earlier than the full backup's point
(its data already holds later writes), or a chain whose full backup has no point at all.

Increments are applied by :func:`apply_increment`: a change-stream increment's events
through :class:`~mongo_backup.mongo.change_apply.ChangeApplier` (the events later than
``--until`` are left out), a ``--since-field`` increment's documents as upserts by
``_id`` (it has no per-document time: it is applied whole if it finished by ``--until``,
else not at all, and it never deletes).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import pymongo.errors
from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp
from pymongo import ReplaceOne
from pymongo.database import Database

from ..archive.chain import Link
from ..archive.lines import read_documents
from ..archive.manifest import CollectionEntry
from ..archive.reader import open_backup
from ..errors import ConfigError
from ..mongo.change_apply import ChangeApplier, Replacement
from ..mongo.cluster_time import from_json, show
from ..mongo.confirmed import confirmed_command
from ..mongo.source import from_extjson
from ..retry import RetryPolicy
from .renames import NO_RENAMES, Renamer

logger = logging.getLogger(__name__)

UPSERT_BATCH = 1000
_CREATE_IGNORED = {48}  # NamespaceExists
_INDEX_IGNORED = {85, 86}  # the same index under another spelling: it is there


@dataclass
class Replay:
    """What was applied on top of the documents: one backup's changes or increment."""

    backup: str
    mode: str  # "changes" (events replayed) or "documents" (upserted by _id)
    counts: dict[str, int] = field(default_factory=dict)
    stopped_at_until: bool = False
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "backup": self.backup,
            "mode": self.mode,
            "counts": self.counts,
            "stopped_at_until": self.stopped_at_until,
            "problems": self.problems,
        }


def point_of(link: Link) -> Timestamp | None:
    point = link.manifest.point
    return from_json(point["cluster_time"]) if point else None


def plan_chain(chain: list[Link], until: Timestamp | None) -> list[Link]:
    """The backups of ``chain`` to apply for ``until`` (None: all of them)."""
    if until is None:
        return chain
    full = chain[0]
    start = point_of(full)
    if start is None:
        raise ConfigError(
            f"--until: {full.path.name} records no cluster time (consistency "
            f"{full.manifest.consistency}), so no point in time can be restored from it"
        )
    if until < start:
        raise ConfigError(
            f"--until {show(until)} is before {full.path.name} is consistent "
            f"({show(start)}): restore an earlier full backup for that time"
        )
    chosen = [full]
    for link in chain[1:]:
        increment = link.manifest.increment or {}
        if increment.get("mode") == "changes":
            if from_json(increment["from"]) >= until:
                break  # every event in it is later than --until
        elif _finished(link) > until.time:
            break
        chosen.append(link)
    return chosen


def _finished(link: Link) -> float:
    try:
        return dt.datetime.fromisoformat(link.manifest.finished_at).timestamp()
    except ValueError:
        return float("inf")


def events_of(stream: IO[bytes], entry: CollectionEntry, checked: bool) -> Iterator[bytes]:
    assert entry.file is not None
    for _number, raw in read_documents(stream, entry.file, checked=checked):
        yield raw


def replay(
    db: Database[Any],
    backup: str,
    events: Iterator[bytes],
    wanted: Callable[[str], bool],
    until: Timestamp | None,
    names: Renamer = NO_RENAMES,
    replacement: Replacement | None = None,
) -> Replay:
    applier = ChangeApplier(db, wanted=wanted, until=until, names=names, replacement=replacement)
    applier.apply_all(events)
    result = Replay(backup, "changes", dict(applier.counts), applier.stopped, applier.problems)
    for problem in applier.problems:
        logger.warning("%s: %s", backup, problem)
    logger.info(
        "%s: %d change events applied%s",
        backup,
        sum(n for kind, n in applier.counts.items() if kind != "skipped"),
        " (stopped at --until)" if applier.stopped else "",
    )
    return result


@contextlib.contextmanager
def spooled(stream: IO[bytes]) -> Iterator[IO[bytes]]:
    """A copy of a member on local disk, to read after the archive has moved on."""
    with tempfile.TemporaryFile(prefix="mongo-backup-changes-") as copy:
        shutil.copyfileobj(stream, copy, 1 << 20)
        copy.seek(0)
        yield copy


def apply_increment(
    db: Database[Any],
    link: Link,
    wanted: Callable[[str], bool],
    until: Timestamp | None,
    checked: bool,
    names: Renamer = NO_RENAMES,
    replacement: Replacement | None = None,
) -> Replay:
    """Apply one increment of a chain to ``db``; ``wanted`` takes the backup's names,
    ``names`` gives the target's (--ns-from/--ns-to); ``replacement``: --drop."""
    mode = (link.manifest.increment or {}).get("mode")
    result = Replay(link.id, "changes" if mode == "changes" else "documents")
    with open_backup(link.path) as reader:
        for entry in reader.manifest.collections:
            if mode == "field" and entry.is_collection and wanted(entry.name):
                if replacement is not None:
                    replacement.before_write(db, names.collection(entry.name))
                _ensure_collection(db, names.entry(entry))
        for entry, stream in reader.members():
            if entry.type == "changes":
                events = events_of(stream, entry, checked)
                return replay(db, link.id, events, wanted, until, names, replacement)
            if not wanted(entry.name):
                continue
            target = names.collection(entry.name)
            result.counts[target] = _upsert(db[target], events_of(stream, entry, checked))
        for entry in reader.manifest.collections:
            if mode == "field" and entry.type != "view" and wanted(entry.name):
                _ensure_indexes(db, names.entry(entry))
    logger.info("%s: %d documents upserted", link.id, sum(result.counts.values()))
    return result


def _upsert(collection: Any, documents: Iterator[bytes]) -> int:
    count = 0
    batch: list[ReplaceOne[Any]] = []
    for raw in documents:
        document = RawBSONDocument(raw)
        batch.append(ReplaceOne({"_id": document["_id"]}, document, upsert=True))
        if len(batch) >= UPSERT_BATCH:
            collection.bulk_write(batch, ordered=True)
            count += len(batch)
            batch = []
    if batch:
        collection.bulk_write(batch, ordered=True)
        count += len(batch)
    return count


def _ensure_collection(db: Database[Any], entry: CollectionEntry) -> None:
    try:
        command = {"create": entry.name, **from_extjson(entry.create_options)}
        confirmed_command(db, db.write_concern, command)
    except pymongo.errors.OperationFailure as error:
        if error.code not in _CREATE_IGNORED:
            raise


def _ensure_indexes(db: Database[Any], entry: CollectionEntry) -> None:
    for spec in entry.secondary_indexes:
        try:
            command = {"createIndexes": entry.name, "indexes": [from_extjson(spec)]}
            confirmed_command(db, db.write_concern, command, RetryPolicy())  # may run twice
        except pymongo.errors.OperationFailure as error:
            if error.code not in _INDEX_IGNORED:
                raise
