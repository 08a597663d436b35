"""Where the server's history stands (``mongo/cluster_time.py``): a passing fault is
ridden out, a failure is an error, and only a server without history answers None.

Found by the chaos campaign: a connection reset while a full backup asked for its end
point made it "consistency: none" without a word, and ``watch`` could not continue it."""

from __future__ import annotations

from typing import Any

import pymongo.errors
import pytest
from bson import Timestamp

from mongo_backup.errors import MongoBackupError
from mongo_backup.mongo.cluster_time import latest_point, majority_point
from mongo_backup.retry import RetryPolicy

POLICY = RetryPolicy(retries=3, base_delay=0.0)
HELLO = {
    "setName": "rs0",
    "lastWrite": {"opTime": {"ts": Timestamp(20, 2)}, "majorityOpTime": {"ts": Timestamp(20, 1)}},
}


class FlakyAdmin:
    def __init__(self, failures: list[BaseException], reply: dict[str, Any]) -> None:
        self.failures, self.reply, self.calls = list(failures), reply, 0

    def command(self, name: str) -> dict[str, Any]:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return self.reply


class FakeClient:
    def __init__(self, admin: FlakyAdmin) -> None:
        self.admin = admin


def test_a_passing_fault_is_ridden_out() -> None:
    reset = pymongo.errors.AutoReconnect("connection reset")
    admin = FlakyAdmin([reset, reset], HELLO)
    assert latest_point(FakeClient(admin), [], POLICY) == Timestamp(20, 2)  # type: ignore[arg-type]
    assert admin.calls == 3
    admin = FlakyAdmin([reset], HELLO)
    assert majority_point(FakeClient(admin), [], POLICY) == Timestamp(20, 1)  # type: ignore[arg-type]


def test_a_failure_is_an_error_not_no_history() -> None:
    refused = pymongo.errors.OperationFailure("not authorized", code=13)
    with pytest.raises(MongoBackupError, match="where its history stands"):
        latest_point(FakeClient(FlakyAdmin([refused], HELLO)), [], POLICY)  # type: ignore[arg-type]
    reset = pymongo.errors.AutoReconnect("connection reset")
    with pytest.raises(MongoBackupError, match="connection reset"):
        latest_point(FakeClient(FlakyAdmin([reset] * 5, HELLO)), [], POLICY)  # type: ignore[arg-type]


def test_a_standalone_has_no_history() -> None:
    assert majority_point(FakeClient(FlakyAdmin([], {"ismaster": True})), [], POLICY) is None  # type: ignore[arg-type]
