"""``restore --ns-from/--ns-to`` against a real server: a backup, and a chain with its
change events, restored under new names, views following (issue 13, renames)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from chaintools import snapshot
from conftest import CliRunner
from restoretools import assert_single_error_line, backup_archive

LOOKUP = {"from": "users", "localField": "user", "foreignField": "_id", "as": "u"}


def seed(client: MongoClient[Any], db: str) -> None:
    client[db].orders.insert_many([{"_id": i, "user": i % 3, "total": i * 1.5} for i in range(50)])
    client[db].orders.create_index("user", name="by_user")
    client[db].users.insert_many([{"_id": i, "name": f"u{i}"} for i in range(3)])
    client[db].command(
        "create",
        "orders_with_users",
        viewOn="orders",
        pipeline=[{"$lookup": LOOKUP}],
    )


def view_options(client: MongoClient[Any], db: str) -> dict[str, Any]:
    (info,) = client[db].list_collections(filter={"type": "view"})
    return dict(info["options"])


def test_a_chain_restores_under_new_names_and_views_follow(
    cli: CliRunner, client: MongoClient[Any], mongo_uri: str, db_name: str, target_db: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    seed(client, db_name)
    backup_archive(cli, mongo_uri, db_name, tmp_path)
    client[db_name].orders.update_one({"_id": 7}, {"$set": {"total": -1.0}})
    client[db_name].orders.delete_one({"_id": 8})
    client[db_name].users.insert_one({"_id": 9, "name": "late"})
    # Collection events are replayed under the new names too: a view created on "orders", a
    # collection created and renamed.
    client[db_name].command(
        "create", "late_view", viewOn="orders", pipeline=[{"$unionWith": "orders"}]
    )
    client[db_name].orders_new.insert_one({"_id": 1})
    client[db_name].orders_new.rename("orders_next")
    increment = backup_archive(cli, mongo_uri, db_name, tmp_path, "--incremental")

    result = cli("restore", increment, "--uri", mongo_uri, "--db", target_db, "-q",
                 "--ns-from", "*.orders", "--ns-to", "*.orders_2026")  # fmt: skip
    assert result.code == 0, result.err
    source, restored = snapshot(client, db_name), snapshot(client, target_db)
    assert sorted(restored) == ["orders_2026", "orders_next", "users"]
    assert restored["orders_2026"] == source["orders"]  # bytes and indexes, changes applied
    assert restored["users"] == source["users"]
    assert restored["orders_next"] == source["orders_next"]
    views = {
        v["name"]: v["options"] for v in client[target_db].list_collections(filter={"type": "view"})
    }
    assert views["orders_with_users"]["viewOn"] == "orders_2026"
    assert views["orders_with_users"]["pipeline"][0]["$lookup"]["from"] == "users"
    assert views["late_view"]["viewOn"] == "orders_2026"
    assert views["late_view"]["pipeline"] == [{"$unionWith": "orders_2026"}]


def test_a_database_rename_needs_no_db(
    cli: CliRunner, client: MongoClient[Any], mongo_uri: str, db_name: str, target_db: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    seed(client, db_name)
    archive = backup_archive(cli, mongo_uri, db_name, tmp_path)
    result = cli("restore", archive, "--uri", mongo_uri, "--nsFrom", f"{db_name}.*",
                 "--nsTo", f"{target_db}.*")  # fmt: skip
    assert result.code == 0, result.err
    assert f"restore into '{target_db}'" in result.out
    assert snapshot(client, target_db) == snapshot(client, db_name)
    assert view_options(client, target_db) == view_options(client, db_name)


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        (["--ns-from", "{db}.*"], "come in pairs"),
        (["--ns-from", "{db}.*", "--ns-to", "{db}.*.*"], "more '*'"),
        (["--ns-from", "{db}.orders", "--ns-to", "{db}.users"], "renames both 'orders' and"),
        (
            ["--ns-from", "{db}.orders", "--ns-to", "a.o", "--ns-from", "{db}.*", "--ns-to", "b.*"],
            "several databases",
        ),
        (
            ["--ns-from", "{db}.*", "--ns-to", "copy_{db}.*", "--db", "{target}"],
            "name different databases",
        ),
    ],
)
def test_bad_renames_are_one_line_and_write_nothing(
    cli: CliRunner, client: MongoClient[Any], mongo_uri: str, db_name: str, target_db: str,
    tmp_path: Path, pairs: list[str], message: str,
) -> None:  # fmt: skip
    seed(client, db_name)
    archive = backup_archive(cli, mongo_uri, db_name, tmp_path)
    before = set(client.list_database_names())
    args = [p.format(db=db_name, target=target_db) for p in pairs]
    result = cli("restore", archive, "--uri", mongo_uri, *args)
    assert result.code == 2
    assert message in assert_single_error_line(result)
    assert set(client.list_database_names()) == before
