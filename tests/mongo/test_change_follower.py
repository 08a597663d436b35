"""A change stream kept open from one capture to the next (``ChangeFollower``, what
``watch`` reads its increments through): consecutive captures hand on every event once,
in order, with no new ``aggregate`` while each starts where the previous one ended; any
other start, or a fault, opens a new stream after the last event handed on."""

from __future__ import annotations

from typing import Any

import pytest
from bson import Timestamp
from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient, monitoring

from mongo_backup.mongo.change_capture import ChangeFollower, capture, stream_position
from mongo_backup.mongo.cluster_time import latest_point
from mongo_backup.mongo.connection import APP_NAME
from mongo_backup.retry import RetryPolicy
from resiliencetools import fail_point

pytestmark = pytest.mark.usefixtures("client")


class Aggregates(monitoring.CommandListener):
    """Counts the change streams opened (``aggregate`` commands)."""

    def __init__(self) -> None:
        self.opened = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.opened += event.command_name == "aggregate"

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def _writes(client: MongoClient[Any], db: str, start: int, count: int) -> Timestamp:
    client[db].items.insert_many([{"_id": start + k} for k in range(count)])
    point = latest_point(client, [])
    assert point is not None
    return point


def _ids(events: list[bytes]) -> list[int]:
    return [RawBSONDocument(raw)["documentKey"]["_id"] for raw in events]


def _capture(
    db: Any, token: dict[str, Any], after: Timestamp, until: Timestamp, **extra: Any
) -> tuple[list[bytes], Any]:
    seen: list[bytes] = []
    captured = capture(
        db,
        start_token=token,
        after=after,
        until=until,
        sink=seen.append,
        wanted=lambda name: True,
        secrets=[],
        **extra,
    )
    return seen, captured


@pytest.fixture
def watched(mongo_uri: str, db_name: str) -> Any:
    listener = Aggregates()
    client: MongoClient[Any] = MongoClient(mongo_uri, event_listeners=[listener], appname=APP_NAME)
    try:
        client[db_name].create_collection("items")
        start = latest_point(client, [])
        assert start is not None
        yield client, client[db_name], listener, stream_position(client[db_name]), start
    finally:
        client.close()


@pytest.fixture
def follower() -> Any:
    kept = ChangeFollower()
    yield kept
    kept.close()


def test_consecutive_captures_read_on_from_one_stream(
    watched: Any, follower: ChangeFollower
) -> None:
    client, db, listener, token, start = watched
    first_end = _writes(client, db.name, 0, 30)
    second_end = _writes(client, db.name, 30, 30)  # before the first capture: held back
    opened = listener.opened
    first, captured = _capture(db, token, start, first_end, follower=follower)
    assert _ids(first) == list(range(30))
    third_end = _writes(client, db.name, 60, 5)
    second, captured = _capture(db, captured.token, first_end, second_end, follower=follower)
    third, captured = _capture(db, captured.token, second_end, third_end, follower=follower)
    assert _ids(second) == list(range(30, 60))
    assert _ids(third) == list(range(60, 65))
    assert listener.opened == opened + 1  # one stream for the three captures
    # The tokens it returned are good for a stream of one's own (what a restarted
    # watch does): nothing after the last capture's end, nothing twice.
    _writes(client, db.name, 65, 2)
    end = latest_point(client, [])
    rest, _ = _capture(db, captured.token, third_end, end)
    assert _ids(rest) == [65, 66]


def test_another_start_opens_a_new_stream(watched: Any, follower: ChangeFollower) -> None:
    client, db, listener, token, start = watched
    _writes(client, db.name, 0, 10)
    end = _writes(client, db.name, 10, 10)
    _capture(db, token, start, end, follower=follower)
    opened = listener.opened
    # A watch whose increment failed starts again from its base: the older token.
    again, _ = _capture(db, token, start, end, follower=follower)
    assert _ids(again) == list(range(20))
    assert listener.opened == opened + 1


def test_a_fault_reopens_after_the_last_event_handed_on(
    watched: Any, follower: ChangeFollower
) -> None:
    client, db, _, token, start = watched
    first_end = _writes(client, db.name, 0, 10)
    _, captured = _capture(db, token, start, first_end, follower=follower)
    end = _writes(client, db.name, 10, 10)
    with fail_point(client, {"times": 1}, failCommands=["getMore"], closeConnection=True):
        events, captured = _capture(
            db,
            captured.token,
            first_end,
            end,
            follower=follower,
            policy=RetryPolicy(3, 0.0),
        )
    assert _ids(events) == list(range(10, 20))
