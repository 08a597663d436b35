"""raise_unconfirmed and confirmed_command without a server: a reply's write concern
error becomes one WriteConcernError with a one-line message; a confirmed reply passes;
a bulk write's error is told by its first refusal."""

from __future__ import annotations

from typing import Any

import pymongo.errors
import pytest
from pymongo.write_concern import WriteConcern

from mongo_backup.mongo.confirmed import confirmed_command, raise_unconfirmed
from mongo_backup.retry import RetryPolicy, driver_error_text, is_transient

TIMEOUT = {"code": 64, "codeName": "WriteConcernFailed", "errmsg": "timed out\nsecond line"}


@pytest.mark.parametrize(
    "reply",
    [
        {"ok": 1.0, "n": 3, "writeConcernError": TIMEOUT},  # a command's reply
        {"nInserted": 3, "writeErrors": [], "writeConcernErrors": [TIMEOUT]},  # bulk details
    ],
    ids=["command", "bulk"],
)
def test_a_write_concern_error_is_raised_with_one_line(reply: dict[str, Any]) -> None:
    with pytest.raises(pymongo.errors.WriteConcernError) as raised:
        raise_unconfirmed(reply)
    assert raised.value.code == 64 and not is_transient(raised.value)
    assert driver_error_text(raised.value, []) == (
        "applied, but not confirmed by the write concern (it may roll back): timed out "
        "(WriteConcernFailed)"
    )


def test_a_step_down_while_waiting_is_transient() -> None:
    stepped_down = {"code": 189, "errmsg": "primary stepped down while waiting"}
    with pytest.raises(pymongo.errors.WriteConcernError) as raised:
        raise_unconfirmed({"writeConcernError": stepped_down})
    assert is_transient(raised.value)


@pytest.mark.parametrize(
    "reply", [None, {}, {"ok": 1.0}, {"nInserted": 1, "writeConcernErrors": []}]
)
def test_a_confirmed_reply_passes(reply: dict[str, Any] | None) -> None:
    raise_unconfirmed(reply)


class Database:
    def __init__(self, replies: list[Any]) -> None:
        self.replies, self.sent = replies, []

    def command(self, command: dict[str, Any]) -> dict[str, Any]:
        self.sent.append(command)
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply


def test_confirmed_command_sends_the_write_concern_and_checks_the_reply() -> None:
    db = Database([{"ok": 1.0}, {"ok": 1.0}, {"ok": 1.0, "writeConcernError": TIMEOUT}])
    durable = WriteConcern(w="majority", j=True)
    command = {"createIndexes": "c", "indexes": []}
    assert confirmed_command(db, durable, command) == {"ok": 1.0}  # type: ignore[arg-type]
    confirmed_command(db, WriteConcern(), command)  # type: ignore[arg-type]
    with pytest.raises(pymongo.errors.WriteConcernError):
        confirmed_command(db, durable, command)  # type: ignore[arg-type]
    assert db.sent[:2] == [
        {"createIndexes": "c", "indexes": [], "writeConcern": {"w": "majority", "j": True}},
        {"createIndexes": "c", "indexes": []},  # the server's default: none sent
    ]
    assert command == {"createIndexes": "c", "indexes": []}  # the caller's is left alone


def test_a_step_down_while_waiting_is_sent_again_per_the_policy() -> None:
    stepped_down = {"ok": 1.0, "writeConcernError": {"code": 189, "errmsg": "stepped down"}}
    not_primary = pymongo.errors.NotPrimaryError("not primary")
    db = Database([stepped_down, not_primary, {"ok": 1.0}])
    quick = RetryPolicy(retries=2, base_delay=0.001)
    confirmed_command(db, WriteConcern(w="majority"), {"createIndexes": "c"}, quick)  # type: ignore[arg-type]
    assert len(db.sent) == 3
    db = Database([stepped_down])  # without a policy: raised at once
    with pytest.raises(pymongo.errors.WriteConcernError):
        confirmed_command(db, WriteConcern(w="majority"), {"createIndexes": "c"})  # type: ignore[arg-type]


def test_a_bulk_write_error_is_told_by_its_first_refusal() -> None:
    """pymongo's text of a bulk write error is a dump of its details; the user gets the
    first refusal's own message instead, and how many more there were."""
    duplicate = {"index": 0, "code": 11000, "errmsg": "E11000 duplicate key error\ndetail"}
    details = {"writeErrors": [duplicate, duplicate], "writeConcernErrors": [TIMEOUT]}
    error = pymongo.errors.BulkWriteError(details)
    assert driver_error_text(error, []) == "E11000 duplicate key error (and 2 more)"
    only_concern = pymongo.errors.BulkWriteError(
        {"writeErrors": [], "writeConcernErrors": [TIMEOUT]}
    )
    assert driver_error_text(only_concern, []) == (
        "applied, but not confirmed by the write concern (it may roll back): timed out "
        "(WriteConcernFailed)"
    )
