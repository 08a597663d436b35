"""Backup, then restore into another database: every document comes back byte for byte.

The source database's bytes (read with RawBSONDocument) are the truth: whatever the
server normalised on insert, the restored copy must hold exactly the same bytes per
``_id``. Collection kinds and index types are checked through their options and index
specs, then once more with ``verify --against-uri`` (which must say OK).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import uuid
from collections.abc import Callable, Iterator
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

from bsontools import int32_element, raw_document
from conftest import BSON_CORPUS, CliRunner
from restoretools import (
    assert_same_bytes,
    backup_archive,
    collection_options,
    index_specs,
    restore_cli,
    user_collections,
)
from serverfeatures import lacks

# _ids are all distinct strings (or distinct types no relaxed conversion can merge),
# so even the lossy relaxed form cannot turn two documents into one.
TORTURE: list[dict[str, Any]] = [
    {
        "_id": "ints",
        "i32": 2**31 - 1,
        "i32min": -(2**31),
        "i64": Int64(2**63 - 1),
        "i64min": Int64(-(2**63)),
        "small64": Int64(5),
    },
    {
        "_id": "doubles",
        "z": -0.0,
        "nan": math.nan,
        "inf": math.inf,
        "ninf": -math.inf,
        "tiny": 5e-324,
        "big": 1.7976931348623157e308,
        "whole": 2.0,
        "third": 1 / 3,
    },
    {
        "_id": "decimals",
        "d": Decimal128("1.000000000000000000000000000000001E+6144"),
        "neg0": Decimal128("-0.00"),
        "nan": Decimal128("NaN"),
        "snan": Decimal128("-sNaN"),
        "inf": Decimal128("-Infinity"),
        "exp": Decimal128("1E-6176"),
    },
    {
        "_id": "dates",
        "epoch": dt.datetime(1970, 1, 1),
        "pre1970": dt.datetime(1601, 1, 1, 0, 0, 0, 1000),
        "minus1": bson.DatetimeMS(-1),
        "last": dt.datetime(9999, 12, 31, 23, 59, 59, 999000),
        "first": dt.datetime(1, 1, 1),
    },
    {
        "_id": "binary",
        "b0": Binary(b"\x00\xff", 0),
        "b1": Binary(b"fn", 1),
        "b2": Binary(b"old", 2),
        "b3": Binary(b"0123456789abcdef", 3),
        "b4": Binary(uuid.UUID(int=1).bytes, 4),
        "b5": Binary(b"\x01" * 16, 5),
        "b6": Binary(b"enc", 6),
        "b7": Binary(b"col", 7),
        "b80": Binary(b"user", 0x80),
        "bff": Binary(b"x", 0xFF),
        "empty": Binary(b"", 0),
    },
    {
        "_id": "regex",
        "r": Regex("^a.*b$", "imsx"),
        "r2": Regex("[\\d]+", ""),
        "r3": Regex("x", "lu"),
        "slash": Regex("a/b\\\\", "i"),
    },
    {
        "_id": "ts",
        "t": Timestamp(4294967295, 4294967295),
        "t0": Timestamp(0, 0),
        "t1": Timestamp(1, 2),
    },
    {
        "_id": "keys",
        "min": MinKey(),
        "max": MaxKey(),
        "none": None,
        "t": True,
        "f": False,
        "oid": ObjectId("5f0000000000000000000001"),
    },
    {
        "_id": "code",
        "c": Code("function(){return 1}"),
        "cs": Code("x+y", {"x": 1, "y": [2], "z": {"$numberLong": "1"}}),
    },
    {
        "_id": "dbref",
        "ref": DBRef("other", ObjectId("5f0000000000000000000002"), "db2", extra=1),
        "plain": DBRef("c", 5),
    },
    {"_id": "odd keys", "a.b": 1, "$dollar": 2, "": 3, "x": {"$in": [1], "a.b.c": {"": None}}},
    {
        "_id": "lookalikes",
        "l": {"$numberLong": "5"},
        "o": {"$oid": "5f0000000000000000000003"},
        "d": {"$date": 0},
        "b": {"$binary": "AA==", "$type": "00"},
        "u": {"$undefined": True},
        "e": {"$mongoBackupBSON": 1},
        "r": {"$regex": "a", "$options": "i"},
    },
    {
        "_id": "strings",
        "sep": "a\u2028b\u2029c\u0085d\x1ce",
        "nul": "a\x00b",
        "ctl": "\t\n\r\x00\x7f\x1f",
        "uni": "日本語 ünï 🎉",
        "long": "é" * 5000,
        "empty": "",
    },
    {"_id": "order", "z": 1, "a": 2, "m": SON([("z", 1), ("a", 2), ("b", {"y": 1, "x": 2})])},
    {"_id": "nested", "a": [[1, [2, [3, []]]], {"b": [{"c": {}}]}], "deep": {"x": {"y": [None]}}},
    {"_id": Int64(7), "kind": "int64 _id"},
    {"_id": 8.5, "kind": "double _id"},
    {"_id": ObjectId("5f00000000000000000000aa"), "kind": "oid _id"},
    {"_id": Binary(uuid.UUID(int=9).bytes, 4), "kind": "uuid _id"},
    {"_id": {"compound": 1, "b": "x"}, "kind": "document _id"},
    {"_id": dt.datetime(2001, 1, 1), "kind": "date _id"},
]

# Documents some servers refuse, each group in a collection of its own, inserted if the
# server takes them (test_optional_groups_accepted checks them, or names the feature the
# server lacks).
# Symbol (0x0E), Undefined (0x06) and DBPointer (0x0C) cannot be built from Python
# values; the server may convert them on insert, and the comparison is with its bytes.
# Dates outside year 1..9999 (bson.DatetimeMS): SecantusDB refuses them.
OPTIONAL_GROUPS: dict[str, list[bytes]] = {
    "deprecated": [
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
    ],
    "extreme_dates": [
        bson.encode({"_id": i, "d": bson.DatetimeMS(ms)})
        for i, ms in enumerate([253402300800000, 2**62, -62135596800001, -(2**62)])
    ],
}
# The server feature (serverfeatures.FEATURES) each optional group needs.
GROUP_FEATURES = {"deprecated": "deprecated-bson", "extreme_dates": "extreme-dates"}
REFUSED_GROUPS: dict[str, str] = {}


@pytest.fixture(scope="module")
def torture_db(client: Any) -> Iterator[str]:
    """One source database for all parametrized round trips (built once: it is the slow part)."""
    name = f"torture_{uuid.uuid4().hex[:8]}"
    db = client[name]
    db.types.insert_many(TORTURE)
    db.many.insert_many([{"_id": i, "s": "x" * (i % 40)} for i in range(1200)])  # > 1 batch
    db.create_collection("empty")
    for coll, raws in OPTIONAL_GROUPS.items():
        try:
            db[coll].insert_many([RawBSONDocument(raw) for raw in raws])
        except OperationFailure as error:  # refused: the other collections still test
            REFUSED_GROUPS[coll] = str(error)[:100]
            db.drop_collection(coll)
    yield name
    client.drop_database(name)


@pytest.mark.parametrize("group", sorted(OPTIONAL_GROUPS))
def test_optional_groups_accepted(client: Any, torture_db: str, group: str) -> None:
    """Each optional group is in the round trips' source, whole, or the server lacks the
    feature it needs (then the round trips run without that collection)."""
    if group in REFUSED_GROUPS:
        lacks(GROUP_FEATURES[group], REFUSED_GROUPS[group])
    assert group in user_collections(client, torture_db)
    assert client[torture_db][group].count_documents({}) == len(OPTIONAL_GROUPS[group])


VARIANTS = [
    pytest.param("none", "canonical", False, id="tar-canonical"),
    pytest.param("gzip", "canonical", False, id="gzip-canonical"),
    pytest.param("zstd", "canonical", False, id="zstd-canonical"),
    pytest.param("none", "canonical", True, id="tar-canonical-pretty"),
    pytest.param("gzip", "canonical", True, id="gzip-canonical-pretty"),
    pytest.param("zstd", "canonical", True, id="zstd-canonical-pretty"),
    pytest.param("zstd", "relaxed", False, id="zstd-relaxed"),
    pytest.param("none", "relaxed", True, id="tar-relaxed-pretty"),
]


@pytest.mark.parametrize(("compress", "json_format", "pretty"), VARIANTS)
def test_torture_round_trip(
    cli: CliRunner,
    client: Any,
    mongo_uri: str,
    torture_db: str,
    target_db: str,
    tmp_path: Path,
    compress: str,
    json_format: str,
    pretty: bool,
) -> None:
    extra = ["--compress", compress, "--json-format", json_format, "--batch-size", "500"]
    archive = backup_archive(
        cli, mongo_uri, torture_db, tmp_path, *extra, *(["--pretty"] if pretty else [])
    )
    restored = restore_cli(cli, archive, mongo_uri, "--db", target_db)
    assert restored.code == 0, restored.err
    assert user_collections(client, target_db) == user_collections(client, torture_db)
    for coll in user_collections(client, torture_db):
        if json_format == "relaxed":  # lossy by design: only counts must survive
            assert client[target_db][coll].count_documents({}) == client[torture_db][
                coll
            ].count_documents({}), coll
        else:
            assert_same_bytes(client, torture_db, target_db, coll)
    if json_format == "canonical":
        checked = cli("verify", archive, "--against-uri", mongo_uri, "--against-db", target_db)
        assert checked.code == 0, checked.out + checked.err
        assert checked.out_lines[-1] == "OK"


@pytest.mark.slow
def test_document_of_almost_16_mib_round_trips(
    cli: CliRunner, client: Any, mongo_uri: str, db_name: str, target_db: str, tmp_path: Path
) -> None:
    limit = 16 * 1024 * 1024
    overhead = len(bson.encode({"_id": 1, "s": ""}))
    raw = bson.encode({"_id": 1, "s": "\u2028" + "x" * (limit - overhead - 3 - 64)})
    assert limit - 64 <= len(raw) <= limit
    client[db_name].big.insert_one(RawBSONDocument(raw))
    archive = backup_archive(cli, mongo_uri, db_name, tmp_path)
    restored = restore_cli(cli, archive, mongo_uri, "--db", target_db)
    assert restored.code == 0, restored.err
    assert assert_same_bytes(client, db_name, target_db, "big") == 1


# --- collection kinds and index types -------------------------------------------------

Setup = Callable[[Any], None]


def _capped(db: Any) -> None:
    db.create_collection("c", capped=True, size=8192, max=50)
    db.c.insert_many([{"_id": i} for i in range(5)])


def _validated(db: Any) -> None:
    db.create_collection(
        "c",
        validator={"$jsonSchema": {"required": ["x"]}},
        validationLevel="strict",
        validationAction="error",
    )
    db.c.insert_many([{"_id": i, "x": i} for i in range(5)])


def _collation(db: Any) -> None:
    db.create_collection("c", collation={"locale": "fr", "strength": 2})
    db.c.insert_many([{"_id": "é"}, {"_id": "e2"}])


def _clustered(db: Any) -> None:
    db.create_collection("c", clusteredIndex={"key": {"_id": 1}, "unique": True})
    db.c.insert_many([{"_id": i} for i in range(5)])


def _timeseries(db: Any) -> None:
    db.create_collection(
        "c", timeseries={"timeField": "t", "metaField": "m", "granularity": "hours"}
    )
    db.c.insert_many(
        [{"t": dt.datetime(2020, 1, 1, i), "m": {"s": i % 2}, "v": i} for i in range(5)]
    )


def _views(db: Any) -> None:
    # Named so that alphabetical order puts the view on a view before the view it
    # reads from: the restore must order views by dependency, not by name.
    db.base.insert_many([{"_id": i, "x": i} for i in range(5)])
    db.create_collection("b_view", viewOn="base", pipeline=[{"$match": {"x": {"$gt": 1}}}])
    db.create_collection("a_view_on_view", viewOn="b_view", pipeline=[{"$project": {"x": 1}}])


def _empty(db: Any) -> None:
    db.create_collection("c")


def _index(keys: list[tuple[str, Any]], **options: Any) -> Setup:
    def setup(db: Any) -> None:
        db.c.insert_many(
            [
                {"_id": i, "a": i, "b": i, "loc": {"type": "Point", "coordinates": [i, i]}}
                for i in range(5)
            ]
        )
        db.c.create_index(keys, name="ix", **options)

    return setup


# Each kind with the server feature (serverfeatures.FEATURES) it needs, None when every
# MongoDB-compatible server must have it.
KINDS: list[Any] = [
    pytest.param(_capped, None, id="capped"),
    pytest.param(_validated, None, id="validator"),
    pytest.param(_collation, None, id="collation"),
    pytest.param(_clustered, "collection-types", id="clustered"),
    pytest.param(_timeseries, "collection-types", id="timeseries"),
    pytest.param(_views, None, id="views"),
    pytest.param(_empty, None, id="empty"),
    pytest.param(_index([("a", 1)], unique=True), None, id="index-unique"),
    pytest.param(_index([("a", 1)], sparse=True), None, id="index-sparse"),
    pytest.param(
        _index([("a", 1)], partialFilterExpression={"a": {"$gt": 2}}), None, id="index-partial"
    ),
    pytest.param(_index([("a", 1)], expireAfterSeconds=3600), None, id="index-ttl"),
    pytest.param(
        _index([("b", 1)], collation={"locale": "de", "strength": 1}), None, id="index-collation"
    ),
    pytest.param(_index([("a", 1)], hidden=True), None, id="index-hidden"),
    pytest.param(_index([("a", 1), ("b", -1)]), None, id="index-compound"),
    pytest.param(_index([("$**", 1)]), None, id="index-wildcard"),
    pytest.param(_index([("loc", "2dsphere")]), None, id="index-2dsphere"),
    pytest.param(_index([("b", "text")]), "text-index", id="index-text"),
    pytest.param(_index([("a", "hashed")]), "hashed-index", id="index-hashed"),
]


def _without_uuid(options: dict[str, Any]) -> dict[str, Any]:
    return {name: {k: v for k, v in opts.items() if k != "uuid"} for name, opts in options.items()}


@pytest.mark.parametrize(("setup", "feature"), KINDS)
def test_collection_kind_round_trips(
    cli: CliRunner,
    client: Any,
    mongo_uri: str,
    db_name: str,
    target_db: str,
    tmp_path: Path,
    setup: Setup,
    feature: str | None,
) -> None:
    try:
        setup(client[db_name])
    except OperationFailure as error:  # e.g. SecantusDB has no text or hashed indexes
        if feature is None:  # every server has this kind: a refusal is a failure
            raise
        lacks(feature, error)
    archive = backup_archive(cli, mongo_uri, db_name, tmp_path, "--compress", "none")
    restored = restore_cli(cli, archive, mongo_uri, "--db", target_db)
    assert restored.code == 0, restored.err
    source_options = _without_uuid(collection_options(client, db_name))
    assert _without_uuid(collection_options(client, target_db)) == source_options
    for name, options in source_options.items():
        if "viewOn" in options:
            continue
        assert index_specs(client, target_db, name) == index_specs(client, db_name, name)
        if "timeseries" in options:  # a server may rebuild measurements: counts only
            assert client[target_db][name].count_documents({}) == client[db_name][
                name
            ].count_documents({})
        else:
            assert_same_bytes(client, db_name, target_db, name)
    if "a_view_on_view" in source_options:  # the views work, not just exist
        assert len(list(client[target_db].a_view_on_view.find())) == 3
    checked = cli("verify", archive, "--against-uri", mongo_uri, "--against-db", target_db)
    assert checked.code == 0, checked.out + checked.err
    assert checked.out_lines[-1] == "OK"


# --- the MongoDB BSON corpus ------------------------------------------------------------


def _corpus_cases() -> list[tuple[str, bytes]]:
    cases = []
    for path in sorted(BSON_CORPUS.glob("*.json")):
        suite = json.loads(path.read_text(encoding="utf-8"))
        for number, case in enumerate(suite.get("valid", [])):
            cases.append((f"{path.stem}#{number}", bytes.fromhex(case["canonical_bson"])))
    return cases


def _with_id(raw: bytes, number: int) -> bytes:
    """The case's bytes with an int32 ``_id`` appended as the last element."""
    element = int32_element("_id", number)
    body = raw[4:-1] + element
    return (len(body) + 5).to_bytes(4, "little") + body + b"\x00"


def test_bson_corpus_valid_cases_round_trip(
    cli: CliRunner,
    client: Any,
    mongo_uri: str,
    db_name: str,
    target_db: str,
    tmp_path: Path,
    record_property: Callable[[str, Any], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The corpus must be there (CI provides it): a missing one fails, it never skips.
    assert BSON_CORPUS.is_dir(), f"no BSON corpus at {BSON_CORPUS}"
    cases = _corpus_cases()
    assert len(cases) > 100, f"too few valid cases in {BSON_CORPUS}: {len(cases)}"
    refused: list[str] = []
    for number, (name, raw) in enumerate(cases):
        # A case that has its own _id keeps it, in a collection of its own.
        has_id = b"\x00_id\x00" in raw[:64] or raw[5:9] == b"_id\x00"
        document = raw if has_id else _with_id(raw, number)
        coll = f"own_id_{number}" if has_id else "corpus"
        try:
            client[db_name][coll].insert_one(RawBSONDocument(document))
        except Exception as error:  # the server refuses it: counted and reported
            refused.append(f"{name}: {str(error)[:80]}")
    accepted = len(cases) - len(refused)
    record_property("corpus_refused_by_server", len(refused))
    with capsys.disabled():
        print(
            f"\nBSON corpus: {accepted} cases round-tripped, {len(refused)} refused by the "
            f"server: {refused[:5]}"
        )
    archive = backup_archive(cli, mongo_uri, db_name, tmp_path)
    restored = restore_cli(cli, archive, mongo_uri, "--db", target_db)
    assert restored.code == 0, restored.err
    total = sum(
        assert_same_bytes(client, db_name, target_db, coll)
        for coll in user_collections(client, db_name)
    )
    assert total == accepted
    assert accepted > 0.9 * len(cases)  # a server refusing most would test nothing
