"""``mongodump --oplog`` folders: ``oplog.bson`` replayed after the documents, as
``mongorestore --oplogReplay`` does (issue 13). The oplog is written by the tests' own
writer; the expected state is the same operations applied to a live database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from bson import Timestamp
from pymongo import MongoClient

from bsontools import read_manifest
from chaintools import snapshot
from conftest import CliRunner
from dumptools import Dumped, write_dump, write_oplog
from restoretools import assert_single_error_line

PEOPLE = [
    {"_id": 1, "name": "a", "tags": [1, 2, 3], "address": {"city": "x", "zip": "1"}},
    {"_id": 2, "name": "b"},
    {"_id": 3, "name": "c"},
]


def entries() -> list[dict[str, Any]]:
    """Every kind of entry a dump's oplog holds, in order (ts 1, 2, ...)."""
    ops: list[dict[str, Any]] = [
        {"op": "i", "ns": "shop.people", "o": {"_id": 4, "name": "d"}},
        {"op": "u", "ns": "shop.people", "o2": {"_id": 1},
         "o": {"$v": 2, "diff": {"u": {"name": "A"}, "saddress": {"u": {"city": "y"},
               "d": {"zip": False}}, "stags": {"a": True, "l": 2, "u1": 20}}}},
        {"op": "u", "ns": "shop.people", "o2": {"_id": 2},
         "o": {"$v": 1, "$set": {"age": 5}, "$unset": {"name": True}}},
        {"op": "u", "ns": "shop.people", "o2": {"_id": 3},
         "o": {"_id": 3, "name": "C", "new": True}},
        {"op": "d", "ns": "shop.people", "o": {"_id": 4}},
        {"op": "i", "ns": "shop.people", "o": {"_id": 5}},
        {"op": "c", "ns": "shop.$cmd", "o": {"drop": "gone"}},
        {"op": "c", "ns": "shop.$cmd",
         "o": {"create": "fresh", "idIndex": {"v": 2, "key": {"_id": 1}, "name": "_id_"}}},
        {"op": "i", "ns": "shop.fresh", "o": {"_id": 1}},
        {"op": "c", "ns": "shop.$cmd",
         "o": {"createIndexes": "people", "v": 2, "key": {"name": 1}, "name": "name_1"}},
        {"op": "c", "ns": "admin.$cmd", "o": {"applyOps": [
            {"op": "i", "ns": "shop.people", "o": {"_id": 6, "t": True}},
            {"op": "u", "ns": "shop.people", "o2": {"_id": 5},
             "o": {"$v": 2, "diff": {"i": {"x": 1}}}},
        ]}},
        {"op": "i", "ns": "other.things", "o": {"_id": 1}},
        {"op": "n", "ns": "", "o": {"msg": "periodic noop"}},
    ]  # fmt: skip
    return [
        {"ts": Timestamp(1_800_000_000, k + 1), "t": 1, "v": 2, **op} for k, op in enumerate(ops)
    ]


def expected(client: MongoClient[Any], db: str) -> None:
    """The same operations on a live database."""
    people = client[db].people
    people.insert_many(PEOPLE)
    people.insert_one({"_id": 4, "name": "d"})
    people.update_one({"_id": 1}, {"$set": {"name": "A", "address.city": "y", "tags": [1, 20]},
                                   "$unset": {"address.zip": ""}})  # fmt: skip
    people.update_one({"_id": 2}, {"$set": {"age": 5}, "$unset": {"name": ""}})
    people.replace_one({"_id": 3}, {"_id": 3, "name": "C", "new": True})
    people.delete_one({"_id": 4})
    people.insert_one({"_id": 5})
    client[db].fresh.insert_one({"_id": 1})
    people.create_index("name", name="name_1")
    people.insert_one({"_id": 6, "t": True})
    people.update_one({"_id": 5}, {"$set": {"x": 1}})


def dump(tmp_path: Path) -> Path:
    write_dump(tmp_path / "dump", "shop", {"people": Dumped(list(PEOPLE)),
                                           "gone": Dumped([{"_id": 1}])})  # fmt: skip
    write_oplog(tmp_path / "dump", entries())
    return tmp_path / "dump"


def test_the_oplog_is_replayed_after_the_documents(
    cli: CliRunner, client: MongoClient[Any], mongo_uri: str, db_name: str, target_db: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    expected(client, db_name)
    folder = dump(tmp_path)
    assert cli("verify", folder).code == 0
    restored = cli("restore", folder, "--uri", mongo_uri, "--db", target_db)
    assert restored.code == 0, restored.err
    assert snapshot(client, target_db) == snapshot(client, db_name)
    assert "change events" in restored.out

    converted = cli("convert", folder, "--out-dir", tmp_path / "out")
    assert converted.code == 0, converted.err
    archive = Path(converted.out.strip().splitlines()[-1])
    manifest = read_manifest(archive)
    assert manifest["consistency"] == "oplog"
    assert [c["name"] for c in manifest["collections"]][-1] == "$changes"
    client.drop_database(target_db)
    again = cli("restore", archive, "--uri", mongo_uri, "--db", target_db, "-q")
    assert again.code == 0, again.err
    assert snapshot(client, target_db) == snapshot(client, db_name)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"op": "x", "ns": "shop.people", "o": {}}, "unknown operation 'x'"),
        (
            {"op": "c", "ns": "shop.$cmd", "o": {"convertToCapped": "people", "size": 1}},
            "'convertToCapped' cannot be replayed",
        ),
        (
            {"op": "u", "ns": "shop.people", "o2": {"_id": 1}, "o": {"$v": 2, "diff": {"q": {}}}},
            "unknown part 'q'",
        ),
        ({"op": "i", "ns": "shop.people"}, "cannot be replayed"),
    ],
)
def test_an_oplog_entry_that_cannot_be_replayed_writes_nothing(
    cli: CliRunner, client: MongoClient[Any], mongo_uri: str, target_db: str, tmp_path: Path,
    entry: dict[str, Any], message: str,
) -> None:  # fmt: skip
    folder = dump(tmp_path)
    write_oplog(folder, [*entries()[:3], {"ts": Timestamp(1_900_000_000, 1), **entry}])
    result = cli("restore", folder, "--uri", mongo_uri, "--db", target_db)
    assert result.code == 1
    line = assert_single_error_line(result)
    assert "oplog.bson" in line and message in line, line
    assert target_db not in client.list_database_names()
