"""The check of the listing (was a collection created, dropped or renamed while the backup
planned?) runs beside the reads once the first unit is exported, and gives the answer,
or raises the error, that asking it after the reads gave."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pymongo import MongoClient

from mongo_backup.backup import consistency
from mongo_backup.backup.consistency import ListingCheck
from mongo_backup.backup.run import backup
from mongo_backup.errors import MongoBackupError
from mongo_backup.mongo.cluster_time import SnapshotCheck


def plan(snapshot: bool = True) -> Any:
    state = {"snapshot": snapshot, "start": {"t": 1, "i": 1}, "start_token": {"_data": "00"}}
    return SimpleNamespace(consistency=state)


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The threads the check is asked on; it answers "changed"."""
    threads: list[str] = []

    def check(source: Any, state: dict[str, Any], token: Any) -> bool:
        threads.append(threading.current_thread().name)
        return True

    monkeypatch.setattr(consistency, "_ddl_after_start", check)
    return threads


def test_a_started_check_answers_from_its_own_thread(asked: list[str]) -> None:
    check = ListingCheck(SimpleNamespace(), plan())
    check.start()
    check.start()  # once only
    assert check.changed() is True
    assert asked == ["listing-check"]


def test_a_check_never_started_is_asked_when_its_answer_is(asked: list[str]) -> None:
    assert ListingCheck(SimpleNamespace(), plan()).changed() is True
    assert asked == [threading.current_thread().name]


def test_no_check_runs_for_a_backup_that_is_no_snapshot(asked: list[str]) -> None:
    ListingCheck(SimpleNamespace(), plan(snapshot=False)).start()
    assert asked == []


def test_no_check_runs_once_the_reads_prove_to_be_no_snapshot(asked: list[str]) -> None:
    check = ListingCheck(SimpleNamespace(), plan(), needed=lambda: False)
    check.start()
    assert asked == []


def test_without_a_thread_the_check_is_asked_at_the_end(
    asked: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    check = ListingCheck(SimpleNamespace(), plan())
    check.start()
    assert check.changed() is True
    assert asked == [threading.current_thread().name]


def test_the_error_of_the_check_reaches_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(source: Any, state: dict[str, Any], token: Any) -> bool:
        raise MongoBackupError("reading the change stream: connection closed")

    monkeypatch.setattr(consistency, "_ddl_after_start", fail)
    check = ListingCheck(SimpleNamespace(), plan())
    check.start()
    with pytest.raises(MongoBackupError, match="connection closed"):
        check.changed()


def test_a_backup_asks_it_once_its_first_collection_is_exported(
    client: MongoClient[Any],
    mongo_uri: str,
    db_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On the check's own thread, started by the export of the first of three
    collections, and the backup is the snapshot it would be without it."""
    for n in range(3):
        client[db_name][f"c{n}"].insert_many([{"_id": i, "n": n} for i in range(200)])
    threads: list[str] = []
    real = consistency._ddl_after_start

    def check(source: Any, state: dict[str, Any], token: Any) -> bool:
        threads.append(threading.current_thread().name)
        return bool(real(source, state, token))

    monkeypatch.setattr(consistency, "_ddl_after_start", check)
    # Every read taken as answered at the start time: SecantusDB answers at its latest
    # time, and a write between the start and a read (another test's) would make the
    # backup capture changes instead, a backup that needs no check of the listing.
    monkeypatch.setattr(SnapshotCheck, "honoured", property(lambda self: True))
    result = backup(mongo_uri, db_name, tmp_path / "out", jobs=1)
    if not client.admin.command("hello").get("setName"):
        assert threads == []  # a standalone server: no snapshot, nothing to check
        return
    assert threads == ["listing-check"]
    assert result.manifest.consistency == "snapshot"
