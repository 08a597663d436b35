"""``mongo-backup restore`` and ``inspect``: sources, filters, conflicts, options, API.

Every test restores into a fresh target database and judges the result on the bytes
and metadata the server then holds.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import bson
import pytest
from bson import SON, Int64, json_util
from bson.json_util import CANONICAL_JSON_OPTIONS, RELAXED_JSON_OPTIONS

from bsontools import raw_docs_by_id, read_manifest
from conftest import CliRunner
from resiliencetools import fail_point
from restoretools import (
    assert_same_bytes,
    backup_archive,
    collection_options,
    documents_in,
    index_specs,
    restore_cli,
    user_collections,
)

# The module, not a same-named function some package __init__ might re-export.
restore_module = importlib.import_module("mongo_backup.restore.run")


@pytest.fixture
def shop(client: Any, db_name: str) -> str:
    """Three collections with data and indexes, one validated, one view."""
    db = client[db_name]
    db.orders.insert_many(
        [{"_id": i, "total": Int64(i * 100), "sku": f"s{i % 7}"} for i in range(300)]
    )
    db.orders.create_index("sku", name="sku_idx")
    db.orders.create_index([("total", -1)], name="total_idx", sparse=True)
    db.create_collection("people", validator={"$jsonSchema": {"required": ["name"]}})
    db.people.insert_many([{"_id": i, "name": f"p{i}"} for i in range(20)])
    db.notes.insert_many([{"_id": f"n{i}", "text": "x" * i} for i in range(10)])
    db.create_collection("big_orders", viewOn="orders", pipeline=[{"$match": {"_id": {"$gt": 9}}}])
    return db_name


@pytest.fixture
def shop_archive(cli: CliRunner, mongo_uri: str, shop: str, tmp_path: Path) -> Path:
    return backup_archive(cli, mongo_uri, shop, tmp_path / "out", "--compress", "zstd")


def restore_json(cli: CliRunner, source: Path | str, uri: str, *extra: str) -> tuple[int, Any]:
    """Restore with --json; returns (exit code, {collection name: outcome})."""
    result = cli("restore", source, "--uri", uri, "--json", *extra)
    assert result.out.strip(), result.err
    report = json.loads(result.out)
    assert report["exit_code"] == result.code
    assert report["complete"] is (result.code == 0), report["complete"]  # 3: not complete
    return result.code, {c["name"]: c for c in report["collections"]}


def test_restore_from_kept_folder(
    cli: CliRunner, client: Any, mongo_uri: str, shop: str, target_db: str, tmp_path: Path
) -> None:
    archive = backup_archive(cli, mongo_uri, shop, tmp_path, "--keep-folder", "--compress", "none")
    folder = tmp_path / archive.name.removesuffix(".tar")
    assert (folder / "manifest.json").is_file()
    result = restore_cli(cli, folder, mongo_uri, "--db", target_db)
    assert result.code == 0, result.err
    assert user_collections(client, target_db) == user_collections(client, shop)
    for coll in ("orders", "people", "notes"):
        assert_same_bytes(client, shop, target_db, coll)


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_restore_single_mongoexport_file_canonical_and_relaxed_lines(
    cli: CliRunner, client: Any, mongo_uri: str, target_db: str, tmp_path: Path, suffix: str
) -> None:
    canonical = [SON([("_id", i), ("n", Int64(i)), ("f", 1.0)]) for i in range(3)]
    relaxed = [SON([("_id", i), ("n", i), ("f", 2.5)]) for i in range(3, 6)]
    lines = [json_util.dumps(d, json_options=CANONICAL_JSON_OPTIONS) for d in canonical]
    lines += [json_util.dumps(d, json_options=RELAXED_JSON_OPTIONS) for d in relaxed]
    source = tmp_path / f"export{suffix}"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = restore_cli(cli, source, mongo_uri, "--db", target_db, "--collection", "things")
    assert result.code == 0, result.err
    restored = raw_docs_by_id(client, target_db, "things")
    # Canonical lines keep Int64 and 1.0 as a double; relaxed ones read as int32/double.
    assert sorted(restored.values()) == sorted(bson.encode(d) for d in canonical + relaxed)


def test_single_file_needs_db_and_one_collection(
    cli: CliRunner, mongo_uri: str, tmp_path: Path
) -> None:
    source = tmp_path / "export.json"
    source.write_text('{"_id": 1}\n', encoding="utf-8")
    result = restore_cli(cli, source, mongo_uri, "--collection", "c")
    assert result.code == 2
    assert result.err.startswith("mongo-backup: error:") and "--db" in result.err


def test_collection_and_exclude_filters(
    cli: CliRunner, client: Any, mongo_uri: str, shop_archive: Path, target_db: str
) -> None:
    result = restore_cli(
        cli,
        shop_archive,
        mongo_uri,
        "--db",
        target_db,
        "--collection",
        "orders",
        "--collection",
        "notes",
    )
    assert result.code == 0, result.err
    assert user_collections(client, target_db) == ["notes", "orders"]
    client.drop_database(target_db)
    result = restore_cli(
        cli,
        shop_archive,
        mongo_uri,
        "--db",
        target_db,
        "--exclude-collection",
        "orders",
        "--exclude-collection",
        "big_orders",
    )
    assert result.code == 0, result.err
    assert user_collections(client, target_db) == ["notes", "people"]


def test_unknown_collection_is_a_usage_error(
    cli: CliRunner, client: Any, mongo_uri: str, shop_archive: Path, target_db: str
) -> None:
    result = restore_cli(cli, shop_archive, mongo_uri, "--db", target_db, "--collection", "nope")
    assert result.code == 2
    assert "nope" in result.err
    assert target_db not in client.list_database_names()


def test_duplicate_ids_without_drop_exit_3_and_drop_replaces(
    cli: CliRunner, client: Any, mongo_uri: str, shop: str, shop_archive: Path, target_db: str
) -> None:
    code, first = restore_json(cli, shop_archive, mongo_uri, "--db", target_db)
    assert code == 0 and first["orders"]["inserted"] == 300
    client[target_db].notes.insert_one({"_id": "not in the backup"})
    code, second = restore_json(cli, shop_archive, mongo_uri, "--db", target_db)
    assert code == 3
    assert (second["orders"]["inserted"], second["orders"]["duplicates"]) == (0, 300)
    assert (second["people"]["duplicates"], second["notes"]["duplicates"]) == (20, 10)
    assert not second["orders"]["ok"]
    code, third = restore_json(cli, shop_archive, mongo_uri, "--db", target_db, "--drop")
    assert code == 0
    assert third["orders"]["action"] == "drop and restore"
    assert (third["orders"]["inserted"], third["orders"]["duplicates"]) == (300, 0)
    # --drop replaced the collection: the extra document is gone.
    assert assert_same_bytes(client, shop, target_db, "notes") == 10


def test_validator_refusals_exit_3_unless_bypassed(
    cli: CliRunner, client: Any, mongo_uri: str, db_name: str, target_db: str, tmp_path: Path
) -> None:
    db = client[db_name]
    db.create_collection("strict", validator={"$jsonSchema": {"required": ["x"]}})
    db.strict.insert_many([{"_id": i, "x": i} for i in range(5)])
    # Documents that entered past the validator (as they can on a real server).
    db.strict.insert_many([{"_id": i} for i in range(5, 8)], bypass_document_validation=True)
    archive = backup_archive(cli, mongo_uri, db_name, tmp_path)
    code, outcome = restore_json(cli, archive, mongo_uri, "--db", target_db)
    assert code == 3
    assert (outcome["strict"]["inserted"], outcome["strict"]["rejected"]) == (5, 3)
    client.drop_database(target_db)
    code, outcome = restore_json(
        cli, archive, mongo_uri, "--db", target_db, "--bypass-document-validation"
    )
    assert code == 0
    assert (outcome["strict"]["inserted"], outcome["strict"]["rejected"]) == (8, 0)
    assert_same_bytes(client, db_name, target_db, "strict")
    assert (
        collection_options(client, target_db)["strict"]["validator"]
        == collection_options(client, db_name)["strict"]["validator"]
    )


def test_no_indexes_and_no_options(
    cli: CliRunner, client: Any, mongo_uri: str, shop: str, shop_archive: Path, target_db: str
) -> None:
    result = restore_cli(
        cli, shop_archive, mongo_uri, "--db", target_db, "--no-indexes", "--no-options"
    )
    assert result.code == 0, result.err
    assert list(index_specs(client, target_db, "orders")) == ["_id_"]
    assert "validator" not in collection_options(client, target_db)["people"]
    assert_same_bytes(client, shop, target_db, "orders")
    # Without either flag both come back.
    client.drop_database(target_db)
    assert restore_cli(cli, shop_archive, mongo_uri, "--db", target_db).code == 0
    assert index_specs(client, target_db, "orders") == index_specs(client, shop, "orders")
    assert "validator" in collection_options(client, target_db)["people"]


def test_dry_run_writes_nothing_and_prints_its_plan(
    cli: CliRunner, client: Any, mongo_uri: str, shop_archive: Path, target_db: str
) -> None:
    result = restore_cli(cli, shop_archive, mongo_uri, "--db", target_db, "--dry-run")
    assert result.code == 0, result.err
    assert target_db not in client.list_database_names()
    assert "dry run" in result.out
    for name in ("orders", "people", "notes", "big_orders"):
        assert name in result.out
    code, plan = restore_json(cli, shop_archive, mongo_uri, "--db", target_db, "--dry-run")
    assert code == 0
    assert plan["orders"]["expected"] == 300 and plan["orders"]["inserted"] == 0
    assert target_db not in client.list_database_names()


def test_parallel_and_serial_inserts_give_the_same_result(
    cli: CliRunner, client: Any, mongo_uri: str, shop: str, shop_archive: Path, target_db: str
) -> None:
    results = []
    for jobs in ("1", "4"):
        client.drop_database(target_db)
        result = restore_cli(
            cli, shop_archive, mongo_uri, "--db", target_db, "-j", jobs, "--batch-size", "7"
        )
        assert result.code == 0, result.err
        results.append({c: raw_docs_by_id(client, target_db, c) for c in ("orders", "people")})
    assert results[0] == results[1]
    assert_same_bytes(client, shop, target_db, "orders")


def test_target_database_defaults_to_the_backups(
    cli: CliRunner, client: Any, mongo_uri: str, shop: str, shop_archive: Path
) -> None:
    before = raw_docs_by_id(client, shop, "orders")
    client.drop_database(shop)
    result = restore_cli(cli, shop_archive, mongo_uri)
    assert result.code == 0, result.err
    assert raw_docs_by_id(client, shop, "orders") == before
    assert "big_orders" in client[shop].list_collection_names()


def test_inspect_table_and_json(cli: CliRunner, shop: str, shop_archive: Path) -> None:
    table = cli("inspect", shop_archive)
    assert table.code == 0, table.err
    assert table.out_lines[0].startswith(f"backup of database {shop!r}")
    rows = {line.split()[0]: line.split() for line in table.out_lines[3:] if line.strip()}
    assert rows["orders"][1:4] == ["collection", "300", rows["orders"][3]]
    assert rows["big_orders"][1] == "view"
    as_json = cli("inspect", shop_archive, "--json")
    assert as_json.code == 0, as_json.err
    manifest = json.loads(as_json.out)
    assert manifest["database"] == shop
    expected = read_manifest(shop_archive)
    assert {c["name"]: c["count"] for c in manifest["collections"]} == {
        c["name"]: c["count"] for c in expected["collections"]
    }


def test_library_api_reports_whether_the_restore_is_complete(
    client: Any, mongo_uri: str, shop: str, shop_archive: Path, target_db: str
) -> None:
    result = restore_module.restore(shop_archive, mongo_uri, target_db)
    assert result.complete is True and result.database == target_db
    assert {c.name: c.inserted for c in result.collections}["orders"] == 300
    again = restore_module.restore(shop_archive, mongo_uri, target_db)
    assert again.complete is False  # duplicates: the CLI exits 3
    assert sum(c.duplicates for c in again.collections) == 330
    dropped = restore_module.restore(shop_archive, mongo_uri, target_db, drop=True, jobs=1)
    assert dropped.complete is True
    assert documents_in(client, target_db) == 330


def test_verify_against_database_finds_every_kind_of_difference(
    cli: CliRunner, client: Any, mongo_uri: str, shop_archive: Path, target_db: str
) -> None:
    assert restore_cli(cli, shop_archive, mongo_uri, "--db", target_db).code == 0
    same = cli("verify", shop_archive, "--against-uri", mongo_uri, "--against-db", target_db)
    assert same.code == 0 and same.out_lines[-1] == "OK", same.out
    db = client[target_db]
    db.orders.delete_one({"_id": 1})
    db.orders.insert_one({"_id": 1000})
    db.orders.update_one({"_id": 2}, {"$set": {"total": Int64(3)}})
    db.orders.drop_index("sku_idx")
    db.command("collMod", "people", validator={"$jsonSchema": {"required": ["other"]}})
    report = cli(
        "verify", shop_archive, "--against-uri", mongo_uri, "--against-db", target_db, "--json"
    )
    assert report.code == 1
    against = {a["name"]: a for a in json.loads(report.out)["against"]}
    assert (
        against["orders"]["missing"],
        against["orders"]["extra"],
        against["orders"]["different"],
    ) == (1, 1, 1)
    assert "indexes differ" in against["orders"]["metadata"]
    assert "collection options differ" in against["people"]["metadata"]
    assert against["notes"]["ok"]


def test_dry_run_with_drop_leaves_an_existing_target_alone(
    cli: CliRunner, client: Any, mongo_uri: str, shop_archive: Path, target_db: str
) -> None:
    client[target_db].orders.insert_one({"_id": "kept"})
    code, plan = restore_json(
        cli, shop_archive, mongo_uri, "--db", target_db, "--dry-run", "--drop"
    )
    assert code == 0
    assert plan["orders"]["action"] == "drop and restore"
    assert list(client[target_db].orders.find()) == [{"_id": "kept"}]
    assert user_collections(client, target_db) == ["orders"]


@pytest.mark.parametrize("bad", [["-j", "0"], ["-j", "65"], ["--batch-size", "0"]])
def test_out_of_range_settings_are_usage_errors(
    cli: CliRunner,
    client: Any,
    mongo_uri: str,
    shop_archive: Path,
    target_db: str,
    bad: list[str],
) -> None:
    result = restore_cli(cli, shop_archive, mongo_uri, "--db", target_db, *bad)
    assert result.code == 2
    assert result.err.startswith("mongo-backup: error:")
    assert target_db not in client.list_database_names()


def test_an_index_the_write_concern_does_not_confirm_is_a_problem(
    cli: CliRunner, client: Any, mongo_uri: str, shop: str, shop_archive: Path, target_db: str
) -> None:
    """Index builds go with the documents' write concern; one the server built but
    could not confirm (it may roll back) is reported, not counted as built (exit 3)."""
    concern = {"code": 64, "codeName": "WriteConcernFailed", "errmsg": "waiting timed out"}
    with fail_point(client, "alwaysOn", failCommands=["createIndexes"], writeConcernError=concern):
        code, outcome = restore_json(cli, shop_archive, mongo_uri, "--db", target_db)
    assert code == 3
    orders = outcome["orders"]
    assert orders["inserted"] == 300 and orders["indexes_built"] == 0
    assert sorted(orders["problems"]) == [
        f"index {name!r}: applied, but not confirmed by the write concern "
        "(it may roll back): waiting timed out (WriteConcernFailed)"
        for name in ("sku_idx", "total_idx")
    ]


def test_a_collection_the_write_concern_does_not_confirm_stops_the_restore(
    cli: CliRunner, client: Any, mongo_uri: str, shop: str, shop_archive: Path, target_db: str
) -> None:
    """A collection's creation the server could not confirm may roll back (and the
    inserts would then make a plain one, without its options): the restore stops with
    one line, as for an unconfirmed insert."""
    concern = {"code": 64, "codeName": "WriteConcernFailed", "errmsg": "waiting timed out"}
    with fail_point(client, {"times": 1}, failCommands=["create"], writeConcernError=concern):
        result = cli("restore", shop_archive, "--uri", mongo_uri, "--db", target_db)
    assert result.code == 1, result.err
    last = result.err.strip().splitlines()[-1]
    assert last.endswith(
        ": applied, but not confirmed by the write concern (it may roll back): waiting timed "
        "out (WriteConcernFailed)"
    ), last
    assert "Traceback" not in result.err
