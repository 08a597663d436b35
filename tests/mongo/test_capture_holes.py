"""A write that shows in the change stream after a later time was handed out.

A server may give out a cluster time (``hello``'s ``lastWrite``, which a backup takes
as its end) while a write with an earlier time is still committing: the stream shows
that write only afterwards (an "oplog hole"; SecantusDB does under concurrent writes,
found by a ``watch`` under three writers that lost one insert). The next capture
begins at the previous one's token, so it must take that write although its time is
before its ``after``. Pure unit tests: the stream is a scripted follower.
"""

from __future__ import annotations

from typing import Any

import bson
import pytest
from bson import Timestamp
from bson.raw_bson import RawBSONDocument

from mongo_backup.mongo.change_capture import capture
from mongo_backup.names import keep_all


def event(second: int, key: int) -> RawBSONDocument:
    return RawBSONDocument(
        bson.encode(
            {
                "_id": {"_data": f"token-{key}"},
                "operationType": "insert",
                "clusterTime": Timestamp(second, 1),
                "ns": {"db": "d", "coll": "c"},
                "documentKey": {"_id": key},
                "fullDocument": {"_id": key},
            }
        )
    )


class ScriptedStream:
    """A follower that serves the batches it is given, then empty ones (a server whose
    tokens carry no time: an empty batch is "nothing more")."""

    def __init__(self, *batches: list[RawBSONDocument]) -> None:
        self.batches = list(batches)
        self.held: list[RawBSONDocument] = []
        self.token: dict[str, Any] | None = None
        self.position = None
        self.opened_at: list[Any] = []

    def open(self, db: Any, token: dict[str, Any]) -> None:
        self.opened_at.append(token)
        self.token = token

    def next_batch(self) -> list[RawBSONDocument]:
        if self.held:
            held, self.held = self.held, []
            return held
        return self.batches.pop(0) if self.batches else []

    def buffered(self) -> bool:
        return bool(self.held)

    def hold(self, events: list[RawBSONDocument]) -> None:
        self.held = events

    def close(self) -> None:
        pass


def keys(raw_events: list[bytes]) -> list[int]:
    keys: list[int] = []
    for raw in raw_events:
        keys.extend(document["documentKey"]["_id"] for document in bson.decode_all(raw))
    return keys


@pytest.mark.parametrize("batches", [False, True], ids=["event by event", "whole batches"])
def test_a_late_write_before_the_last_end_is_taken_by_the_next_capture(batches: bool) -> None:
    # The first capture ends at second 10 with event 5 seen; the write timed at second 8
    # was still committing and shows only now, before the write at second 12.
    stream = ScriptedStream([event(5, 5)], [], [event(8, 8), event(12, 12)])
    first: list[bytes] = []
    done = capture(
        object(),  # type: ignore[arg-type]  (the scripted stream never uses it)
        start_token={"_data": "start"},
        after=Timestamp(1, 1),
        until=Timestamp(10, 1),
        sink=first.append,
        wanted=keep_all,
        secrets=[],
        follower=stream,  # type: ignore[arg-type]
        batches=batches,
    )
    assert keys(first) == [5]
    assert done.token == {"_data": "token-5"}
    second: list[bytes] = []
    capture(
        object(),  # type: ignore[arg-type]
        start_token=done.token,
        after=done.reached,
        until=Timestamp(20, 1),
        sink=second.append,
        wanted=keep_all,
        secrets=[],
        follower=stream,  # type: ignore[arg-type]
        batches=batches,
    )
    assert keys(second) == [8, 12]
