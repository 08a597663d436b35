"""What a mongodump user reaches for, on one database: ``--query`` subsets, the read
preference, and mongodump's spellings of the flags (issue 13, first part)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from bsontools import read_manifest
from chaintools import assert_same_snapshot, snapshot
from conftest import CliRunner
from restoretools import assert_single_error_line, backup_archive

FILTER = '{"n": {"$gte": 60}, "kind": {"$in": ["a", "b"]}}'


def seed(client: MongoClient[Any], db: str) -> None:
    base = dt.datetime(2026, 1, 1)
    client[db].items.insert_many(
        [
            {"_id": i, "n": i, "kind": "abc"[i % 3], "updatedAt": base + dt.timedelta(minutes=i)}
            for i in range(100)
        ]
    )
    client[db].items.create_index("updatedAt")
    client[db].other.insert_many([{"_id": i} for i in range(5)])


def test_query_backs_up_a_subset_that_verifies_against_the_live_subset(
    cli: CliRunner, client: MongoClient[Any], mongo_uri: str, db_name: str, target_db: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    seed(client, db_name)
    archive = backup_archive(
        cli, mongo_uri, db_name, tmp_path, "--collection", "items", "--query", FILTER
    )
    manifest = read_manifest(archive)
    assert manifest["query"] == {
        "filter": {"n": {"$gte": {"$numberInt": "60"}}, "kind": {"$in": ["a", "b"]}},
        "collections": ["items"],
    }
    (items,) = [c for c in manifest["collections"] if c["name"] == "items"]
    expected = {d["_id"] for d in client[db_name].items.find(json.loads(FILTER))}
    assert items["count"] == len(expected) == 27
    assert "partial: only the documents of items matching" in cli("inspect", archive).out

    good = cli("verify", archive, "--against-uri", mongo_uri, "--against-db", db_name)
    assert good.code == 0, good.out + good.err
    client[db_name].items.update_one({"_id": 99}, {"$set": {"n": 1000}})  # in the subset
    client[db_name].items.update_one({"_id": 1}, {"$set": {"n": -1}})  # outside: ignored
    changed = cli("verify", archive, "--against-uri", mongo_uri, "--against-db", db_name)
    assert changed.code == 1, changed.out
    assert "different _id {'$numberInt': '99'}" in changed.out and "'1'" not in changed.out

    assert cli("restore", archive, "--uri", mongo_uri, "--db", target_db, "-q").code == 0
    assert {d["_id"] for d in client[target_db].items.find()} == expected


def test_a_query_file_and_its_increments_keep_the_filter(
    cli: CliRunner, client: MongoClient[Any], mongo_uri: str, db_name: str, tmp_path: Path
) -> None:
    seed(client, db_name)
    (tmp_path / "q.json").write_text(FILTER)
    common = ["--collection", "items", "--since-field", "updatedAt"]
    full = backup_archive(cli, mongo_uri, db_name, tmp_path, *common, "--query-file",
                          tmp_path / "q.json")  # fmt: skip
    later = dt.datetime(2027, 1, 1)
    client[db_name].items.update_many({"_id": {"$in": [61, 62, 63, 10]}},
                                      {"$set": {"updatedAt": later}})  # fmt: skip
    increment = backup_archive(cli, mongo_uri, db_name, tmp_path, *common, "--incremental")
    manifest = read_manifest(increment)
    assert manifest["query"] == read_manifest(full)["query"]
    (items,) = [c for c in manifest["collections"] if c["name"] == "items"]
    # 61 ("b") and 63 ("a"), and 99 again (it holds the mark: $gte); 62 ("c") and 10
    # (n < 60) are changed but outside the filter.
    assert items["count"] == 3
    refused = cli("backup", "--uri", mongo_uri, "--db", db_name, "--out-dir", tmp_path,
                  "--incremental")  # fmt: skip
    assert refused.code == 2 and "partial backup (--query)" in assert_single_error_line(refused)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--query", FILTER], "name at least one"),
        (["--collection", "items", "--query", "{not json"], "--query is not Extended JSON"),
        (["--collection", "items", "--query", "[1, 2]"], "must be a JSON object"),
        (["--collection", "items", "--query", "{}", "--query-file", "q.json"], "not both"),
        (["--collection", "items", "--query-file", "missing.json"], "cannot read --query-file"),
        (["--read-preference", "primary", "--read-preference-tags", "dc:ny"], "other than primary"),
        (["--read-preference", "most"], "invalid choice"),
    ],
)
def test_bad_subset_options_are_one_line(
    cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: list[str],
    message: str,
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    (tmp_path / "q.json").write_text("{}")
    result = cli("backup", "--uri", "mongodb://127.0.0.1:1/", "--db", "d", "--out-dir", "o",
                 *extra)  # fmt: skip
    assert result.code == 2
    assert message in result.err.strip().splitlines()[-1]
    assert not (tmp_path / "o").exists()


def test_read_preference_reaches_the_driver_and_the_manifest(
    cli: CliRunner, client: MongoClient[Any], mongo_uri: str, db_name: str, tmp_path: Path
) -> None:
    seed(client, db_name)
    archive = backup_archive(
        cli, mongo_uri, db_name, tmp_path, "--read-preference", "secondaryPreferred",
        "--read-preference-tags", "dc:ny,rack:1", "--read-preference-tags", "",
    )  # fmt: skip
    read = read_manifest(archive)["read"]
    assert read["preference"] == {
        "mode": "secondaryPreferred",
        "tags": [{"dc": "ny", "rack": "1"}, {}],
    }
    (_host, port) = client.address or ("?", 0)
    assert read["members"] and all(m.rsplit(":", 1)[1] == str(port) for m in read["members"])
    assert "read from" in cli("inspect", archive).out
    plain = read_manifest(backup_archive(cli, mongo_uri, db_name, tmp_path))["read"]
    assert plain["preference"] == {"mode": "primary"}


def test_mongodump_spellings(
    cli: CliRunner, client: MongoClient[Any], mongo_uri: str, db_name: str, target_db: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    seed(client, db_name)
    out = tmp_path / "dump"
    result = cli("backup", "--uri", mongo_uri, "-d", db_name, "-c", "items", "-o", out,
                 "--gzip", "--numParallelCollections", "1", "-q")  # fmt: skip
    assert result.code == 0, result.err
    archive = Path(result.out.strip())
    assert archive.name.endswith(".tar.gz") and archive.parent == out / "backup_data"
    assert [c["name"] for c in read_manifest(archive)["collections"]] == ["items"]
    restored = cli("restore", archive, "--uri", mongo_uri, "-d", target_db, "--gzip",
                   "--numInsertionWorkersPerCollection", "1", "-q")  # fmt: skip
    assert restored.code == 0, restored.err
    expected = snapshot(client, db_name)
    del expected["other"]
    assert_same_snapshot(snapshot(client, target_db), expected)
    again = cli("backup", "--uri", mongo_uri, "--db", db_name, "--out", out, "-q")
    assert again.code == 0 and Path(again.out.strip()).parent == out / "backup_data"
    helped = cli("backup", "--help").out
    for spelling in ("--out-dir OUT_DIR, --out OUT_DIR, -o OUT_DIR", "--gzip", "-d NAME",
                     "--numParallelCollections", "-c NAME"):  # fmt: skip
        assert spelling in helped, spelling


def test_namespace_patterns_select_what_is_backed_up_and_restored(
    cli: CliRunner, client: MongoClient[Any], mongo_uri: str, db_name: str, target_db: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    seed(client, db_name)
    client[db_name].items_old.insert_one({"_id": 1})
    archive = backup_archive(cli, mongo_uri, db_name, tmp_path, "--ns-include", f"{db_name}.it*",
                             "--nsExclude", f"{db_name}.*_old")  # fmt: skip
    assert [c["name"] for c in read_manifest(archive)["collections"]] == ["items"]

    whole = backup_archive(cli, mongo_uri, db_name, tmp_path)
    restored = cli("restore", whole, "--uri", mongo_uri, "--db", target_db, "-q",
                   "--nsInclude", f"{db_name}.*", "--ns-exclude", f"{db_name}.items*")  # fmt: skip
    assert restored.code == 0, restored.err
    assert client[target_db].list_collection_names() == ["other"]

    for command in (
        ["backup", "--uri", mongo_uri, "--db", db_name, "--out-dir", tmp_path],
        ["restore", str(whole), "--uri", mongo_uri, "--db", f"{target_db}_x"],
    ):
        nothing = cli(*command, "--ns-include", f"{db_name}.nothing*")
        assert nothing.code == 2
        assert "matches no namespace" in assert_single_error_line(nothing)
        bad = cli(*command, "--ns-include", "nodot")
        assert bad.code == 2 and "expected DB.COLLECTION" in bad.err
    assert f"{target_db}_x" not in client.list_database_names()
