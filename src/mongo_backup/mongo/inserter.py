"""The MongoDB write edge of restore: raw BSON batches into ``insert`` commands.

Contract: :meth:`RawInserter.submit` hands a batch of raw BSON documents to one of
``jobs`` worker threads (blocking when ``2 x jobs`` batches already wait, or when
:data:`MAX_IN_FLIGHT_BYTES` of documents are queued or being inserted: back-pressure, not
buffering; a count alone let 15 MiB documents hold half a gigabyte). Leaving the
``with`` block waits for every batch. Per-document refusals (duplicate ``_id``,
validation) are counted in :class:`InsertCounts` and never raise. A transient fault
(connection lost, server restarting, a stall) sends the batch again, up to
``policy.retries`` times with backoff; since the server may have applied it before the
answer was lost, the duplicates of a batch sent again are counted as ``already`` (as a
resumed restore counts its replayed batches), not as conflicts. Give the inserter a
client with ``retryWrites=False``: the driver's own silent retry would count them as
conflicts. Any other failure stops the workers and is raised from ``__exit__`` or the
next ``submit``. A write the server applied but could not confirm with the write concern
(a ``writeConcernError``: not majority-committed or journaled in time, a step-down while
waiting) may still roll back, so it is no success: a transient one sends the batch again
like a lost answer (the new answer confirms the documents, now duplicates; those its
first answer refused as conflicts stay conflicts), any other stops the workers, and the
batch is never reported answered (see :mod:`.confirmed`).

The driver releases the GIL while it waits for the server, so the caller's parsing of
the next batch overlaps the server's work on this one.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import bson
import pymongo.errors
from bson.raw_bson import RawBSONDocument
from pymongo.collection import Collection

from ..errors import MongoBackupError
from ..retry import RetryPolicy, is_transient
from .confirmed import raise_unconfirmed

logger = logging.getLogger(__name__)

DUPLICATE_KEY = 11000
VALIDATION_FAILED = 121
MAX_PROBLEMS = 10


@dataclass
class InsertCounts:
    inserted: int = 0
    already: int = 0  # duplicates a resumed restore expected: sent before the interruption
    duplicates: int = 0
    rejected: int = 0
    failed: int = 0
    problems: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add_bulk_error(
        self, details: dict[str, Any], replay: bool = False, conflicts: frozenset[int] | None = None
    ) -> None:
        """Count an answer's refusals. With ``replay``, a duplicate ``_id`` is a document
        sent before (``already``), unless ``conflicts`` holds its index in the batch."""
        with self.lock:
            self.inserted += int(details.get("nInserted", 0))
            for error in details.get("writeErrors", []):
                code = error.get("code")
                if code == DUPLICATE_KEY and replay and error.get("index") not in (conflicts or ()):
                    self.already += 1
                elif code == DUPLICATE_KEY:
                    self.duplicates += 1
                elif code == VALIDATION_FAILED:
                    self.rejected += 1
                else:
                    self.failed += 1
                    if len(self.problems) < MAX_PROBLEMS:
                        self.problems.append(
                            f"document refused (code {code}): {error.get('errmsg', '')[:200]}"
                        )


_STOP = None
# Bytes of documents queued or being inserted (at least one batch always goes): with
# their copies in the driver's messages, what big documents may hold in memory.
MAX_IN_FLIGHT_BYTES = 24 * 1024 * 1024
BATCH_BYTES = 8 * 1024 * 1024  # a caller's batch ends here (or at its count)
# A batch up to this size goes as one ``insert`` command (a BSON document of at most
# 16 MiB with its fields): see RawInserter._send.
COMMAND_BYTES = 12 * 1024 * 1024
# A batch, whether it is being sent again after an interruption, its ticket and its bytes.
_Item = tuple[list[bytes], bool, int, int]


class _Encoded:
    """A document already in BSON, in the form pymongo's encoder copies as it is (the
    marker and the ``raw`` of RawBSONDocument), for the ``insert`` command's list, which
    only the encoder reads. A restore makes one per document: RawBSONDocument's checks
    and attributes cost twice as much (0.6 us a document against 0.25, measured)."""

    __slots__ = ("raw",)
    _type_marker = RawBSONDocument._type_marker

    def __init__(self, raw: bytes) -> None:
        self.raw = raw


@functools.cache
def _encoded_class() -> type:
    """:class:`_Encoded` where the installed encoder takes it, else RawBSONDocument."""
    empty = b"\x05\x00\x00\x00\x00"
    try:
        taken = bson.encode({"d": [_Encoded(empty)]}) == bson.encode({"d": [{}]})
    except Exception:  # an encoder that checks the type itself
        taken = False
    return _Encoded if taken else RawBSONDocument


class RawInserter:
    def __init__(
        self,
        collection: Collection[Any],
        jobs: int,
        bypass_validation: bool,
        counts: InsertCounts,
        describe: Callable[[BaseException], str],
        answered: Callable[[int], None] | None = None,
        policy: RetryPolicy | None = None,
    ) -> None:
        self.collection = collection
        self.policy = policy or RetryPolicy()
        self.bypass = bypass_validation
        self.counts = counts
        self.describe = describe
        self.answered = answered
        self.fatal: BaseException | None = None
        self._discard = False  # the caller failed: queued batches are dropped, not sent
        self.pending: queue.Queue[_Item | None] = queue.Queue(maxsize=2 * jobs)
        self.in_flight = 0  # bytes submitted and not yet answered (see MAX_IN_FLIGHT_BYTES)
        self._room = threading.Condition()
        self.workers = [
            threading.Thread(target=self._work, name=f"insert-{i}", daemon=True)
            for i in range(jobs)
        ]

    def __enter__(self) -> RawInserter:
        for worker in self.workers:
            worker.start()
        return self

    def submit(self, batch: list[bytes], replay: bool = False, ticket: int = 0) -> None:
        """Queue ``batch``; ``replay`` marks documents that a resumed restore sends again
        (their duplicates are expected); ``ticket`` is passed to ``answered`` once the
        server has answered for the batch."""
        self._raise_fatal()
        size = sum(map(len, batch))
        with self._room:
            while self.in_flight and self.in_flight + size > MAX_IN_FLIGHT_BYTES:
                self._room.wait(0.2)
                self._raise_fatal()
            self.in_flight += size
        self.pending.put((batch, replay, ticket, size))

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        # After a failure (or Ctrl-C while waiting here), no queued batch may land later:
        # a caller undoing its writes (restore/streamed.py) must find nothing after it.
        self._discard = exc is not None
        try:
            for _ in self.workers:
                self.pending.put(_STOP)
            for worker in self.workers:
                worker.join()
        except KeyboardInterrupt:
            self._discard = True
            # The interrupt may have come while a stop waited for room: every worker gets
            # one (the queue drains fast now; extra stops are never read).
            for _ in self.workers:
                self.pending.put(_STOP)
            for worker in self.workers:
                worker.join()  # a batch being sent ends; the queued ones are dropped
            raise
        if exc is None:
            self._raise_fatal()

    def _raise_fatal(self) -> None:
        if self.fatal is not None:
            raise MongoBackupError(
                f"{self.collection.name}: insert failed: {self.describe(self.fatal)}"
            ) from self.fatal

    def _work(self) -> None:
        while True:
            item = self.pending.get()
            if item is None:
                return
            batch, replay, ticket, size = item
            try:
                if self.fatal is not None or self._discard:
                    continue  # drain, so that submit() never blocks forever
                self._insert(batch, replay, size)
            except BaseException as error:  # connection lost for good, auth, ...: stop
                self.fatal = error
                continue
            finally:
                with self._room:
                    self.in_flight -= size
                    self._room.notify_all()
            if self.answered is not None:
                self.answered(ticket)

    def _insert(self, documents: list[bytes], replay: bool, size: int) -> None:
        """Insert one batch, sending it again after a transient fault."""
        attempt = 0
        # The _id conflicts the first try's answer reported: documents the target held
        # before this restore, still conflicts when an unconfirmed batch is sent again.
        conflicts: frozenset[int] | None = None
        while True:
            try:
                try:
                    refused = self._send(documents, size)
                except pymongo.errors.BulkWriteError as error:
                    refused = dict(error.details)
                if attempt == 0 and not replay:
                    conflicts = _duplicate_indexes(refused)
                raise_unconfirmed(refused)
            except pymongo.errors.PyMongoError as error:
                if not is_transient(error) or attempt >= self.policy.retries:
                    raise
                attempt += 1
                delay = self.policy.delay(attempt)
                logger.warning(
                    "%s: %s; sending the batch again (retry %d of %d in %.1f s)",
                    self.collection.name,
                    self.describe(error),
                    attempt,
                    self.policy.retries,
                    delay,
                )
                time.sleep(delay)
                continue
            if refused is not None:
                self.counts.add_bulk_error(refused, replay or attempt > 0, conflicts)
            else:
                with self.counts.lock:
                    self.counts.inserted += len(documents)
            return

    def _send(self, documents: list[bytes], size: int) -> dict[str, Any] | None:
        """Insert; what the server refused, in ``BulkWriteError.details``' shape, or None.

        A batch that fits in one command document goes as a plain ``insert`` command:
        ``insert_many``'s bulk machinery spends a few Python calls on every document
        (half of a restore's client CPU for inserting, measured), and a command of raw
        documents is encoded in C. Bigger batches (a document of several MiB) need
        ``insert_many``'s document sequence, which may exceed 16 MiB. ``size``: the
        documents' bytes (known from the submit)."""
        if size > COMMAND_BYTES:
            self.collection.insert_many(
                [RawBSONDocument(raw) for raw in documents],
                ordered=False,
                bypass_document_validation=self.bypass,
            )
            return None
        command: dict[str, Any] = {
            "insert": self.collection.name,
            "documents": list(map(_encoded_class(), documents)),
            "ordered": False,
        }
        if self.bypass:
            command["bypassDocumentValidation"] = True
        concern = self.collection.write_concern
        if not concern.is_server_default:
            command["writeConcern"] = concern.document
        reply = self.collection.database.command(command)
        written = int(reply.get("n", 0))
        errors = list(reply.get("writeErrors", []))
        concern_error = reply.get("writeConcernError")
        if not errors and concern_error is None and written == len(documents):
            return None
        return {
            "nInserted": written,
            "writeErrors": errors,
            "writeConcernErrors": [concern_error] if concern_error is not None else [],
        }


def _duplicate_indexes(refused: dict[str, Any] | None) -> frozenset[int] | None:
    """The batch indexes of an answer's duplicate ``_id`` refusals (None: none)."""
    found = frozenset(
        int(error["index"])
        for error in (refused or {}).get("writeErrors", [])
        if error.get("code") == DUPLICATE_KEY and isinstance(error.get("index"), int)
    )
    return found or None
