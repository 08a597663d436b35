"""prefetch.prefetched without a server: a cursor is any iterator of raw batches.

What is checked is memory held, by counting what the cursor was asked for: a batch
bigger than the hand-off's bound (one document of 15 MiB) is accepted, but the next one
is not asked for until the consumer has taken it, because receiving a batch costs the
driver several copies of it at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import bson

from mongo_backup.mongo.prefetch import PREFETCH_BYTES, prefetched


def _batch(i: int, size: int) -> bytes:
    return bson.encode({"_id": i, "pad": "x" * size})


def _cursor(batches: list[bytes], asked: list[int]) -> Iterator[bytes]:
    for i, batch in enumerate(batches):
        asked.append(i)
        yield batch


def _settle(asked: list[int], expected: int) -> None:
    """Give the reading thread time to ask for more than it should."""
    deadline = time.monotonic() + 0.5
    while len(asked) < expected and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)


def test_a_batch_above_the_bound_waits_until_taken_before_the_next_is_asked_for() -> None:
    batches = [_batch(i, PREFETCH_BYTES + 1024) for i in range(3)]
    asked: list[int] = []
    stream = prefetched(lambda *_: _cursor(batches, asked), "big", [], ordered=False)
    try:
        first, _ = next(stream)
        assert first == batches[0]
        _settle(asked, 2)
        # Batch 1 was received and handed on; batch 2 not asked for while it waits.
        assert asked == [0, 1]
        second, _ = next(stream)
        assert second == batches[1]
        _settle(asked, 3)
        assert asked == [0, 1, 2]
        assert [batch for batch, _ in stream] == [batches[2]]
    finally:
        stream.close()


def test_small_batches_are_read_ahead_up_to_the_bound() -> None:
    batches = [_batch(i, 100) for i in range(50)]
    asked: list[int] = []
    stream = prefetched(lambda *_: _cursor(batches, asked), "small", [], ordered=False)
    try:
        next(stream)
        _settle(asked, 50)
        assert asked == list(range(50))  # all of them fit under the bound
        assert len([batch for batch, _ in stream]) == 49
    finally:
        stream.close()


def test_closing_the_stream_while_a_big_batch_waits_stops_the_reader() -> None:
    batches = [_batch(i, PREFETCH_BYTES + 1024) for i in range(5)]
    asked: list[int] = []
    stream = prefetched(lambda *_: _cursor(batches, asked), "big", [], ordered=False)
    next(stream)
    _settle(asked, 2)
    before = threading.active_count()
    stream.close()
    deadline = time.monotonic() + 3
    while threading.active_count() >= before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() < before
    assert asked == [0, 1]


def _timed_cursor(
    batches: list[bytes], reader: int, spans: list[tuple[int, int, float, float]]
) -> Iterator[bytes]:
    """Each batch takes 20 ms to "receive"; ``spans`` gets (reader, batch, start, end)."""
    for index, batch in enumerate(batches):
        started = time.monotonic()
        time.sleep(0.02)
        spans.append((reader, index, started, time.monotonic()))
        yield batch


def _read_two_at_once(size: int) -> bool:
    """Two streams read side by side, as two export workers do: whether two readers were
    ever receiving at once, past their first batches (received before their size is
    known)."""
    spans: list[tuple[int, int, float, float]] = []

    def opener(reader: int) -> Callable[..., Iterator[bytes]]:
        return lambda *_: _timed_cursor([_batch(i, size) for i in range(6)], reader, spans)

    streams = [prefetched(opener(n), f"reader {n}", [], ordered=False) for n in range(2)]
    readers = [threading.Thread(target=lambda s=s: [None for _ in s]) for s in streams]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join(10)
    later = [span for span in spans if span[1] > 0]
    return any(a[0] != b[0] and a[2] < b[3] and b[2] < a[3] for a in later for b in later)


def test_readers_of_big_documents_receive_one_batch_at_a_time() -> None:
    assert not _read_two_at_once(PREFETCH_BYTES + 1024)
    assert _read_two_at_once(100)  # small batches: side by side


def test_a_reader_waiting_for_a_pooled_connection_holds_no_lock() -> None:
    """A load-balanced pool of one connection, which a cursor keeps from its find to its
    end: a reader that opens a cursor again (after its first big batch, to ask for
    smaller ones) waits for the connection another reader's cursor holds. That reader
    must be able to finish meanwhile, so the opening waits outside the readers' lock
    (a model from the review of that lock: it hung in the first of five trials)."""
    size = PREFETCH_BYTES + 1024

    def opener(pool: threading.Semaphore) -> Callable[..., Iterator[bytes]]:
        def open_cursor(start: bytes | None, inclusive: bool, batch_size: int) -> Any:
            first = 0 if start is None else bson.decode(start)["_id"] + (0 if inclusive else 1)
            time.sleep(0.05)  # the cursor before it is killed first

            def cursor() -> Iterator[bytes]:
                pool.acquire()  # the find's checkout, kept to the cursor's end
                try:
                    for i in range(first, 6):
                        time.sleep(0.01)
                        yield _batch(i, size)
                finally:
                    pool.release()

            return cursor()

        return open_cursor

    for _trial in range(3):
        pool, done = threading.Semaphore(1), []

        def read(n: int, pool: threading.Semaphore = pool, done: list[int] = done) -> None:
            count = 0
            for _ in prefetched(opener(pool), f"reader {n}", [], ordered=True, batch_size=1000):
                count += 1
                time.sleep(0.02)
            done.append(count)

        readers = [threading.Thread(target=read, args=(n,), daemon=True) for n in range(2)]
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join(10)
        assert done == [6, 6]
