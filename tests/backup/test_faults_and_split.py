"""Resilience and scale: transient faults retried after the last ``_id``, permanent ones
failing their collection at once, range-split and parallel exports equal to one cursor.

Faults come from the ``failCommand`` fail point (servers started with test commands);
a server that refuses it skips those tests. Pure unit tests of the retry rules, the size
parser and the prefetch helpers close the file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import re
from pathlib import Path
from typing import Any

import bson
import pytest
from bson import Int64
from pymongo.errors import AutoReconnect, CursorNotFound, NetworkTimeout, OperationFailure

from bsontools import read_manifest
from conftest import CliRunner
from mongo_backup import retry
from mongo_backup.cli.cmd_backup import byte_size
from mongo_backup.mongo.prefetch import _drop_leading, id_key_of, last_id_key
from resiliencetools import (
    backup_cli,
    collection_digests,
    data_members,
    estimated_size,
    fail_point,
    filled,
    mixed_ids,
    retry_numbers,
    retry_warnings,
)
from restoretools import assert_same_bytes, backup_archive, restore_cli
from serverfeatures import lacks

FAST = ("--batch-size", "100", "--retry-delay", "0.01")


# --- 1. transient faults: retried after the last _id, same archive as without faults

GETMORE_FAULTS = {
    "closeConnection": {"closeConnection": True},
    "PrimarySteppedDown": {"errorCode": 189},
    "CursorNotFound": {"errorCode": 43},
    "InterruptedDueToReplStateChange": {"errorCode": 11602},
    "NotWritablePrimary": {"errorCode": 10107},
}


@pytest.mark.parametrize(
    ("command", "fault"),
    [("getMore", fault) for fault in GETMORE_FAULTS.values()]
    + [("find", {"closeConnection": True}), ("find", {"errorCode": 11602})],
    ids=[f"getMore-{name}" for name in GETMORE_FAULTS] + ["find-closeConnection", "find-11602"],
)
def test_transient_fault_is_retried_and_changes_nothing(
    cli: CliRunner,
    client: Any,
    mongo_uri: str,
    db_name: str,
    target_db: str,
    tmp_path: Path,
    command: str,
    fault: dict[str, Any],
) -> None:
    filled(client, db_name, "docs", 2000)
    reference = backup_archive(cli, mongo_uri, db_name, tmp_path / "ref", *FAST)
    with fail_point(client, {"times": 2}, failCommands=[command], **fault):
        hit = backup_cli(cli, mongo_uri, db_name, tmp_path / "hit", *FAST)
    assert hit.code == 0, hit.err
    warnings = retry_warnings(hit.err)
    if command == "getMore":  # drivers never retry a getMore: both faults reach the tool
        assert len(warnings) == 2, hit.err
        assert all("after the last _id read" in line for line in warnings), hit.err
    else:  # the driver's own retryable read may absorb the first fault of a find
        assert 1 <= len(warnings) <= 2, hit.err
    archive = Path(hit.out.strip())
    assert collection_digests(archive) == collection_digests(reference)
    assert collection_digests(archive)["docs"][:2] == ("ok", 2000)
    restored = restore_cli(cli, archive, mongo_uri, "--db", target_db)
    assert restored.code == 0, restored.err
    assert assert_same_bytes(client, db_name, target_db, "docs") == 2000


def test_retry_count_starts_again_after_each_batch(
    cli: CliRunner, client: Any, mongo_uri: str, db_name: str, tmp_path: Path
) -> None:
    """A getMore that always fails still lets each re-opened cursor read its first batch:
    the backup advances a batch per retry and completes (the budget is per stall)."""
    filled(client, db_name, "docs", 450)
    reference = backup_archive(cli, mongo_uri, db_name, tmp_path / "ref", *FAST)
    with fail_point(client, "alwaysOn", failCommands=["getMore"], closeConnection=True):
        hit = backup_cli(cli, mongo_uri, db_name, tmp_path / "hit", *FAST, "--retries", "2", "-q")
    assert hit.code == 0, hit.err
    # Batches of 100 (0-99, ..., 400-449): each getMore fails, each re-opened find reads.
    # (A server without snapshot reads then has the changes made during the backup read
    # from the change stream, whose getMores fail too: that capture gives up after its
    # retries and the backup says "consistency: none". It used to pass: pymongo's change
    # stream resumed by itself and answered "nothing" without a getMore, which the capture
    # took for "all read", the loss the chaos campaign found in a watch.)
    docs = "\n".join(line for line in hit.err.splitlines() if "reading 'docs'" in line)
    assert retry_numbers(docs) == [(1, 2)] * 4, hit.err
    assert collection_digests(Path(hit.out.strip())) == collection_digests(reference)


# --- 2 and 3. permanent faults, no retries, retries exhausted: the collection fails alone


@pytest.mark.parametrize(
    ("fault", "extra"),
    [({"errorCode": 13}, ()), ({"closeConnection": True}, ("--retries", "0"))],
    ids=["Unauthorized", "transient-with-retries-0"],
)
def test_fault_without_retry_fails_the_collection_at_once(
    cli: CliRunner,
    client: Any,
    mongo_uri: str,
    db_name: str,
    tmp_path: Path,
    fault: dict[str, Any],
    extra: tuple[str, ...],
) -> None:
    filled(client, db_name, "docs", 500)
    filled(client, db_name, "small", 20)  # one batch, no getMore: untouched by the fault
    with fail_point(client, {"times": 1}, failCommands=["getMore"], **fault):
        hit = backup_cli(cli, mongo_uri, db_name, tmp_path, *FAST, *extra, "--json", "-q")
    assert hit.code == 3, hit.err
    assert retry_warnings(hit.err) == [], hit.err
    result = json.loads(hit.out)
    assert (result["complete"], result["exit_code"]) == (False, 3)
    by_name = {entry["name"]: entry for entry in result["collections"]}
    assert by_name["docs"]["status"] == "failed" and by_name["docs"]["file"] is None
    assert by_name["docs"]["error"].startswith("reading 'docs': ")
    if fault.get("errorCode") == 13:
        assert "Unauthorized" in by_name["docs"]["error"]
    assert (by_name["small"]["status"], by_name["small"]["count"]) == ("ok", 20)
    digests = collection_digests(Path(result["archive"]))
    assert digests["docs"][0] == "failed" and digests["small"][:2] == ("ok", 20)


def test_retries_exhausted_fail_only_that_collection(
    cli: CliRunner, client: Any, mongo_uri: str, db_name: str, tmp_path: Path
) -> None:
    # -j 1 reads the largest collection first: alpha, beta, then victim. Each of the
    # first two needs one find (fewer documents than a batch); every find after fails.
    filled(client, db_name, "alpha", 60, pad=300)
    filled(client, db_name, "beta", 40, pad=300)
    filled(client, db_name, "victim", 5, pad=0)
    with fail_point(client, {"skip": 2}, failCommands=["find"], closeConnection=True):
        hit = backup_cli(
            cli, mongo_uri, db_name, tmp_path, *FAST, "-j", "1", "--retries", "2", "--json"
        )
    assert hit.code == 3, hit.err
    assert retry_numbers(hit.err) == [(1, 2), (2, 2)], hit.err
    assert all("'victim'" in line for line in retry_warnings(hit.err)), hit.err
    by_name = {entry["name"]: entry for entry in json.loads(hit.out)["collections"]}
    assert by_name["victim"]["status"] == "failed"
    assert [(by_name[n]["status"], by_name[n]["count"]) for n in ("alpha", "beta")] == [
        ("ok", 60),
        ("ok", 40),
    ]


# --- 4 and 5. range-split and parallel exports equal a single cursor's, byte for byte


def test_range_split_export_equals_single_cursor_export(
    cli: CliRunner, client: Any, mongo_uri: str, db_name: str, tmp_path: Path
) -> None:
    ids = mixed_ids(250)
    random.Random(4).shuffle(ids)
    try:
        client[db_name].mixed.insert_many([{"_id": v, "i": i} for i, v in enumerate(ids)])
    except OperationFailure as error:  # MinKey/MaxKey as _id on a server that refuses them
        lacks("id-types", error)
    single = backup_archive(cli, mongo_uri, db_name, tmp_path / "one", "-j", "1")
    # A threshold a quarter of the size the tool estimates: 3 to 4 ranges on any server.
    size = estimated_size(client, db_name, "mixed")
    threshold = f"{size // 4 // 1024 + 1}KB"
    result = cli(
        "backup", "--uri", mongo_uri, "--db", db_name, "--out-dir", tmp_path / "split", "-v",
        "--split-threshold", threshold, "-j", "2",
    )  # fmt: skip
    assert result.code == 0, result.err
    ranges = re.search(r"mixed: \d+ bytes, read as (\d+) _id ranges", result.err)
    assert ranges is not None, result.err
    assert 3 <= int(ranges.group(1)) <= 4
    split = Path(result.out.strip())
    assert data_members(split) == data_members(single)
    assert collection_digests(split) == collection_digests(single)
    assert collection_digests(split)["mixed"][:2] == ("ok", len(ids))
    # The ranges were joined: one member, no part files.
    assert read_manifest(split)["collections"][0]["file"] == "mixed.jsonl"


def test_parallel_jobs_write_the_same_members_as_one_job(
    cli: CliRunner, client: Any, mongo_uri: str, db_name: str, tmp_path: Path
) -> None:
    for index, count in enumerate([700, 450, 300, 120, 1]):
        filled(client, db_name, f"c{index}", count, pad=index * 30)
    client[db_name].create_collection("empty")
    client[db_name].strings.insert_many([{"_id": f"k{i:04d}", "v": i} for i in range(250)])
    one = backup_archive(cli, mongo_uri, db_name, tmp_path / "one", "-j", "1", "--batch-size", "64")
    three = backup_archive(
        cli, mongo_uri, db_name, tmp_path / "three", "-j", "3", "--batch-size", "64"
    )
    assert len(data_members(one)) == 7
    assert data_members(three) == data_members(one)
    assert collection_digests(three) == collection_digests(one)


# --- 6. collections without an orderable _id start again on a transient fault


@pytest.mark.parametrize("kind", ["timeseries", "clustered"])
def test_unordered_collection_survives_a_fault(
    cli: CliRunner, client: Any, mongo_uri: str, db_name: str, tmp_path: Path, kind: str
) -> None:
    db = client[db_name]
    options: dict[str, Any] = (
        {"timeseries": {"timeField": "t", "metaField": "m"}}
        if kind == "timeseries"
        else {"clusteredIndex": {"key": {"_id": 1}, "unique": True}}
    )
    try:
        db.create_collection("series", **options)
    except OperationFailure as error:
        lacks("collection-types", f"{kind}: {error}")
    start = dt.datetime(2024, 1, 1)
    db.series.insert_many(
        [{"_id": i, "t": start + dt.timedelta(minutes=i), "m": i % 3, "v": i} for i in range(450)]
    )
    # On MongoDB a timeseries collection has no _id index and lists as type
    # "timeseries"; SecantusDB lists it as a plain collection with one, so the tool
    # (rightly) reads it in _id order there and continues after the last _id instead.
    info = next(db.list_collections(filter={"name": "series"}))
    ordered = (
        info.get("type") == "collection"
        and "clusteredIndex" not in info.get("options", {})
        and any(list(ix["key"]) == ["_id"] for ix in db.series.list_indexes())
    )
    reference = backup_archive(cli, mongo_uri, db_name, tmp_path / "ref", *FAST)
    with fail_point(client, {"times": 1}, failCommands=["getMore"], closeConnection=True):
        hit = backup_cli(cli, mongo_uri, db_name, tmp_path / "hit", *FAST)
    assert hit.code == 0, hit.err
    expected = "after the last _id read" if ordered else "so it starts again (retry 1 of 5"
    assert expected in hit.err, hit.err
    assert collection_digests(Path(hit.out.strip())) == collection_digests(reference)
    assert collection_digests(reference)["series"][:2] == ("ok", 450)


def test_a_collection_with_document_ids_starts_again_instead_of_continuing(
    cli: CliRunner, mongo_uri: str, client: Any, db_name: str, tmp_path: Path
) -> None:
    # Servers disagree on how embedded-document _ids are ordered (SecantusDB walks them
    # in encoding order and bounds them in BSON order), so continuing after one could
    # skip documents: the tool reads such a collection again from the start.
    client[db_name].docs.insert_many([{"_id": {"a": i, "b": -i}, "v": i} for i in range(450)])
    reference = backup_archive(cli, mongo_uri, db_name, tmp_path / "ref", *FAST)
    with fail_point(client, {"times": 1}, failCommands=["getMore"], closeConnection=True):
        hit = backup_cli(cli, mongo_uri, db_name, tmp_path / "hit", *FAST)
    assert hit.code == 0, hit.err
    assert "so it starts again (retry 1 of 5" in hit.err, hit.err
    assert collection_digests(Path(hit.out.strip())) == collection_digests(reference)
    assert collection_digests(reference)["docs"][:2] == ("ok", 450)


# --- 7. unit tests: no server


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (AutoReconnect("connection reset"), True),
        (NetworkTimeout("timed out"), True),
        (CursorNotFound("cursor id 7 not found", 43), True),
        (OperationFailure("stepped down", 189), True),
        (OperationFailure("state change", 11602), True),
        (OperationFailure("labelled", 2, {"errorLabels": ["RetryableError"]}), True),
        (OperationFailure("unauthorized", 13), False),
        (OperationFailure("auth failed", 18), False),
        (OperationFailure("bad value", 2), False),
        (OperationFailure("no code"), False),
        (ValueError("not a driver error"), False),
    ],
)
def test_is_transient(error: BaseException, transient: bool) -> None:
    assert retry.is_transient(error) is transient


@pytest.mark.parametrize("jitter", [0.0, 0.999999])
def test_retry_delay_doubles_up_to_the_cap(monkeypatch: pytest.MonkeyPatch, jitter: float) -> None:
    monkeypatch.setattr(retry.random, "random", lambda: jitter)
    policy = retry.RetryPolicy(retries=10, base_delay=0.5, max_delay=3.0)
    factor = 1 + jitter / 4
    expected = [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]
    assert [policy.delay(n) for n in range(1, 7)] == pytest.approx([e * factor for e in expected])
    assert policy.delay(60) == pytest.approx(3.0 * factor)  # no overflow, still capped
    assert retry.NO_RETRIES.retries == 0


@pytest.mark.parametrize(
    ("text", "size"),
    [("256MB", 256 << 20), ("1GiB", 1 << 30), ("4096", 4096), ("1.5KB", 1536),
     ("64kb", 65536), (" 2 TB ", 2 << 40), ("10B", 10)],
)  # fmt: skip
def test_byte_size_accepts(text: str, size: int) -> None:
    assert byte_size(text) == size


@pytest.mark.parametrize("text", ["", "abc", "-1", "0", "12XB", "0.5", "KB", "1MBB"])
def test_byte_size_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="not a size"):
        byte_size(text)


@pytest.mark.parametrize("text", ["inf", "1e400KB", "nan"])
def test_byte_size_rejects_infinite_sizes(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        byte_size(text)


def test_id_keys_keep_the_exact_bson_type() -> None:
    assert id_key_of(bson.encode({"x": 1, "_id": 5, "y": "z"})) == bson.encode({"_id": 5})
    keys = {id_key_of(bson.encode({"_id": value})) for value in (5, Int64(5), 5.0)}
    assert len(keys) == 3  # equal numbers, distinct types: never confused
    far = bson.DatetimeMS(2**62)  # outside Python's datetime range
    assert id_key_of(bson.encode({"_id": far, "v": 1})) == bson.encode({"_id": far})


def test_last_id_key_and_drop_leading_on_raw_batches() -> None:
    docs = [bson.encode({"_id": value, "v": "x" * n}) for n, value in enumerate(["a", 2, 3.5])]
    batch = b"".join(docs)
    assert last_id_key(batch) == bson.encode({"_id": 3.5})
    assert last_id_key(docs[0]) == bson.encode({"_id": "a"})
    assert _drop_leading(batch, bson.encode({"_id": "a"})) == docs[1] + docs[2]
    assert _drop_leading(batch, bson.encode({"_id": 2})) == batch  # only the first one
    assert _drop_leading(batch, bson.encode({"_id": Int64(2)})) == batch
    assert _drop_leading(docs[0], bson.encode({"_id": "a"})) == b""
    assert _drop_leading(b"", bson.encode({"_id": "a"})) == b""
