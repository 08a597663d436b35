"""Which moment a backup reflects, and the change events that get it there.

On a replica set or sharded cluster, a full backup:

1. before reading, notes a change stream position and the majority-committed cluster
   time T0 (:func:`begin`), and reads every collection at T0 with read concern
   ``snapshot`` (``MongoSource.snapshot_at``);
2. afterwards (:func:`finish`): if every read was answered at T0 (checked by
   :class:`~mongo_backup.mongo.cluster_time.SnapshotCheck`), the backup is a snapshot at T0
   (guarantee ``snapshot``). If not (the reads outlived the server's snapshot window,
   the server does not keep snapshots, or the backup was resumed), it captures the
   change events from T0 to the majority point at the end into the ``~changes.jsonl``
   member, as ``mongodump --oplog`` does; restore replays them after the documents, so
   the restored data is the source at that end point (guarantee ``oplog``). If that
   history is gone too, the guarantee is ``none``, with a warning.

A standalone server has no cluster time: guarantee ``none``, warned once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp
from pymongo import MongoClient

from ..archive.extjson import BatchEncoder
from ..archive.manifest import CHANGES_FILE, CHANGES_NAME, CollectionEntry
from ..archive.writer import MemberWriter, remove_member
from ..errors import MongoBackupError
from ..mongo.change_capture import Captured, ChangeFollower, capture, stream_position
from ..mongo.cluster_time import (
    SnapshotCheck,
    from_json,
    latest_point,
    majority_point,
    show,
    to_json,
)
from ..mongo.source import MongoSource, from_extjson, to_extjson
from ..names import ALL_DATABASES
from .checkpoint import Plan, save_plan

logger = logging.getLogger(__name__)

ENCODE_BYTES = 1 << 20  # raw events gathered before they are converted and written


@dataclass
class Outcome:
    consistency: str  # "snapshot", "oplog" or "none"
    point: dict[str, Any] | None  # {"cluster_time", "resume_token"}
    changes: CollectionEntry | None  # the captured events' member, if any


def begin(
    client: MongoClient[Any], source: MongoSource, topology: str
) -> tuple[dict[str, Any], str | None]:
    """The plan's ``consistency``: where the backup starts in the server's history, and
    a warning to log once the database is known to be readable (None if all is well).
    The reads are pointed at the start time here (``source.snapshot_at``)."""
    if topology == "standalone":
        return {}, None
    try:
        # A passing fault is ridden out; a refusal (roles, a server without change
        # streams) leaves the backup without the guarantee, said once.
        token = source.retrying("opening a change stream", lambda: stream_position(source.db))
    except MongoBackupError as error:
        return {}, f"{error}: the backup is not tied to one moment (consistency: none)"
    start = majority_point(client, source.secrets, source.policy)
    if start is None:
        return {}, None
    source.snapshot_at = start
    return {"start": to_json(start), "start_token": to_extjson(token), "snapshot": True}, None


def mark_listed(source: MongoSource, state: dict[str, Any]) -> None:
    """Note when the namespaces were listed: a collection created, dropped or renamed
    between the start and then would be missing from a snapshot (see :func:`finish`)."""
    if state:
        listed = majority_point(source.client, source.secrets, source.policy)
        state["listed"] = to_json(listed) if listed is not None else state["start"]


_DDL_EVENTS = {"create", "drop", "rename", "dropDatabase"}


def _ddl_after_start(source: MongoSource, state: dict[str, Any], token: dict[str, Any]) -> bool:
    """True if a collection was created, dropped or renamed between the start token and
    the listing of the namespaces."""
    seen: list[str] = []

    def sink(raw: bytes) -> None:
        kind = RawBSONDocument(raw)["operationType"]
        if kind in _DDL_EVENTS:
            seen.append(kind)

    capture(
        source.db,
        start_token=token,
        after=from_json(state["start"]),
        until=from_json(state.get("listed", state["start"])),
        sink=sink,
        wanted=lambda name: True,
        secrets=source.secrets,
        policy=source.policy,
    )
    return bool(seen)


class ListingCheck:
    """:func:`_ddl_after_start`, asked on a thread while the documents are read: it looks
    only at the history between the start and the listing, both behind us once the plan
    is made, and its last getMore waits out the change stream's await time (10 ms), which
    a backup otherwise spent after its last document.

    :meth:`start` is called when the first unit is exported (``UnitRunner``'s
    ``after_first_unit``): every worker has had its first batch by then, so the check
    delays no ``find``, and a backup of several collections still has reads left to
    hide it behind. It starts nothing when ``needed`` says the answer will not be asked
    for (the reads were not at the snapshot). :meth:`changed` gives the answer (or
    raises the check's error) at :func:`finish`, asking it there if it never started."""

    def __init__(
        self, source: MongoSource, plan: Plan, needed: Callable[[], bool] = lambda: True
    ) -> None:
        self._source, self._state, self._needed = source, plan.consistency, needed
        self._answer: bool | BaseException = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None or not (self._state.get("snapshot") and self._needed()):
            return
        thread = threading.Thread(target=self._ask, name="listing-check", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # no thread to be had: changed() asks it, as it did before
            return
        self._thread = thread

    def _ask(self) -> None:
        try:
            token = from_extjson(self._state["start_token"])
            self._answer = _ddl_after_start(self._source, self._state, token)
        except BaseException as error:  # raised again by changed(), on the caller's thread
            self._answer = error

    def changed(self) -> bool:
        """True if a collection was created, dropped or renamed while the plan was made."""
        if self._thread is None:
            self._ask()
        else:
            self._thread.join()
        if isinstance(self._answer, BaseException):
            raise self._answer
        return self._answer


def start_reads(plan: Plan, resumed: bool, folder: Path) -> None:
    """Called right before the first document is read. A resumed backup is no snapshot:
    the first run's reads may not have been at one moment, so the changes are captured
    instead (its reads are at no snapshot time: only :func:`begin`, for a new plan,
    points them at the start time)."""
    if resumed and plan.consistency.get("snapshot"):
        plan.consistency["snapshot"] = False
        save_plan(folder, plan)


def finish(
    client: MongoClient[Any],
    source: MongoSource,
    folder: Path,
    plan: Plan,
    check: SnapshotCheck,
    wanted: Callable[[str], bool],
    listing: ListingCheck | None = None,
) -> Outcome:
    """The guarantee of a full backup whose collections are all read; ``listing``: the
    check of the listing, started beside the reads (else it is asked here)."""
    state = plan.consistency
    if not state:
        return Outcome("none", None, None)
    start = from_json(state["start"])
    token = from_extjson(state["start_token"])
    snapshot = state.get("snapshot") and check.honoured and not source.snapshot_lost
    if snapshot and (listing or ListingCheck(source, plan)).changed():
        logger.info("collections changed while they were listed: capturing the changes")
        snapshot = False
    if snapshot:
        logger.info("consistent snapshot at cluster time %s", show(start))
        return Outcome(
            "snapshot", {"cluster_time": state["start"], "resume_token": to_extjson(token)}, None
        )
    until = latest_point(client, source.secrets, source.policy)
    if until is None:
        return Outcome("none", None, None)
    renamed = _RenameWatch({intent["name"] for intent in plan.intents}, plan.database)
    try:
        entry, captured = write_changes(
            source,
            folder,
            plan,
            token=token,
            after=start,
            until=until,
            wanted=wanted,
            observe=renamed,
        )
    except MongoBackupError as error:
        logger.warning(
            "the changes made during the backup cannot be read (%s): the backup is not "
            "consistent at one moment (consistency: none)",
            error,
        )
        return Outcome("none", None, None)
    if renamed.names:
        # The documents read under the old name may be any part of them: no replay
        # makes that one moment (mongodump --oplog refuses such dumps too).
        logger.warning(
            "%s renamed while the backup ran: the backup is not consistent at one moment "
            "(consistency: none); run it again for a consistent one",
            ", ".join(repr(name) for name in renamed.names),
        )
        if entry is not None:
            remove_member(folder, CHANGES_FILE, plan.layout.compress, plan.layout.keep_folder)
        return Outcome("none", None, None)
    logger.info(
        "consistent at cluster time %s: %d changes made during the backup are captured",
        show(until),
        captured.events,
    )
    point = {"cluster_time": to_json(until), "resume_token": to_extjson(captured.token)}
    return Outcome("oplog", point, entry)


class _RenameWatch:
    """Collects the listed collections renamed while the backup ran (unless created
    during it: then all their documents are in the changes)."""

    def __init__(self, listed: set[str], db: str) -> None:
        self.listed = set(listed)
        self.db = db  # ALL_DATABASES: the listed names are namespaces
        self.names: list[str] = []

    def __call__(self, raw: bytes) -> None:
        event = RawBSONDocument(raw)
        kind = event["operationType"]
        namespace = event.get("ns") or {}
        name = str(namespace.get("coll") or "")
        if self.db == ALL_DATABASES:
            name = f"{namespace.get('db')}.{name}"
        if kind == "create":
            self.listed.discard(name)
        elif kind == "rename" and name in self.listed and name not in self.names:
            self.names.append(name)


def write_changes(
    source: MongoSource,
    folder: Path,
    plan: Plan,
    *,
    token: dict[str, Any],
    after: Timestamp,
    until: Timestamp,
    wanted: Callable[[str], bool],
    observe: Callable[[bytes], None] | None = None,
    max_bytes: int | None = None,
    follower: ChangeFollower | None = None,
) -> tuple[CollectionEntry | None, Captured]:
    """Capture the events after ``token`` (taken at ``after``) up to ``until`` into the
    changes member of ``folder``; no member (None) when there are none."""
    layout = plan.layout
    writer = MemberWriter(folder, CHANGES_FILE, layout.compress, layout.keep_folder)
    # Canonical whatever the backup's format: replaying needs every type exactly.
    encoder = BatchEncoder("canonical", layout.pretty)
    pending: list[bytes] = []
    size = count = 0

    def write_pending() -> None:
        nonlocal size, count
        text, documents = encoder.encode(b"".join(pending))
        writer.write(text)
        count += documents
        pending.clear()
        size = 0

    def sink(raw: bytes) -> None:
        nonlocal size
        if observe is not None:
            observe(raw)
        pending.append(raw)
        size += len(raw)
        if size >= ENCODE_BYTES:
            write_pending()

    try:
        captured = capture(
            source.db,
            start_token=token,
            after=after,
            until=until,
            sink=sink,
            wanted=wanted,
            secrets=source.secrets,
            max_bytes=max_bytes,
            policy=source.policy,
            follower=follower,
            batches=observe is None,  # the sink below takes concatenated events
        )
        if pending:
            write_pending()
        writer.close()
    except BaseException:
        writer.discard()
        raise
    if count == 0:  # nothing changed: no member (the data is already that moment's)
        writer.discard()
        return None, captured
    entry = CollectionEntry(
        name=CHANGES_NAME,
        type="changes",
        file=CHANGES_FILE,
        count=count,
        bytes=writer.bytes,
        sha256=writer.sha256,
        escaped=encoder.escaped,
    )
    return entry, captured


def capture_increment(
    source: MongoSource,
    folder: Path,
    plan: Plan,
    wanted: Callable[[str], bool],
    follower: ChangeFollower | None = None,
) -> Outcome:
    """A change-stream increment: the events since the base backup's point (up to the
    plan's ``max_bytes`` of them, if it sets one: ``watch --max-increment-bytes``), read
    through ``follower`` when the caller keeps one open between increments."""
    assert plan.increment is not None
    until = latest_point(source.client, source.secrets, source.policy)
    if until is None:
        raise MongoBackupError("a change-stream increment needs a replica set or sharded cluster")
    after = from_json(plan.increment["from"])
    token = from_extjson(plan.increment["start_token"])
    entry, captured = write_changes(
        source,
        folder,
        plan,
        token=token,
        after=after,
        until=until,
        wanted=wanted,
        max_bytes=plan.increment.get("max_bytes"),
        follower=follower,
    )
    until = captured.reached
    logger.info("%d changes from %s to %s", captured.events, show(after), show(until))
    point = {"cluster_time": to_json(until), "resume_token": to_extjson(captured.token)}
    return Outcome("oplog", point, entry)
