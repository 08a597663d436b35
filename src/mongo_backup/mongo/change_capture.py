"""Capturing a database's change events between two points of its history.

Used twice: by a full backup whose reads were not one snapshot (the changes made while
it ran, as ``mongodump --oplog`` records them, so that restore can bring the data to
the moment it ended), and by ``backup --incremental`` (the changes since the previous
backup). Both read a change stream of the database with ``showExpandedEvents``, so
collection events (create, drop, rename, index changes) come with the document events.

Contracts:
- :func:`stream_position` returns a resume token from which a later stream delivers
  every event committed after the moment it was called.
- :func:`capture` resumes after ``start_token`` (a resume token, so that a server that
  pruned that history says so: ChangeStreamHistoryLost becomes :class:`HistoryLost`,
  never a silent gap), hands every event after it up to and including ``until`` to
  ``sink`` as raw BSON, and returns the token to continue after the last one. The token,
  never a cluster time, says where a capture begins: a server may hand out a time (the
  ``after`` of a backup's point, ``until`` here) while a write with an earlier time is
  still committing, and show that write in the stream only later (an "oplog hole":
  SecantusDB does under concurrent writes). Skipped by its time, such a write would be
  in neither backup; taken from the token, it is in the next one. The events between
  a full backup's start token and its snapshot time, which its documents already hold,
  are so replayed once more on restore, harmlessly (as ``mongorestore --oplogReplay``
  replays the oplog from before a dump began). ``until`` is a time the server has applied
  (:func:`~mongo_backup.mongo.cluster_time.latest_point`); change streams show only
  majority-committed events, so the stream is read until its position passes ``until``
  (MongoDB's resume tokens say where the stream stands) or, on servers whose tokens do
  not, until it has nothing more. With ``max_bytes``, capture stops early: once the
  events handed on reach that size, it takes the rest of the events at the same cluster
  time (a transaction's events share one; an increment never ends inside it) and stops;
  :attr:`Captured.reached` is then the cluster time of the last event taken, and a later
  capture from the returned token continues with no gap.
- A transient fault (a closed connection, a stall, a step-down) is retried per
  ``policy``: the stream is opened again after the last event handed on, so the sink
  sees every event once.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pymongo.errors
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp
from pymongo.database import Database

from ..errors import HistoryLost, MongoBackupError
from ..names import keep_all
from ..retry import NO_RETRIES, RetryPolicy, driver_error_text, is_transient
from .change_events import event_fields, event_kind_and_time, time_key, token_time
from .deployment import DeploymentDatabase

logger = logging.getLogger(__name__)

HISTORY_LOST_CODES = {280, 286}  # ChangeStreamFatalError, ChangeStreamHistoryLost
# How long a getMore waits for events not there yet. Where tokens carry a time (MongoDB) a
# capture ends once the stream passes ``until``; where not (SecantusDB), with one empty
# getMore, and as that server shows the oplog only up to the oldest write still committing,
# the wait lets such a write (at or before ``until``) into this capture: 1 ms let more slip
# to the next increment, 200 ms was a ninth of a small backup's wall.
AWAIT_MS = 10
SHORT_PAUSE = 0.1  # between empty batches short of ``until``: no getMore spin (idle shard)
# Events asked per batch. A watch reads an interval's events in a burst; without it some
# servers answer ~100 at a time, and a getMore costs as much client CPU as ~50 events.
# (The server still caps a batch at 16 MiB.)
BATCH_EVENTS = 10_000
# How long the stream may show no progress towards ``until`` before capture gives up.
STALL_SECONDS = 60.0
_RAW = CodecOptions(document_class=RawBSONDocument)


@dataclass
class Captured:
    events: int  # handed to the sink
    skipped: int  # read but not wanted (other collections)
    token: dict[str, Any]  # resume token after the last event up to ``until``
    reached: Timestamp  # ``until``, or where ``max_bytes`` stopped the capture
    handed: int = 0  # bytes handed to the sink
    full_at: Timestamp | None = None  # the cluster time at which max_bytes was reached


def _plain(token: Any) -> dict[str, Any]:
    return {key: token[key] for key in token}


def stream_position(db: Database[Any]) -> dict[str, Any]:
    """A resume token for "now": a stream resumed after it sees every event committed
    later. A token a little older is as good: the few events between it and the data
    read next are replayed once more on restore (and no ``getMore`` is needed for it)."""
    with db.with_options(codec_options=_RAW).watch(
        show_expanded_events=True, max_await_time_ms=AWAIT_MS
    ) as stream:
        token = stream.resume_token  # the position after an empty first batch
        if token is None:
            # Events came with the first batch (a server that answers the opening
            # aggregate with them): they were committed before the data is read next.
            first = stream.try_next()
            token = first["_id"] if first is not None else stream.resume_token
    if token is None:  # pragma: no cover - servers always send a post-batch token
        raise MongoBackupError("the server gave no change stream position")
    return _plain(token)


class ChangeFollower:
    """A change stream of one database kept open from one capture to the next (``watch``
    takes an increment every few seconds): a capture that starts where the previous one
    ended reads on from the same cursor, without a new ``aggregate``, beginning with the
    event the previous one read past its ``until`` and held back. Any other start, or a
    fault, opens a new stream.

    The stream is a plain ``aggregate`` cursor of raw events (not pymongo's
    ``ChangeStream``, which decodes every event's top level to note its token): the
    capture reads the few fields it needs from the bytes (:mod:`.change_events`), and
    resuming after a fault is the capture's own (after the last event handed on)."""

    def __init__(self) -> None:
        self._db: Database[Any] | None = None
        self._cursor: Any = None
        self._held: list[RawBSONDocument] = []
        self.token: dict[str, Any] | None = None  # after the last event handed on

    def open(self, db: Database[Any], token: dict[str, Any]) -> None:
        """Be at ``token`` of ``db``'s stream: the open one if it stands there."""
        if self._cursor is not None and self._db == db and self.token == token:
            return
        self.close()
        self._db = db.with_options(codec_options=_RAW)
        stage = {"startAfter": token, "showExpandedEvents": True}
        self._cursor = self._db.aggregate(
            [{"$changeStream": stage}], maxAwaitTimeMS=AWAIT_MS, batchSize=BATCH_EVENTS
        )
        self.token = token

    def next_batch(self) -> list[RawBSONDocument]:
        """The events held back, else the next batch the server sends (at most one
        ``getMore``); [] when it has none yet."""
        if self._held:
            held, self._held = self._held, []
            return held
        first: RawBSONDocument | None = self._cursor.try_next()
        if first is None:
            return []
        # The rest of the batch pymongo holds (taken at once: one Python step per batch,
        # not per event). Without that attribute, batches of one: slower, as correct.
        rest = getattr(self._cursor, "_data", None)
        batch = [first]
        if rest:
            batch.extend(rest)
            rest.clear()
        return batch

    def buffered(self) -> bool:
        """Whether events are at hand without asking the server (held, or left in the
        cursor's current batch)."""
        return bool(self._held) or bool(getattr(self._cursor, "_data", None))

    def hold(self, events: list[RawBSONDocument]) -> None:
        """Keep ``events`` (past this capture's end) for the next capture."""
        self._held = events

    @property
    def position(self) -> Any:
        """The server's position after the last (empty) batch: how far it has looked.
        (pymongo keeps it on the cursor for its own change streams.)"""
        return getattr(self._cursor, "_post_batch_resume_token", None)

    def restart_after(self, token: dict[str, Any]) -> None:
        """A new stream after ``token`` (an invalidate event ends a stream)."""
        assert self._db is not None
        db = self._db
        self.close()
        self.open(db, token)

    def close(self) -> None:
        if self._cursor is not None:
            with contextlib.suppress(pymongo.errors.PyMongoError):
                self._cursor.close()
        self._cursor, self._held, self.token = None, [], None


def capture(
    db: Database[Any],
    *,
    start_token: dict[str, Any],
    after: Timestamp,
    until: Timestamp,
    sink: Callable[[bytes], None],
    wanted: Callable[[str], bool],
    secrets: list[str],
    max_bytes: int | None = None,
    policy: RetryPolicy = NO_RETRIES,
    follower: ChangeFollower | None = None,
    batches: bool = False,
) -> Captured:
    """Hand ``sink`` the raw BSON of every event after ``start_token`` up to ``until``
    whose collection is ``wanted``; see the module's contracts (``after``, the point the
    token was taken for, only names the history in errors). With ``follower`` (kept by the
    caller from one capture to the next) its stream stays open afterwards. With
    ``batches`` the sink may get several events at once, concatenated."""
    progress = Captured(0, 0, start_token, until)
    own = follower is None
    stream = follower or ChangeFollower()
    attempt = 0
    try:
        while True:
            try:
                window = _Window(progress, until, sink, wanted, max_bytes, batches)
                window.namespaced = isinstance(db, DeploymentDatabase)
                return _capture(db, stream, window)
            except pymongo.errors.PyMongoError as error:
                stream.close()  # the retry opens a new stream after the last event taken
                text = driver_error_text(error, secrets)
                if getattr(error, "code", None) in HISTORY_LOST_CODES:
                    raise HistoryLost(
                        f"the change history since {after.time}:{after.inc} is no longer on "
                        f"the server ({text}): a full backup is needed"
                    ) from None
                attempt += 1
                if not is_transient(error) or attempt > policy.retries:
                    raise MongoBackupError(f"reading the change stream: {text}") from None
                delay = policy.delay(attempt)
                logger.warning(
                    "reading the change stream: %s; retry %d of %d in %.1f s, after the "
                    "last event read",
                    text,
                    attempt,
                    policy.retries,
                    delay,
                )
                time.sleep(delay)
            except BaseException:
                stream.close()
                raise
    finally:
        if own:
            stream.close()


# The bytes every invalidate event holds (a stream ends with it): a batch without them
# has none, and is taken whole when it lies inside the window.
_INVALIDATE = b"\x02operationType\x00\x0b\x00\x00\x00invalidate\x00"


def _capture(
    db: Database[Any],
    stream: ChangeFollower,
    window: _Window,
) -> Captured:
    """One stream's worth of :func:`capture`, from ``window.progress`` (updated as it
    goes, so that a retry continues after the last event handed on)."""
    stream.open(db, window.progress.token)
    last_progress = time.monotonic()
    try:
        while True:
            # A stream just opened (or a batch just taken) already says how far the
            # server looked: past ``until``, a getMore would only wait maxAwaitTimeMS
            # for nothing (AWAIT_MS at the end of every backup).
            if not stream.buffered() and window.passed(stream.position):
                break
            batch = stream.next_batch()
            if not batch:
                if window.caught_up(stream.position):
                    break
                if time.monotonic() - last_progress > STALL_SECONDS:
                    until = window.until
                    raise MongoBackupError(
                        f"the change stream did not reach {until.time}:{until.inc} "
                        f"within {STALL_SECONDS:g} s"
                    )
                time.sleep(SHORT_PAUSE)
                continue
            last_progress = time.monotonic()
            if not window.take_whole(batch) and window.take_each(batch, stream):
                break
    finally:
        window.note_token()  # also on a fault: the retry continues after the last event
    stream.token = window.progress.token
    return window.progress


class _Window:
    """What one capture takes (the events after its token, up to ``until``) and where
    it stands."""

    def __init__(
        self,
        progress: Captured,
        until: Timestamp,
        sink: Callable[[bytes], None],
        wanted: Callable[[str], bool],
        max_bytes: int | None,
        batches: bool,
    ) -> None:
        self.progress, self.until, self.sink, self.wanted = progress, until, sink, wanted
        self.max_bytes = max_bytes
        self.until_key = time_key(until)
        # Where max_bytes was reached (kept by ``progress`` across a retry), or -1.
        self.full_key = time_key(progress.full_at) if progress.full_at is not None else -1
        self.every = wanted is keep_all  # then no event's collection need be read
        self.whole_batches = batches and self.every
        self.kept: dict[bytes, bool] = {}  # ``wanted`` once per collection, not per event
        self.namespaced = False  # ``wanted`` is asked with DB.COLLECTION (a deployment)
        # Where the stream stands: the last event taken (its _id, made plain only when
        # needed) or the server's position after an empty batch.
        self.last_event: RawBSONDocument | None = None
        self.last_position: Any = None

    def passed(self, position: Any) -> bool:
        """Does ``position`` (a token with a time, all before it handed on) pass ``until``?"""
        reached = token_time(position)
        if reached is None or reached < self.until:
            return False
        self.last_event, self.last_position = None, position
        return True

    def caught_up(self, position: Any) -> bool:
        """After an empty batch: has the stream looked past ``until``? A MongoDB token
        says how far; another server's "nothing more" after a majority-committed
        ``until`` means all is seen."""
        if self.passed(position):
            return True
        if token_time(position) is not None:
            return False  # a token short of ``until``
        if position is not None:
            self.last_event, self.last_position = None, position
        return True

    def take_whole(self, batch: list[RawBSONDocument]) -> bool:
        """The common case of a watch: a batch inside the window, taken in one piece
        (events come in cluster time order: its last says so)."""
        if not self.whole_batches or self.full_key >= 0:
            return False
        joined = b"".join([event.raw for event in batch])
        last = event_kind_and_time(bytes(batch[-1].raw))[1]
        progress, max_bytes = self.progress, self.max_bytes
        fits = max_bytes is None or progress.handed + len(joined) < max_bytes
        if not (last <= self.until_key and fits) or _INVALIDATE in joined:
            return False
        self.sink(joined)
        progress.events += len(batch)
        progress.handed += len(joined)
        self.last_event, self.last_position = batch[-1], None
        return True

    def take_each(self, batch: list[RawBSONDocument], stream: ChangeFollower) -> bool:
        """The batch event by event; True when the window is full (the rest is held
        back for the next capture)."""
        progress = self.progress
        for index, event in enumerate(batch):
            raw = bytes(event.raw)  # the bytes object itself: no copy
            if self.every:
                (operation, when), collection = event_kind_and_time(raw), b""
            else:
                operation, when, collection = event_fields(raw, self.namespaced)
            if when > self.until_key or 0 <= self.full_key < when:
                stream.hold(batch[index:])  # the token stays before them
                return True
            if operation == b"invalidate":
                # A dropped or renamed database ends a database's stream; a new one
                # continues after the invalidation (nothing follows it in the batch).
                progress.token = _plain(event["_id"])
                self.last_event, self.last_position = None, None
                stream.restart_after(progress.token)
                return False
            self.last_event, self.last_position = event, None
            if self._wanted(event, operation, collection):
                self.sink(raw)
                progress.events += 1
                progress.handed += len(raw)
                full = self.max_bytes is not None and progress.handed >= self.max_bytes
                if full and self.full_key < 0:
                    self.full_key = when
                    progress.full_at = progress.reached = Timestamp(when >> 32, when & 0xFFFFFFFF)
            else:
                progress.skipped += 1
        return False

    def _wanted(self, event: RawBSONDocument, operation: bytes, collection: bytes) -> bool:
        # An event without a collection (dropDatabase) concerns them all.
        keep = self.kept.get(collection)
        if keep is None:
            keep = self.kept[collection] = not collection or self.wanted(collection.decode())
        if not keep and operation == b"rename":  # renamed into the wanted ones?
            renamed = event.get("to")
            name = str(renamed.get("coll") or "") if renamed is not None else ""
            if self.namespaced and name:
                name = f"{renamed.get('db')}.{name}"  # type: ignore[union-attr]
            keep = bool(name) and self.wanted(name)
        return keep

    def note_token(self) -> None:
        if self.last_event is not None:
            self.progress.token = _plain(self.last_event["_id"])
        elif self.last_position is not None:
            self.progress.token = _plain(self.last_position)
