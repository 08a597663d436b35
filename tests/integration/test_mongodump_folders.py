"""Reading the incumbent's backups: ``restore``, ``verify``, ``inspect`` and ``convert`` of
a mongodump output folder written by the tests' own writer (tests/dumptools.py)."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import bson
import pytest
from bson import Binary, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp
from pymongo import MongoClient

from bsontools import RAW_OPTIONS
from conftest import CliRunner
from dumptools import Dumped, write_dump, write_oplog
from restoretools import assert_single_error_line


def shop() -> dict[str, Dumped]:
    people = [
        {
            "_id": ObjectId(),
            "name": f"p{i}",
            "n": Int64(i),
            "price": Decimal128("19.99"),
            "at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(hours=i),
            "blob": Binary(bytes(range(i % 256)), 0),
            "id": Binary.from_uuid(uuid.UUID(int=i)),
            "ts": Timestamp(1_700_000_000, i),
            "re": Regex("^a.*", "i"),
            "edge": MinKey() if i % 2 else MaxKey(),
            "nested": {"list": [1, 2.5, None, {"deep": [True]}], "$dollar": 1, "a.b": 2},
        }
        for i in range(300)
    ]
    return {
        "people": Dumped(
            people,
            options={"validator": {"name": {"$type": "string"}}},
            indexes=[
                {"v": 2, "key": {"name": 1}, "name": "name_1", "unique": True},
                {"v": 2, "key": {"n": -1, "at": 1}, "name": "n_-1_at_1"},
            ],
        ),
        "events": Dumped(
            [{"_id": i, "kind": "click"} for i in range(1000)],
            indexes=[{"v": 2, "key": {"at": 1}, "name": "at_1", "expireAfterSeconds": 3600}],
            gzip=True,
        ),
        "we/ird name": Dumped([{"_id": 1, "x": "y"}]),
        "clicks": Dumped(
            type="view",
            options={"viewOn": "events", "pipeline": [{"$match": {"kind": "click"}}]},
        ),
    }


def raw_documents(client: MongoClient[Any], db: str, name: str) -> list[bytes]:
    collection = client[db].get_collection(name, codec_options=RAW_OPTIONS)
    return sorted(bytes(d.raw) for d in collection.find())


def test_restore_verify_inspect_and_convert_a_mongodump_folder(
    cli: CliRunner, client: MongoClient[Any], mongo_uri: str, target_db: str, tmp_path: Path
) -> None:
    dumped = shop()
    folder = write_dump(tmp_path / "dump", "shop", dumped)
    for source in (folder, tmp_path / "dump"):  # the database's folder, or the dump's
        verified = cli("verify", source)
        assert verified.code == 0, verified.out + verified.err
        # mongodump records no counts: verify shows what it counted, not "n/0".
        people = next(line for line in verified.out.splitlines() if line.startswith("people "))
        assert f" {len(dumped['people'].documents)} " in people and "/" not in people
    inspected = cli("inspect", folder)
    assert inspected.code == 0 and "we/ird name" in inspected.out and "clicks" in inspected.out
    # Counts and sizes unknown until read: "?", not 0.
    people = next(line for line in inspected.out.splitlines() if line.startswith("people "))
    assert people.split()[2:4] == ["?", "?"], people

    restored = cli("restore", folder, "--uri", mongo_uri, "--db", target_db)
    assert restored.code == 0, restored.err
    people = next(line for line in restored.out.splitlines() if line.startswith("people "))
    assert people.split()[3:5] == ["?", str(len(dumped["people"].documents))], people
    for name in ("people", "events", "we/ird name"):
        expected = sorted(bson.encode(d) for d in dumped[name].documents)
        assert raw_documents(client, target_db, name) == expected, name
    infos = {i["name"]: i for i in client[target_db].list_collections()}
    assert infos["people"]["options"]["validator"] == {"name": {"$type": "string"}}
    assert infos["clicks"]["type"] == "view" and infos["clicks"]["options"]["viewOn"] == "events"
    indexes = {i["name"]: i for i in client[target_db].people.list_indexes()}
    assert indexes["name_1"]["unique"] and "n_-1_at_1" in indexes
    ttl = {i["name"]: i for i in client[target_db].events.list_indexes()}["at_1"]
    assert ttl["expireAfterSeconds"] == 3600

    converted = cli("convert", folder, "--out-dir", tmp_path / "out", "-q")
    assert converted.code == 0, converted.err
    archive = Path(converted.out.strip())
    assert archive.parent == tmp_path / "out" / "backup_data" and archive.name.endswith(".tar.zst")
    assert cli("verify", archive).code == 0
    again = f"{target_db}_c"
    try:
        assert cli("restore", archive, "--uri", mongo_uri, "--db", again, "-q").code == 0
        for name in ("people", "events", "we/ird name"):
            assert raw_documents(client, again, name) == raw_documents(client, target_db, name)
    finally:
        client.drop_database(again)


def _hostile(folder: Path, kind: str) -> None:
    data = (folder / "people.bson").read_bytes()
    if kind == "truncated":
        (folder / "people.bson").write_bytes(data[: len(data) - 7])
    elif kind == "oversized":
        (folder / "people.bson").write_bytes(data + (2**31 - 1).to_bytes(4, "little") + b"\x00")
    elif kind == "nesting":
        # An embedded document whose length runs past its parent's end.
        inner = b"\x10a\x00\x01\x00\x00\x00\x00"
        bad_inner = (len(inner) + 4 + 50).to_bytes(4, "little") + inner
        body = b"\x03sub\x00" + bad_inner + b"\x00"
        document = (len(body) + 4).to_bytes(4, "little") + body
        (folder / "people.bson").write_bytes(data + document)
    elif kind == "oplog":  # an entry cut short
        (folder.parent / "oplog.bson").write_bytes(b"\x20\x00\x00\x00\x02op\x00")
    elif kind == "metadata":
        (folder / "people.metadata.json").write_text("{not json")


@pytest.mark.parametrize("kind", ["truncated", "oversized", "nesting", "oplog", "metadata"])
def test_a_hostile_dump_is_refused_before_anything_is_written(
    cli: CliRunner, client: MongoClient[Any], mongo_uri: str, target_db: str, tmp_path: Path,
    kind: str,
) -> None:  # fmt: skip
    folder = write_dump(tmp_path / "dump", "shop", shop())
    _hostile(folder, kind)
    result = cli("restore", tmp_path / "dump", "--uri", mongo_uri, "--db", target_db)
    assert result.code == 1, result.err
    line = assert_single_error_line(result)
    assert ("people" in line) or ("oplog" in line), line
    assert client[target_db].list_collection_names() == []
    assert cli("verify", folder).code == 1
    converted = cli("convert", folder, "--out-dir", tmp_path / "out")
    assert converted.code == 1
    assert list((tmp_path / "out" / "backup_data").glob("backup_*")) == []


def test_a_dump_of_several_databases_restores_each_and_converts(
    cli: CliRunner, client: MongoClient[Any], mongo_uri: str, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    shop_db, crm_db = f"shop_{tag}", f"crm_{tag}"
    dump = tmp_path / "dump"
    write_dump(dump, shop_db, shop())
    write_dump(dump, crm_db, {"a/b": Dumped([{"_id": i} for i in range(20)])})
    write_dump(dump, "admin", {"system.version": Dumped([{"_id": "x"}])})  # the server's own
    at = Timestamp(1_800_000_000, 1)
    write_oplog(dump, [
        {"ts": at, "op": "i", "ns": f"{crm_db}.a/b", "o": {"_id": 99}},
        {"ts": at, "op": "d", "ns": f"{shop_db}.events", "o": {"_id": 5}},
        {"ts": at, "op": "i", "ns": "admin.system.version", "o": {"_id": "y"}},
    ])  # fmt: skip
    inspected = cli("inspect", dump)
    assert inspected.code == 0, inspected.err
    assert f"backup of 2 databases ({crm_db}, {shop_db})" in inspected.out
    assert cli("verify", dump).code == 0
    renamed = ["--ns-from", "$db$.$c$", "--ns-to", "$db$_r.$c$"]
    try:
        restored = cli("restore", dump, "--uri", mongo_uri, "-q", *renamed)
        assert restored.code == 0, restored.err
        assert sorted(d["_id"] for d in client[f"{crm_db}_r"]["a/b"].find()) == [*range(20), 99]
        assert client[f"{shop_db}_r"].events.count_documents({}) == 999  # the oplog's delete
        assert client[f"{shop_db}_r"].clicks.count_documents({}) == 999  # the view, in its db
        expected = sorted(bson.encode(d) for d in shop()["people"].documents)
        people = raw_documents(client, f"{shop_db}_r", "people")
        assert [len(p) for p in people] == [len(e) for e in expected]
        assert "admin_r" not in client.list_database_names()

        converted = cli("convert", dump, "--out-dir", tmp_path / "out", "-q")
        assert converted.code == 0, converted.err
        archive = Path(converted.out.strip())
        assert cli("verify", archive).code == 0
        again = cli("restore", archive, "--uri", mongo_uri, "-q", "--db", crm_db,
                    "--ns-from", f"{crm_db}.*", "--ns-to", f"{crm_db}_c.*")  # fmt: skip
        assert again.code == 0, again.err
        assert client[f"{crm_db}_c"]["a/b"].count_documents({}) == 21
    finally:
        for name in client.list_database_names():
            if tag in name:
                client.drop_database(name)
