"""RawInserter without a server: a batch whose answer is lost is sent again, and what
the first try had written counts as ``already``, never as a conflict; a write the server
could not confirm with the write concern is no success; a fault that will not pass stops
the workers with one error."""

from __future__ import annotations

import functools
from typing import Any

import bson
import pymongo.errors
import pytest
from bson.raw_bson import RawBSONDocument
from pymongo.write_concern import WriteConcern

from mongo_backup.errors import MongoBackupError
from mongo_backup.mongo.inserter import InsertCounts, RawInserter
from mongo_backup.retry import RetryPolicy, driver_error_text

QUICK = RetryPolicy(retries=3, base_delay=0.001)


class LosesAnswers:
    """A collection that applies every insert but loses the first ``lost`` answers, as
    ``insert`` commands (batches that fit in one) and as ``insert_many`` (bigger ones)."""

    name = "items"
    write_concern = WriteConcern()

    def __init__(
        self, lost: int, error: Exception | None = None, unconfirmed: int = 0, code: int = 64
    ) -> None:
        self.stored: dict[Any, bytes] = {}
        self.lost, self.error = lost, error
        self.database = self  # the inserter sends its commands to the collection's database
        self.commands = 0
        # The next ``unconfirmed`` answers carry a writeConcernError with ``code``: the
        # documents are applied, their durability is not confirmed.
        self.unconfirmed, self.code = unconfirmed, code

    def _concern(self) -> list[dict[str, Any]]:
        if not self.unconfirmed:
            return []
        self.unconfirmed -= 1
        return [{"code": self.code, "errmsg": "waiting for replication timed out"}]

    def _apply(self, documents: list[Any]) -> list[dict[str, Any]]:
        errors = []
        for index, document in enumerate(documents):
            key = RawBSONDocument(document.raw)["_id"]
            if key in self.stored:
                errors.append({"index": index, "code": 11000, "errmsg": "E11000 duplicate"})
            else:
                self.stored[key] = document.raw
        if self.lost:
            self.lost -= 1
            raise self.error or pymongo.errors.AutoReconnect("connection reset by peer")
        return errors

    def command(self, command: dict[str, Any]) -> dict[str, Any]:
        assert command["insert"] == self.name and command["ordered"] is False
        self.commands += 1
        errors = self._apply(command["documents"])
        reply: dict[str, Any] = {"n": len(command["documents"]) - len(errors), "ok": 1.0}
        if errors:
            reply["writeErrors"] = errors
        if concern := self._concern():
            reply["writeConcernError"] = concern[0]
        return reply

    def insert_many(self, documents: list[Any], **_: Any) -> None:
        errors = self._apply(documents)
        concern = self._concern()
        if errors or concern:
            details = {
                "nInserted": len(documents) - len(errors),
                "writeErrors": errors,
                "writeConcernErrors": concern,
            }
            raise pymongo.errors.BulkWriteError(details)


def batch(start: int, size: int) -> list[bytes]:
    return [bson.encode({"_id": i, "n": i}) for i in range(start, start + size)]


def run(collection: LosesAnswers, batches: list[list[bytes]]) -> InsertCounts:
    counts = InsertCounts()
    inserter = RawInserter(collection, 2, False, counts, str, policy=QUICK)  # type: ignore[arg-type]
    with inserter:
        for number, documents in enumerate(batches):
            inserter.submit(documents, False, number)
    return counts


def test_a_lost_answer_sends_the_batch_again_without_conflicts() -> None:
    collection = LosesAnswers(lost=2)
    counts = run(collection, [batch(0, 50), batch(50, 50)])
    assert len(collection.stored) == 100
    assert counts.duplicates == 0 and counts.failed == 0
    assert counts.inserted + counts.already == 100 and counts.already >= 50


def test_true_conflicts_in_a_first_try_are_still_conflicts() -> None:
    collection = LosesAnswers(lost=0)
    collection.stored[3] = b"already there before the restore"
    counts = run(collection, [batch(0, 10)])
    assert (counts.inserted, counts.duplicates, counts.already) == (9, 1, 0)
    assert collection.commands == 1  # a batch that fits in one command goes as one


def test_a_batch_too_big_for_one_command_goes_through_insert_many() -> None:
    collection = LosesAnswers(lost=0)
    collection.stored[0] = b"already there before the restore"
    big = [bson.encode({"_id": i, "pad": "x" * (7 << 20)}) for i in range(2)]
    counts = run(collection, [big])
    assert collection.commands == 0
    assert len(collection.stored) == 2
    assert (counts.inserted, counts.duplicates, counts.already) == (1, 1, 0)


def test_a_fault_that_does_not_pass_stops_with_one_error() -> None:
    collection = LosesAnswers(lost=99)
    with pytest.raises(MongoBackupError, match="items: insert failed: connection reset"):
        run(collection, [batch(0, 10)])


def test_a_permanent_error_is_not_retried() -> None:
    refused = pymongo.errors.OperationFailure("not authorized", code=13)
    collection = LosesAnswers(lost=1, error=refused)
    with pytest.raises(MongoBackupError, match="not authorized"):
        run(collection, [batch(0, 10)])
    assert collection.lost == 0  # tried once


@pytest.mark.parametrize("big", [False, True], ids=["insert", "insert_many"])
def test_an_unconfirmed_write_that_passes_is_sent_again_and_confirmed(big: bool) -> None:
    """A step-down while the server waited for the write concern (189): the documents
    are there but may roll back; the batch goes again, and its second answer (all
    duplicates now) is the confirmation."""
    collection = LosesAnswers(lost=0, unconfirmed=1, code=189)
    pad = "x" * (7 << 20) if big else ""
    documents = [bson.encode({"_id": i, "pad": pad}) for i in range(2 if big else 10)]
    counts = run(collection, [documents])
    assert collection.unconfirmed == 0
    assert counts.duplicates == 0 and counts.failed == 0 and not counts.problems
    assert counts.already == len(documents)  # confirmed by the second answer


@pytest.mark.parametrize("big", [False, True], ids=["insert", "insert_many"])
def test_conflicts_in_an_unconfirmed_answer_stay_conflicts_when_sent_again(big: bool) -> None:
    """The first answer refused one document (its _id was in the target before the
    restore) and was not confirmed: sent again, that one is still a conflict, the rest
    are the first try's own documents."""
    collection = LosesAnswers(lost=0, unconfirmed=1, code=189)
    collection.stored[1] = b"already there before the restore"
    pad = "x" * (7 << 20) if big else ""
    documents = [bson.encode({"_id": i, "pad": pad}) for i in range(2 if big else 10)]
    counts = run(collection, [documents])
    assert (counts.duplicates, counts.already, counts.inserted) == (1, len(documents) - 1, 0)


@pytest.mark.parametrize("big", [False, True], ids=["insert", "insert_many"])
def test_an_unconfirmed_write_that_does_not_pass_stops_with_one_error(big: bool) -> None:
    """A write concern timeout (64) is no success and no transient fault: the workers
    stop with an error that says the batch may roll back, and the batch is never
    reported answered (a resumed restore sends it again)."""
    collection = LosesAnswers(lost=0, unconfirmed=1, code=64)
    pad = "x" * (7 << 20) if big else ""
    documents = [bson.encode({"_id": i, "pad": pad}) for i in range(2 if big else 10)]
    answered: list[int] = []
    counts = InsertCounts()
    describe = functools.partial(driver_error_text, secrets=[])
    inserter = RawInserter(
        collection,  # type: ignore[arg-type]
        2,
        False,
        counts,
        describe,
        answered.append,
        policy=QUICK,
    )
    with pytest.raises(MongoBackupError) as raised, inserter:
        inserter.submit(documents, False, 7)
    text = str(raised.value)
    assert text.startswith("items: insert failed: ")
    assert "applied, but not confirmed by the write concern (it may roll back)" in text
    assert text.endswith(": waiting for replication timed out") and "\n" not in text
    assert answered == [] and counts.inserted == 0


def test_a_ctrl_c_while_batches_drain_drops_the_queued_ones_and_returns() -> None:
    """The interrupt lands while the last batches wait in the queue: the one being sent
    ends, the others are never sent (a streamed restore undoes its writes right after),
    and nothing waits forever for a worker that missed its stop."""
    import _thread
    import threading
    import time

    import bson

    from mongo_backup.mongo.inserter import InsertCounts, RawInserter

    sent: list[int] = []

    class Slow:
        name = "c"
        write_concern = WriteConcern()

        def __init__(self) -> None:
            self.database = self

        def command(self, command: dict[str, Any]) -> dict[str, Any]:
            time.sleep(1.0)
            sent.append(len(command["documents"]))
            return {"n": len(command["documents"]), "ok": 1.0}

    inserter = RawInserter(Slow(), 1, False, InsertCounts(), str)  # type: ignore[arg-type]
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt), inserter:
        for ticket in range(3):
            inserter.submit([bson.encode({"_id": ticket})], ticket=ticket)
        threading.Timer(0.3, _thread.interrupt_main).start()
    assert time.monotonic() - started < 5
    assert len(sent) < 3


def test_the_insert_command_carries_each_document_byte_for_byte() -> None:
    # The light per-document object is what the installed encoder copies as it is, and
    # the command it encodes is the one RawBSONDocuments would give.
    from mongo_backup.mongo import inserter

    documents = [bson.encode({"_id": i, "s": "é" * i, "n": {"x": [i]}}) for i in range(50)]
    cls = inserter._encoded_class()
    assert cls is inserter._Encoded
    light = bson.encode({"insert": "c", "documents": list(map(cls, documents))})
    full = bson.encode({"insert": "c", "documents": [RawBSONDocument(d) for d in documents]})
    assert light == full
