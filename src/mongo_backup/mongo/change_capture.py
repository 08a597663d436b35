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
  never a silent gap), skips events at or before ``after``, hands every event up to
  and including ``until`` to ``sink`` as raw BSON, and returns the token to continue
  after the last one. ``until`` is a time the server has applied
  (:func:`~mongo_backup.mongo.cluster_time.latest_point`); change streams show only
  majority-committed events, so the stream is read until its position passes ``until``
  (MongoDB's resume tokens say where the stream stands) or, on servers whose tokens do
  not, until it has nothing more. With ``max_bytes``, capture stops early: once the
  events handed on reach that size, it takes the rest of the events at the same cluster
  time (a transaction's events share one; an increment never ends inside it) and stops;
  :attr:`Captured.reached` is then the cluster time of the last event taken, and a later
  capture from the returned token with ``after=reached`` continues with no gap.
- A transient fault (a closed connection, a stall, a step-down) is retried per
  ``policy``: the stream is opened again after the last event handed on, so the sink
  sees every event once.
"""

from __future__ import annotations

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
from ..retry import NO_RETRIES, RetryPolicy, driver_error_text, is_transient

logger = logging.getLogger(__name__)

HISTORY_LOST_CODES = {280, 286}  # ChangeStreamFatalError, ChangeStreamHistoryLost
AWAIT_MS = 200
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


def token_time(token: Any) -> Timestamp | None:
    """The cluster time a MongoDB resume token stands at, or None if its format is not
    MongoDB's (hex KeyString, starting with the Timestamp type byte 0x82)."""
    data = token.get("_data") if hasattr(token, "get") else None
    if not isinstance(data, str) or len(data) < 18 or not data.startswith("82"):
        return None
    try:
        value = int(data[2:18], 16)
    except ValueError:
        return None
    return Timestamp(value >> 32, value & 0xFFFFFFFF)


def _plain(token: Any) -> dict[str, Any]:
    return {key: token[key] for key in token}


def stream_position(db: Database[Any]) -> dict[str, Any]:
    """A resume token for "now": a stream resumed after it sees every event committed
    later. Callers skip the events at or before the cluster time they read next, so a
    token a little older is as good (and no ``getMore`` is needed for it)."""
    with db.with_options(codec_options=_RAW).watch(
        show_expanded_events=True, max_await_time_ms=AWAIT_MS
    ) as stream:
        token = stream.resume_token  # the position after an empty first batch
        if token is None:
            # Events came with the first batch: resuming after the first of them only
            # leaves out events from before the time the caller reads next.
            first = stream.try_next()
            token = first["_id"] if first is not None else stream.resume_token
    if token is None:  # pragma: no cover - servers always send a post-batch token
        raise MongoBackupError("the server gave no change stream position")
    return _plain(token)


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
) -> Captured:
    """Hand ``sink`` the raw BSON of every event in ``(after, until]`` whose
    collection is ``wanted``; see the module's contracts."""
    progress = Captured(0, 0, start_token, until)
    attempt = 0
    while True:
        try:
            return _capture(db, progress, after, until, sink, wanted, max_bytes)
        except pymongo.errors.PyMongoError as error:
            text = driver_error_text(error, secrets)
            if getattr(error, "code", None) in HISTORY_LOST_CODES:
                raise HistoryLost(
                    f"the change history since {after.time}:{after.inc} is no longer on the "
                    f"server ({text}): a full backup is needed"
                ) from None
            attempt += 1
            if not is_transient(error) or attempt > policy.retries:
                raise MongoBackupError(f"reading the change stream: {text}") from None
            delay = policy.delay(attempt)
            logger.warning(
                "reading the change stream: %s; retry %d of %d in %.1f s, after the last "
                "event read",
                text,
                attempt,
                policy.retries,
                delay,
            )
            time.sleep(delay)


def _capture(
    db: Database[Any],
    progress: Captured,
    after: Timestamp,
    until: Timestamp,
    sink: Callable[[bytes], None],
    wanted: Callable[[str], bool],
    max_bytes: int | None,
) -> Captured:
    """One stream's worth of :func:`capture`, from ``progress`` (updated as it goes, so
    that a retry continues after the last event handed on)."""
    raw_db = db.with_options(codec_options=_RAW)
    stream = raw_db.watch(
        start_after=progress.token, show_expanded_events=True, max_await_time_ms=AWAIT_MS
    )
    last_progress = time.monotonic()
    try:
        while True:
            event = stream.try_next()
            if event is None:
                position = stream.resume_token
                reached = token_time(position)
                # A MongoDB token says how far the stream has looked; another server's
                # "nothing more" after a majority-committed ``until`` means all is seen.
                if reached is None or reached >= until:
                    if position is not None:
                        progress.token = _plain(position)
                    break
                if time.monotonic() - last_progress > STALL_SECONDS:
                    raise MongoBackupError(
                        f"the change stream did not reach {until.time}:{until.inc} "
                        f"within {STALL_SECONDS:g} s"
                    )
                continue
            last_progress = time.monotonic()
            cluster_time = event["clusterTime"]
            full_at = progress.full_at
            if cluster_time > until or (full_at is not None and cluster_time > full_at):
                break  # token stays after the last event taken
            if event["operationType"] == "invalidate":
                # A dropped or renamed database ends a database's stream; a new one
                # continues after the invalidation.
                stream.close()
                progress.token = _plain(event["_id"])
                stream = raw_db.watch(
                    start_after=progress.token,
                    show_expanded_events=True,
                    max_await_time_ms=AWAIT_MS,
                )
                continue
            progress.token = _plain(event["_id"])
            if cluster_time <= after:
                continue
            renamed = event.get("to")
            collection = _collection_of(event)
            # An event without a collection (dropDatabase) concerns them all.
            if (
                not collection
                or wanted(collection)
                or (renamed is not None and wanted(str(renamed.get("coll") or "")))
            ):
                sink(bytes(event.raw))
                progress.events += 1
                progress.handed += len(event.raw)
                if max_bytes is not None and full_at is None and progress.handed >= max_bytes:
                    progress.full_at = cluster_time
            else:
                progress.skipped += 1
    finally:
        stream.close()
    progress.reached = progress.full_at if progress.full_at is not None else until
    return progress


def _collection_of(event: RawBSONDocument) -> str:
    namespace = event.get("ns")
    if namespace is None:
        return ""
    return str(namespace.get("coll") or "")
