"""Reading a collection ahead of the converter, and picking up again after a fault.

:func:`prefetched` runs a cursor in a thread and hands its raw batches over through a
queue bounded by bytes, so at most :data:`PREFETCH_BYTES` of batches wait in memory
(back-pressure, not buffering). The driver releases the GIL while it waits on the
socket, so fetching overlaps the caller's work.

When the scan is in ``_id`` order, each batch is handed on with the ``_id`` of its last
document, and a transient error (see :mod:`.retry`) re-opens the cursor just after that
``_id``: the caller sees one unbroken stream. The bound is given to the server as an
index bound (``min``), not as ``{_id: {$gt: ...}}``, because ``$gt`` only matches values
of the same BSON type while index bounds follow the server's order across all types.
``min`` is inclusive, so the document equal to the bound is dropped from the first batch.

A scan that is not in ``_id`` order cannot continue after a fault; once it has handed
on data it raises :class:`RestartNeeded` and the caller starts the collection again. The
same goes for a position that is an embedded document: servers do not agree on how
those are ordered (SecantusDB walks them in encoding order but bounds them in BSON
order), and continuing after one could skip documents. :func:`resumable` says which
positions are safe to continue from.

``_id`` values travel as :data:`IdKey`: the raw BSON of the one-field document
``{"_id": value}``, exact for every type and easy to store in a checkpoint.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import struct
import threading
from collections.abc import Callable, Generator, Iterator
from typing import Any

import bson
import pymongo.errors
from bson.codec_options import CodecOptions, DatetimeConversion

from ..errors import MongoBackupError, RestartNeeded
from ..retry import RetryPolicy, driver_error_text, is_transient
from .change_events import value_end

logger = logging.getLogger(__name__)

# Batches fetched ahead of the converter: about three of 1,000 ordinary documents.
PREFETCH_BYTES = 4 * 1024 * 1024
# Batches of big documents are made smaller, to about this many bytes: 1,000 documents
# of 16 KiB would be 16 MiB per batch, and three or four such batches are in flight at
# once (being received, waiting, being converted), so memory would grow with document
# size. After a batch more than twice this size, an ordered scan is opened again after
# the same _id, asking for fewer documents per batch (pymongo cannot change the batch
# size of a running find); a natural-order scan cannot, and keeps its batch size.
BATCH_BYTES = 2 * 1024 * 1024
# Readers of big documents receive one getMore's batch at a time between them. Receiving
# a batch holds it twice for a moment (the reply as read, the batch cut out of it); with
# a 15 MiB document that is 30 MiB, and two readers receiving at once besides what each
# holds took a backup of such documents to 199 MiB at -j 2 (one reader: 132 MiB).
_BIG_RECEIVES = threading.Lock()
# Dates outside Python's datetime range must survive as values, not raise.
ID_CODEC: CodecOptions[Any] = CodecOptions(datetime_conversion=DatetimeConversion.DATETIME_AUTO)

IdKey = bytes
# open_cursor(start, inclusive, batch_size) -> raw batches; start None: from the start.
CursorOpener = Callable[[IdKey | None, bool, int], Iterator[bytes]]


def resumable(key: IdKey | None) -> bool:
    """Whether a scan may continue after ``key`` (see the module doc)."""
    return key is not None and key[4:5] != b"\x03"  # the type byte of the _id element


def id_key_value(key: IdKey) -> Any:
    """The Python value of an :data:`IdKey`, for the driver to send back as a bound."""
    return bson.decode(key, codec_options=ID_CODEC)["_id"]


# A document's length prefix read in place: no 4-byte slice per document (a walk of a
# backup's batches costs a third of what slicing did).
_LENGTH = struct.Struct("<I").unpack_from


def _last_document(batch: bytes) -> memoryview:
    position = start = 0
    end = len(batch)
    while position < end:
        start = position
        position += _LENGTH(batch, position)[0]
    return memoryview(batch)[start:position]  # no copy: it may be a 15 MiB document


_ID_ELEMENT = b"_id\x00"
_ID_HEAD = 4 + 1 + 4 + 1024  # length, type, "_id", and the _id values worth the fast path


def id_key_of(document: bytes | memoryview) -> IdKey:
    """The :data:`IdKey` of one raw document. When ``_id`` comes first (where servers
    keep it), only that element is decoded: a document of 15 MiB costs no 15 MiB decode
    and copy. Either way the key is the ``_id`` decoded and encoded again, as before."""
    head = bytes(document[:_ID_HEAD])
    if head[5:9] == _ID_ELEMENT:
        try:
            end = value_end(head, head[4], 9)
            if end <= len(head):
                element = head[4:end]
                alone = (len(element) + 5).to_bytes(4, "little") + element + b"\x00"
                value = bson.decode(alone, codec_options=ID_CODEC)["_id"]
                return bson.encode({"_id": value}, codec_options=ID_CODEC)
        except (ValueError, IndexError, bson.errors.InvalidBSON):
            pass  # the whole document says what it is
    value = bson.decode(bytes(document), codec_options=ID_CODEC)["_id"]
    return bson.encode({"_id": value}, codec_options=ID_CODEC)


def last_id_key(batch: bytes) -> IdKey:
    return id_key_of(_last_document(batch))


def _drop_leading(batch: bytes, key: IdKey) -> bytes:
    """``batch`` without its first document if that document's ``_id`` is ``key``."""
    if not batch:
        return batch
    size = int.from_bytes(batch[:4], "little")
    return batch[size:] if id_key_of(memoryview(batch)[:size]) == key else batch


def split_batch(batch: bytes) -> Iterator[bytes]:
    """The raw documents of a raw batch, one by one."""
    position = 0
    while position < len(batch):
        size = int.from_bytes(batch[position : position + 4], "little")
        yield batch[position : position + size]
        position += size


def count_documents(batch: bytes) -> int:
    """Documents in a raw batch: walks the length prefixes."""
    count = position = 0
    end = len(batch)
    while position < end:
        position += _LENGTH(batch, position)[0]
        count += 1
    return count


def _fitted_batch_size(batch: bytes, size: int) -> int:
    """The batch size that makes batches like ``batch`` about :data:`BATCH_BYTES`
    (never more than ``size``; ``size`` itself when batches are not too big)."""
    if not size or len(batch) <= 2 * BATCH_BYTES:
        return size
    return max(1, min(size, int(BATCH_BYTES / (len(batch) / count_documents(batch)))))


_DONE = object()


class _ByteBoundedHandoff:
    """A queue bounded by bytes, not items: documents of 16 KiB make 16 MiB batches,
    and a count bound would let memory grow with document size. At least one item is
    always accepted, so no batch is too big to pass."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.items: collections.deque[tuple[object, int]] = collections.deque()
        self.bytes = 0
        self.changed = threading.Condition()

    def put(self, item: object, size: int, stop: threading.Event) -> bool:
        with self.changed:
            while self.items and self.bytes + size > self.limit:
                if stop.is_set():
                    return False
                self.changed.wait(0.2)
            self.items.append((item, size))
            self.bytes += size
            self.changed.notify_all()
        return True

    def wait_until_taken(self, stop: threading.Event) -> None:
        """Wait until the consumer has taken everything handed on (or ``stop``)."""
        with self.changed:
            while self.items and not stop.is_set():
                self.changed.wait(0.2)

    def get(self) -> object:
        with self.changed:
            while not self.items:
                self.changed.wait()
            item, size = self.items.popleft()
            self.bytes -= size
            self.changed.notify_all()
        return item


class _Producer:
    """The reading thread of :func:`prefetched`. It hands batches on through ``handoff``
    and opens the cursor again where it stopped: after a transient fault, and to ask for
    smaller batches when documents turn out big. The position, batch size and retry
    count live here because they must survive each reopening."""

    def __init__(
        self,
        open_cursor: CursorOpener,
        what: str,
        secrets: list[str],
        *,
        ordered: bool,
        start: IdKey | None,
        inclusive: bool,
        policy: RetryPolicy,
        batch_size: int,
        handoff: _ByteBoundedHandoff,
        stop: threading.Event,
    ) -> None:
        self.open_cursor = open_cursor
        self.what = what
        self.secrets = secrets
        self.ordered = ordered
        self.policy = policy
        self.handoff = handoff
        self.stop = stop
        self.position, self.inclusive = start, inclusive
        self.size = batch_size
        self.handed_on = False
        self.attempt = 0
        self.big = False  # a batch was bigger than the handoff's bound: see _BIG_RECEIVES

    def run(self) -> None:
        while not self.stop.is_set():
            cursor: Any = None
            try:
                cursor = self.open_cursor(self.position, self.inclusive, self.size)
                if not self._hand_on(cursor):
                    return
            except BaseException as error:
                if not self._retry_after(error):
                    return
            finally:
                close = getattr(cursor, "close", None)
                if close is not None:
                    close()

    def _hand_on(self, cursor: Iterator[bytes]) -> bool:
        """Hand on the batches of one opened cursor. True when the cursor was left early,
        to be opened again asking for smaller batches; False when the scan is over (the
        end is handed on too) or was stopped."""
        skip_equal = self.position is not None and not self.inclusive
        batches = iter(cursor)
        opened = True
        while True:
            # getMores only: the first batch comes with the find, which may wait for a
            # pooled connection, and a load-balanced cursor keeps its connection to its
            # end, so a wait under the lock could wait on a reader that waits for the lock.
            with _BIG_RECEIVES if self.big and not opened else contextlib.nullcontext():
                batch = next(batches, None)
            opened = False
            if batch is None:
                break
            if skip_equal:
                batch, skip_equal = _drop_leading(batch, self.position or b""), False
            if not batch:
                continue
            last = last_id_key(batch) if self.ordered else None
            if not self.handoff.put((batch, last), len(batch), self.stop):
                return False
            if len(batch) > self.handoff.limit:
                self.big = True
                # A batch bigger than the bound (one document of 15 MiB) is still
                # accepted, but the next is not asked for until the consumer has it:
                # receiving a batch costs the driver ~5 copies of it at once, and that
                # peak must not come on top of two held batches.
                self.handoff.wait_until_taken(self.stop)
                if self.stop.is_set():
                    return False
            self.handed_on, self.attempt = True, 0
            if self.ordered:
                self.position, self.inclusive = last, False
            fitted = _fitted_batch_size(batch, self.size)
            if fitted < self.size and resumable(self.position):
                self.size = fitted
                # A running find cannot change its batch size, so run opens a new cursor
                # after the same _id that asks for fewer documents.
                return True
        self.handoff.put(_DONE, 0, self.stop)
        return False

    def _retry_after(self, error: BaseException) -> bool:
        """Whether to open the cursor again after ``error``, having waited for the retry
        delay. When not, the error (or a RestartNeeded) is handed on to be raised."""
        self.attempt += 1
        if self.stop.is_set() or not is_transient(error) or self.attempt > self.policy.retries:
            self.handoff.put(error, 0, self.stop)
            return False
        if self.handed_on and not (self.ordered and resumable(self.position)):
            self.handoff.put(
                RestartNeeded(f"{self.what}: {driver_error_text(error, self.secrets)}"),
                0,
                self.stop,
            )
            return False
        delay = self.policy.delay(self.attempt)
        logger.warning(
            "%s: %s; retry %d of %d in %.1f s%s",
            self.what,
            driver_error_text(error, self.secrets),
            self.attempt,
            self.policy.retries,
            delay,
            " after the last _id read" if self.position is not None else "",
        )
        self.stop.wait(delay)
        return True


def prefetched(
    open_cursor: CursorOpener,
    what: str,
    secrets: list[str],
    *,
    ordered: bool,
    start: IdKey | None = None,
    inclusive: bool = True,
    policy: RetryPolicy | None = None,
    batch_size: int = 0,
) -> Generator[tuple[bytes, IdKey | None], None, None]:
    """Yield ``(batch, last_id)`` from ``open_cursor``; ``last_id`` is None unless
    ``ordered``. ``batch_size`` (the most documents per batch the cursor was opened
    with; 0: leave the cursor alone) lets batches of big documents shrink to about
    :data:`BATCH_BYTES`. Closing the generator stops the reading thread."""
    handoff = _ByteBoundedHandoff(PREFETCH_BYTES)
    stop = threading.Event()
    producer = _Producer(
        open_cursor,
        what,
        secrets,
        ordered=ordered,
        start=start,
        inclusive=inclusive,
        policy=policy or RetryPolicy(),
        batch_size=batch_size,
        handoff=handoff,
        stop=stop,
    )
    thread = threading.Thread(target=producer.run, name=f"prefetch {what}", daemon=True)
    thread.start()
    try:
        while True:
            item = handoff.get()
            if item is _DONE:
                return
            if isinstance(item, pymongo.errors.PyMongoError):
                raise MongoBackupError(f"{what}: {driver_error_text(item, secrets)}") from item
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
            item = None  # not held while the next one is received
    finally:
        stop.set()
        thread.join(timeout=5)
