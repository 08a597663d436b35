"""Backup fidelity: every BSON type the server stores comes back byte for byte.

Each test inserts documents, backs up through the CLI, decodes every line of the
member with ``document_from_line`` and compares with the raw bytes the server returns
for the same ``_id``: the server's bytes are the truth, whatever it normalised on insert.
"""

from __future__ import annotations

import datetime as dt
import math
import struct
import uuid
from pathlib import Path
from typing import Any

import bson
import pytest
from bson import (
    SON,
    Binary,
    Code,
    DBRef,
    Decimal128,
    Int64,
    MaxKey,
    MinKey,
    ObjectId,
    Regex,
    Timestamp,
)
from bson.raw_bson import RawBSONDocument
from pymongo.errors import OperationFailure

from bsontools import (
    int32_element,
    manifest_entry,
    member_docs_by_id,
    raw_docs_by_id,
    raw_document,
    read_archive_member,
    read_manifest,
)
from conftest import CliRunner
from mongo_backup.archive.extjson import document_from_line
from serverfeatures import lacks


def backup_of(cli: CliRunner, uri: str, db: str, out: Path, *extra: str) -> Path:
    result = cli("backup", "--uri", uri, "--db", db, "--out-dir", out, "-q", *extra)
    assert result.code == 0, result.err
    return Path(result.out.strip())


def assert_member_matches_server(client: Any, archive: Path, db: str, coll: str) -> None:
    entry = manifest_entry(read_manifest(archive), coll)
    expected = raw_docs_by_id(client, db, coll)
    actual = member_docs_by_id(archive, entry["file"])
    assert actual.keys() == expected.keys()
    for key, raw in expected.items():
        assert actual[key] == raw, key
    assert entry["count"] == len(expected)


EVERY_TYPE: list[dict[str, Any]] = [
    {"_id": ObjectId(), "oid": ObjectId("5f0000000000000000000001")},
    {
        "_id": 2,
        "i32": 2**31 - 1,
        "neg": -(2**31),
        "i64": Int64(2**63 - 1),
        "i64min": Int64(-(2**63)),
    },
    {
        "_id": Int64(3),
        "dec": Decimal128("1.000000000000000000000000000000001E+6144"),
        "dec_neg0": Decimal128("-0.00"),
        "dec_nan": Decimal128("NaN"),
        "dec_inf": Decimal128("-Infinity"),
    },
    {
        "_id": "doubles",
        "z": -0.0,
        "nan": math.nan,
        "inf": math.inf,
        "ninf": -math.inf,
        "tiny": 5e-324,
        "big": 1.7976931348623157e308,
        "third": 1 / 3,
    },
    {
        "_id": "dates",
        "epoch": dt.datetime(1970, 1, 1),
        "before": dt.datetime(1601, 1, 1, 0, 0, 0, 1000),
        "ms": bson.DatetimeMS(-1),
        "late": dt.datetime(9999, 12, 31, 23, 59, 59, 999000),
    },
    {
        "_id": "binary",
        "b0": Binary(b"\x00\xff", 0),
        "b3": Binary(b"0123456789abcdef", 3),
        "b4": Binary(uuid.UUID(int=1).bytes, 4),
        "b5": Binary(b"\x01" * 16, 5),
        "b80": Binary(b"user", 0x80),
        "empty": Binary(b"", 0),
    },
    {
        "_id": "regex",
        "r": Regex("^a.*b$", "imsx"),
        "r2": Regex("[\\d]+", ""),
        "r3": Regex("x", "u"),
    },
    {"_id": "ts", "t": Timestamp(4294967295, 4294967295), "t0": Timestamp(0, 0)},
    {"_id": "keys", "min": MinKey(), "max": MaxKey(), "none": None, "t": True, "f": False},
    {"_id": "code", "c": Code("function(){return 1}"), "cs": Code("x+y", {"x": 1, "y": [2]})},
    {"_id": "dbref", "ref": DBRef("other", ObjectId("5f0000000000000000000002"), "db2", extra=1)},
    {
        "_id": "nested",
        "a": [[1, [2, [3, []]]], {"b": [{"c": {}}]}],
        "deep": {"x": {"y": {"z": [None]}}},
    },
    {"_id": "odd keys", "a.b": 1, "$dollar": 2, "": 3, "ünï": "日本語 \u2028 \u0085 \x1c"},
    {
        "_id": "lookalikes",
        "l": {"$numberLong": "5"},
        "o": {"$oid": "5f0000000000000000000003"},
        "d": {"$date": 0},
        "x": {"$mongoBackupBSON": 1},
    },
    {"_id": "strings", "nul": "a\x00b", "ctl": "\t\n\r\x00\x7f", "long": "é" * 1000},
    {"_id": SON([("b", 1), ("a", 2)]), "order": SON([("z", 1), ("a", 2)])},  # key order kept
    {"_id": Binary(uuid.UUID(int=7).bytes, 4)},
]


def test_every_bson_type_round_trips_byte_exact(
    cli: CliRunner, client: Any, mongo_uri: str, db_name: str, tmp_path: Path
) -> None:
    client[db_name].types.insert_many(EVERY_TYPE)
    archive = backup_of(cli, mongo_uri, db_name, tmp_path, "--batch-size", "3")
    assert_member_matches_server(client, archive, db_name, "types")


def test_pretty_backup_round_trips_byte_exact(
    cli: CliRunner, client: Any, mongo_uri: str, db_name: str, tmp_path: Path
) -> None:
    client[db_name].types.insert_many(EVERY_TYPE)
    archive = backup_of(cli, mongo_uri, db_name, tmp_path, "--pretty", "--compress", "gzip")
    assert_member_matches_server(client, archive, db_name, "types")


def insert_raw_or_skip(client: Any, db: str, coll: str, raws: list[bytes], feature: str) -> None:
    """Insert ``raws``; a server that refuses them lacks ``feature`` (serverfeatures)."""
    try:
        client[db][coll].insert_many([RawBSONDocument(raw) for raw in raws])
    except OperationFailure as error:  # a refusal, not any failure
        lacks(feature, error)


def test_deprecated_types_round_trip(
    cli: CliRunner, client: Any, mongo_uri: str, db_name: str, tmp_path: Path
) -> None:
    # Symbol, Undefined and DBPointer cannot be built from Python values: raw BSON.
    # Some servers convert them on insert (to string, null, DBRef); the comparison is
    # with whatever the server then returns.
    raws = [
        raw_document(
            int32_element("_id", 1), b"\x0es\x00" + (4).to_bytes(4, "little") + b"sym\x00"
        ),
        raw_document(int32_element("_id", 2), b"\x06u\x00"),
        raw_document(
            int32_element("_id", 3),
            b"\x0cp\x00"
            + (5).to_bytes(4, "little")
            + b"coll\x00"
            + bytes.fromhex("5f0000000000000000000004"),
        ),
    ]
    insert_raw_or_skip(client, db_name, "deprecated", raws, "deprecated-bson")
    archive = backup_of(cli, mongo_uri, db_name, tmp_path)
    assert_member_matches_server(client, archive, db_name, "deprecated")


def test_special_doubles_keep_their_bits(
    cli: CliRunner, client: Any, mongo_uri: str, db_name: str, tmp_path: Path
) -> None:
    payloads = [0x7FF8000000000001, 0xFFF8000000000000, 0x7FF0000000000001, 0x8000000000000000]
    raws = [
        raw_document(int32_element("_id", i), b"\x01d\x00" + struct.pack("<Q", bits))
        for i, bits in enumerate(payloads)
    ]
    insert_raw_or_skip(client, db_name, "doubles", raws, "nan-payloads")
    archive = backup_of(cli, mongo_uri, db_name, tmp_path)
    assert_member_matches_server(client, archive, db_name, "doubles")


def test_dates_outside_year_1_to_9999_round_trip(
    cli: CliRunner, client: Any, mongo_uri: str, db_name: str, tmp_path: Path
) -> None:
    extremes = [253402300800000, 2**62, -62135596800001, -(2**62)]  # year 10000, ..., year 0
    raws = [
        raw_document(int32_element("_id", i), b"\x09d\x00" + ms.to_bytes(8, "little", signed=True))
        for i, ms in enumerate(extremes)
    ]
    insert_raw_or_skip(client, db_name, "dates", raws, "extreme-dates")
    archive = backup_of(cli, mongo_uri, db_name, tmp_path)
    assert_member_matches_server(client, archive, db_name, "dates")


def test_many_documents_across_batches(
    cli: CliRunner, client: Any, mongo_uri: str, db_name: str, tmp_path: Path
) -> None:
    client[db_name].many.insert_many([{"_id": i, "s": "x" * (i % 50)} for i in range(500)])
    archive = backup_of(cli, mongo_uri, db_name, tmp_path, "--batch-size", "7")
    text = read_archive_member(archive, "many.jsonl")
    assert len(text.splitlines()) == 500
    assert_member_matches_server(client, archive, db_name, "many")


@pytest.mark.slow
def test_document_just_under_16_mib(
    cli: CliRunner, client: Any, mongo_uri: str, db_name: str, tmp_path: Path
) -> None:
    limit = 16 * 1024 * 1024
    overhead = len(bson.encode({"_id": 1, "s": ""}))
    raw = bson.encode({"_id": 1, "s": "\u2028" + "x" * (limit - overhead - 3 - 64)})
    assert limit - 64 <= len(raw) <= limit
    client[db_name].big.insert_one(RawBSONDocument(raw))
    archive = backup_of(cli, mongo_uri, db_name, tmp_path)
    (line,) = read_archive_member(archive, "big.jsonl").splitlines()
    assert document_from_line(line) == raw_docs_by_id(client, db_name, "big")["int:1"] == raw
