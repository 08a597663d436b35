"""Cluster times: where a backup stands in the server's history, and how to name one.

A *cluster time* is the BSON Timestamp (seconds, increment) that a replica set or a
sharded cluster stamps on every write. A backup records the one its data reflects
(``point``), and restore ``--until`` takes one, written as ``SECONDS:INCREMENT``,
``Timestamp(SECONDS, INCREMENT)`` or an ISO-8601 time (every write of that second
and before).

:class:`SnapshotCheck` watches the driver's ``find`` replies: a server that honours
``readConcern: {level: "snapshot", atClusterTime: T}`` answers with
``cursor.atClusterTime == T``. One that answers another time read something else, and
the backup must not claim a snapshot (it falls back to capturing the changes made while
it ran, see :mod:`.change_capture`).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
import time
from typing import Any

import pymongo.errors
from bson.timestamp import Timestamp
from pymongo import MongoClient, monitoring

from ..errors import ConfigError, MongoBackupError
from ..retry import NO_RETRIES, RetryPolicy, driver_error_text, is_transient

logger = logging.getLogger(__name__)

# The largest increment: an ISO time stands for everything written in its second.
_LAST_INCREMENT = 2**32 - 1
_PAIR = re.compile(r"^\s*(?:Timestamp\()?\s*(\d{1,10})\s*[:,]\s*(\d{1,10})\s*\)?\s*$")


def to_json(ts: Timestamp) -> dict[str, Any]:
    """Canonical Extended JSON of a Timestamp, as the manifest stores it."""
    return {"$timestamp": {"t": ts.time, "i": ts.inc}}


def from_json(value: Any) -> Timestamp:
    """The inverse of :func:`to_json`; ValueError for anything else."""
    try:
        inner = value["$timestamp"]
        seconds, increment = inner["t"], inner["i"]
    except (KeyError, TypeError):
        raise ValueError(f"not a cluster time: {value!r}") from None
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in (seconds, increment)):
        raise ValueError(f"not a cluster time: {value!r}")
    if not (0 <= seconds < 2**32 and 0 <= increment < 2**32):
        raise ValueError(f"cluster time out of range: {value!r}")
    return Timestamp(seconds, increment)


def show(ts: Timestamp) -> str:
    """``SECONDS:INC (ISO time)``: both spellings ``--until`` accepts."""
    when = dt.datetime.fromtimestamp(ts.time, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{ts.time}:{ts.inc} ({when})"


def after(ts: Timestamp) -> Timestamp:
    """The first cluster time later than ``ts``."""
    if ts.inc < _LAST_INCREMENT:
        return Timestamp(ts.time, ts.inc + 1)
    return Timestamp(ts.time + 1, 0)


def parse_until(text: str) -> Timestamp:
    """A cluster time from ``--until``: ``S:I``, ``Timestamp(S, I)`` or ISO-8601 (a time
    without a zone is UTC). ConfigError for anything else."""
    match = _PAIR.match(text)
    if match:
        seconds, increment = int(match.group(1)), int(match.group(2))
        if seconds < 2**32 and increment < 2**32:
            return Timestamp(seconds, increment)
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"--until {text!r}: not a time (use ISO-8601 such as 2026-11-26T12:00:00Z, "
            "or a cluster time SECONDS:INCREMENT)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    seconds = int(when.timestamp())
    if not 0 <= seconds < 2**32:
        raise ConfigError(f"--until {text!r} is outside the range of cluster times")
    return Timestamp(seconds, _LAST_INCREMENT)


def _command(
    client: MongoClient[Any], name: str, secrets: list[str] | None, policy: RetryPolicy
) -> dict[str, Any]:
    """``name`` on the admin database; a transient fault is retried per ``policy``, and a
    failure is a MongoBackupError (never taken for "the server keeps no history")."""
    attempt = 0
    while True:
        try:
            return client.admin.command(name)
        except pymongo.errors.PyMongoError as error:
            attempt += 1
            if not is_transient(error) or attempt > policy.retries:
                text = driver_error_text(error, secrets or [])
                raise MongoBackupError(
                    f"asking the server where its history stands ({name}): {text}"
                ) from None
            time.sleep(policy.delay(attempt))


def majority_point(
    client: MongoClient[Any], secrets: list[str] | None = None, policy: RetryPolicy = NO_RETRIES
) -> Timestamp | None:
    """The newest cluster time whose writes are majority-committed: every write at or
    before it is visible to snapshot reads and change streams, and will not roll back.
    None on a standalone server (it has no cluster time)."""
    hello = _command(client, "hello", secrets, policy)
    if not hello.get("setName") and hello.get("msg") != "isdbgrid":
        return None
    majority = hello.get("lastWrite", {}).get("majorityOpTime", {}).get("ts")
    if isinstance(majority, Timestamp):
        return majority
    # mongos reports no lastWrite: the operation time of a majority read stands in.
    operation_time = _command(client, "ping", secrets, policy).get("operationTime")
    return operation_time if isinstance(operation_time, Timestamp) else None


def latest_point(
    client: MongoClient[Any], secrets: list[str] | None = None, policy: RetryPolicy = NO_RETRIES
) -> Timestamp | None:
    """The cluster time of the newest write the server has applied (at or after every
    read made before the call), or the majority point where it does not say; None when
    the server keeps no history (a standalone). Capturing changes up to it waits until
    the majority has caught up (see change_capture)."""
    hello = _command(client, "hello", secrets, policy)
    applied = hello.get("lastWrite", {}).get("opTime", {}).get("ts")
    if isinstance(applied, Timestamp):
        return applied
    return majority_point(client, secrets, policy)


class SnapshotCheck(monitoring.CommandListener):
    """Notes whether every snapshot ``find`` was answered at the cluster time it asked
    for. Register it on the client (``event_listeners=[check]``) before reading."""

    def __init__(self) -> None:
        self._asked: dict[int, Timestamp] = {}
        self._lock = threading.Lock()
        self.answered = 0
        self.unhonoured: Timestamp | None = None  # the first other time a server answered

    @property
    def honoured(self) -> bool:
        return self.unhonoured is None

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name != "find":
            return
        concern = event.command.get("readConcern") or {}
        asked = concern.get("atClusterTime")
        if concern.get("level") == "snapshot" and isinstance(asked, Timestamp):
            with self._lock:
                self._asked[event.request_id] = asked

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        with self._lock:
            asked = self._asked.pop(event.request_id, None)
            if asked is None:
                return
            cursor = event.reply.get("cursor") if hasattr(event.reply, "get") else None
            answered = cursor.get("atClusterTime") if isinstance(cursor, dict) else None
            self.answered += 1
            if answered != asked and self.unhonoured is None:
                self.unhonoured = answered if isinstance(answered, Timestamp) else asked
                logger.info(
                    "the server answered a snapshot read at %s instead of %s: "
                    "it does not keep snapshots, so the changes made during the backup "
                    "are captured instead",
                    answered,
                    asked,
                )

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        with self._lock:
            self._asked.pop(event.request_id, None)
