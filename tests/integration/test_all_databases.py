"""Backups of several databases in one archive (issue 13, part 1): every database of a
server of its own, or a chosen set on the shared one; restored whole, by ``--db``, by
``--ns-include`` and renamed; verified against the live databases; increments, resume,
``--dest`` with encryption, and a pipe between two server processes."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from bson import Decimal128, Int64, ObjectId, Regex, Timestamp
from pymongo import MongoClient
from pyrage import x25519

from bsontools import read_manifest
from chaintools import assert_same_snapshot, snapshot
from conftest import CliRunner
from mongo_backup.mongo.embedded import EmbeddedServer
from restoretools import assert_single_error_line
from resumetools import BackupProcess, resume_backup, wait_mid_unit

TOOL = [sys.executable, "-m", "mongo_backup"]


def seed(client: MongoClient[Any], shop: str, crm: str, odd: str) -> None:
    """Three databases: views (one on another), indexes, a validator, a capped
    collection, every common BSON type, and collection names no file may carry."""
    orders = client[shop].orders
    orders.insert_many(
        [
            {"_id": i, "total": Decimal128(f"{i}.25"), "at": dt.datetime(2026, 1, 1 + i % 28),
             "n": Int64(i), "oid": ObjectId(), "re": Regex("^a", "i"), "ts": Timestamp(i + 1, 1)}
            for i in range(400)
        ]
    )  # fmt: skip
    orders.create_index([("total", -1)], name="by_total")
    client[shop].command("create", "big", viewOn="orders", pipeline=[{"$match": {"n": {"$gt": 9}}}])
    client[shop].command("create", "bigger", viewOn="big", pipeline=[{"$limit": 5}])
    client[crm].command("create", "people", validator={"age": {"$type": "int"}})
    client[crm].people.insert_many([{"_id": f"p{i}", "age": i} for i in range(50)])
    client[crm].command("create", "log", capped=True, size=65536)
    client[crm].log.insert_many([{"_id": i, "line": "x" * i} for i in range(30)])
    for name in ("a/b c.d", "Ünïcode", "CON", "con", "a%2Fb"):
        client[odd][name].insert_many([{"_id": i, "name": name} for i in range(7)])


def names() -> tuple[str, str, str]:
    tag = uuid4().hex[:8]
    return f"shop_{tag}", f"crm_{tag}", f"odd-{tag}_ü"


@pytest.fixture
def three(client: MongoClient[Any]) -> Iterator[tuple[str, str, str]]:
    """Three fresh databases on the shared server, seeded, dropped afterwards (with
    whatever a test restored beside them)."""
    databases = names()
    seed(client, *databases)
    yield databases
    for name in client.list_database_names():
        if name.startswith(databases):  # the three and their restored copies
            client.drop_database(name)


@pytest.fixture
def second_server() -> Iterator[EmbeddedServer]:
    """An empty SecantusDB of its own: a restore target whose every database is ours."""
    server = EmbeddedServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def connect() -> Iterator[Callable[[str], MongoClient[Any]]]:
    """Clients to the servers of a test, closed after it."""
    clients: list[MongoClient[Any]] = []

    def connected(uri: str) -> MongoClient[Any]:
        clients.append(MongoClient(uri))
        return clients[-1]

    yield connected
    for opened in clients:
        opened.close()


def backup(cli: CliRunner, uri: str, out: Path, *extra: str) -> Path:
    result = cli("backup", "--uri", uri, "--out-dir", out, "-q", *extra)
    assert result.code == 0, result.err
    return Path(result.out.strip())


def several(databases: tuple[str, ...]) -> list[str]:
    return [arg for db in databases for arg in ("--db", db)]


def test_every_database_of_a_server_round_trips_and_verifies(
    cli: CliRunner, own_server: EmbeddedServer, second_server: EmbeddedServer,
    tmp_path: Path, clean_env: Path, connect: Callable[[str], MongoClient[Any]],
) -> None:  # fmt: skip
    source = connect(own_server.uri)
    databases = names()
    seed(source, *databases)
    source.admin.settings.insert_one({"_id": 1})  # admin: only with --include-admin
    archive = backup(cli, own_server.uri, tmp_path / "out")  # no --db, no MONGO_DB: all
    manifest = read_manifest(archive)
    assert manifest["database"] == "*"
    assert manifest["databases"] == sorted(databases)
    assert manifest["consistency"] in ("snapshot", "oplog")
    files = [entry["file"] for entry in manifest["collections"] if entry["file"]]
    assert all("/" not in file and not file.startswith(".") for file in files)
    assert len({file.casefold() for file in files}) == len(files)  # CON vs con
    assert not any(entry["name"].startswith("admin.") for entry in manifest["collections"])

    shown = cli("inspect", archive)
    assert shown.code == 0
    assert f"backup of 3 databases ({', '.join(sorted(databases))})" in shown.out
    assert cli("verify", archive, "--against-uri", own_server.uri, "-q").code == 0

    result = cli("restore", archive, "--uri", second_server.uri, "-q")
    assert result.code == 0, result.err
    target = connect(second_server.uri)
    assert sorted(set(target.list_database_names()) - {"local", "admin", "config"}) == sorted(
        databases
    )
    for db in databases:
        assert_same_snapshot(snapshot(target, db), snapshot(source, db), db)
    shop = databases[0]
    assert target[shop].bigger.count_documents({}) == 5  # a view on a view, in order
    assert "validator" in target[databases[1]].people.options()
    assert target[databases[1]].log.options()["capped"] is True
    assert cli("verify", archive, "--against-uri", second_server.uri, "-q").code == 0

    with_admin = backup(cli, own_server.uri, tmp_path / "admin", "--include-admin")
    assert "admin.settings" in [e["name"] for e in read_manifest(with_admin)["collections"]]


def test_chosen_databases_restore_whole_by_db_by_pattern_and_renamed(
    cli: CliRunner, client: MongoClient[Any], mongo_uri: str, three: tuple[str, str, str],
    tmp_path: Path,
) -> None:  # fmt: skip
    shop, crm, odd = three
    archive = backup(cli, mongo_uri, tmp_path / "out", *several(three))
    assert read_manifest(archive)["databases"] == sorted(three)

    # Everything, each database under a new name ($db$ as mongorestore spells it).
    result = cli("restore", archive, "--uri", mongo_uri, "-q",
                 "--ns-from", "$db$.$coll$", "--ns-to", "$db$_x.$coll$")  # fmt: skip
    assert result.code == 0, result.err
    for db in three:
        assert_same_snapshot(snapshot(client, f"{db}_x"), snapshot(client, db), db)
    assert client[f"{shop}_x"].bigger.count_documents({}) == 5  # views follow their db

    # One database (--db picks it), renamed.
    result = cli("restore", archive, "--uri", mongo_uri, "-q", "--db", crm,
                 "--ns-from", f"{crm}.*", "--ns-to", f"{crm}_y.*")  # fmt: skip
    assert result.code == 0, result.err
    assert_same_snapshot(snapshot(client, f"{crm}_y"), snapshot(client, crm), crm)
    assert not client[f"{shop}_y"].list_collection_names()

    # By pattern, across databases; a view renamed reads its renamed collection.
    result = cli("restore", archive, "--uri", mongo_uri, "-q", "--ns-include", f"{shop}.*",
                 "--ns-include", f"{odd}.C*", "--ns-from", f"{shop}.orders",
                 "--ns-to", f"{shop}_z.orders", "--ns-from", f"{shop}.*", "--ns-to",
                 f"{shop}_z.*", "--ns-from", f"{odd}.*", "--ns-to", f"{odd}_z.*")  # fmt: skip
    assert result.code == 0, result.err
    assert sorted(client[f"{odd}_z"].list_collection_names()) == ["CON"]
    assert client[f"{shop}_z"].big.count_documents({}) == 390

    # Against the live databases, then after a change there.
    assert cli("verify", archive, "--against-uri", mongo_uri, "-q").code == 0
    client[crm].people.delete_one({"_id": "p3"})
    changed = cli("verify", archive, "--against-uri", mongo_uri, "--json")
    assert changed.code != 0
    report = json.loads(changed.out)
    assert any(r["name"] == f"{crm}.people" and r["missing"] == 1 for r in report["against"])


def test_increments_of_several_databases_restore_every_change(
    cli: CliRunner, own_server: EmbeddedServer, second_server: EmbeddedServer,
    tmp_path: Path, clean_env: Path, connect: Callable[[str], MongoClient[Any]],
) -> None:  # fmt: skip
    source = connect(own_server.uri)
    shop, crm, odd = names()
    seed(source, shop, crm, odd)
    out = tmp_path / "out"
    backup(cli, own_server.uri, out)
    source[shop].orders.update_one({"_id": 3}, {"$set": {"total": "changed"}})
    source[crm].people.delete_one({"_id": "p1"})
    source["fresh_db"].things.insert_one({"_id": "new"})  # a database born after the full
    first = backup(cli, own_server.uri, out, "--incremental")
    source[odd]["CON"].insert_one({"_id": 99})
    source[shop].drop_collection("orders")
    last = backup(cli, own_server.uri, out, "--incremental")
    assert read_manifest(first)["kind"] == "incremental"

    listed = cli("list", out)
    assert listed.code == 0 and "incremental" in listed.out
    status = cli("status", out)
    assert status.code == 0 and "chain: 3 backup(s), whole" in status.out
    pruned = cli("prune", out, "--keep-last", "1")
    assert pruned.code == 0 and "3 kept" in pruned.out  # the chain stays whole

    result = cli("restore", last, "--uri", second_server.uri, "-q")
    assert result.code == 0, result.err
    target = connect(second_server.uri)
    for db in (shop, crm, odd, "fresh_db"):
        assert_same_snapshot(snapshot(target, db), snapshot(source, db), db)


def test_a_killed_backup_of_several_databases_resumes_to_the_same_archive(
    client: MongoClient[Any], mongo_uri: str, three: tuple[str, str, str], tmp_path: Path
) -> None:
    shop, crm, odd = three
    client[crm].bulk.insert_many([{"_id": i, "pad": "p" * 200} for i in range(20_000)])
    extra = ["--db", crm, "--db", odd, "--batch-size", "200", "--checkpoint-interval", "0.05",
             "--compress", "none", "-j", "1"]  # fmt: skip
    process = BackupProcess(mongo_uri, shop, tmp_path / "out", *extra)
    folder, _ = wait_mid_unit(process, 2_000)
    process.kill()
    archive = resume_backup(mongo_uri, shop, tmp_path / "out", folder, *extra)
    manifest = read_manifest(archive)
    assert manifest["databases"] == sorted(three)
    entry = next(e for e in manifest["collections"] if e["name"] == f"{crm}.bulk")
    assert entry["count"] == 20_000
    uninterrupted = backup_of(mongo_uri, tmp_path / "again", three)
    assert _members(archive) == _members(uninterrupted)


def backup_of(uri: str, out: Path, databases: tuple[str, ...]) -> Path:
    result = subprocess.run(
        [*TOOL, "backup", "--uri", uri, "--out-dir", str(out), "-q", "--compress", "none",
         *several(databases)],
        capture_output=True, timeout=300, check=True,
    )  # fmt: skip
    return Path(result.stdout.decode().strip())


def _members(archive: Path) -> list[tuple[str, str, int]]:
    manifest = read_manifest(archive)
    return [(e["name"], e["sha256"], e["count"]) for e in manifest["collections"] if e["file"]]


def test_several_databases_go_to_a_destination_encrypted_and_come_back(
    cli: CliRunner, client: MongoClient[Any], mongo_uri: str, three: tuple[str, str, str],
    tmp_path: Path,
) -> None:  # fmt: skip
    identity = x25519.Identity.generate()
    key = tmp_path / "key.txt"
    key.write_text(str(identity) + "\n")
    key.chmod(0o600)
    dest = tmp_path / "store"
    recipient = str(identity.to_public())
    result = cli("backup", "--uri", mongo_uri, *several(three), "--out-dir", tmp_path / "out",
                 "--dest", dest.as_uri(), "--encrypt-to", recipient, "-q")  # fmt: skip
    assert result.code == 0, result.err
    listed = cli("list", dest.as_uri())
    assert listed.code == 0 and "*" in listed.out
    (stored,) = [p for p in dest.iterdir() if p.name.endswith(".age")]
    shop = three[0]
    result = cli("restore", stored, "--uri", mongo_uri, "--identity", key, "-q", "--db", shop,
                 "--ns-from", f"{shop}.*", "--ns-to", f"{shop}_d.*")  # fmt: skip
    assert result.code == 0, result.err
    assert_same_snapshot(snapshot(client, f"{shop}_d"), snapshot(client, shop), shop)


def test_a_pipe_copies_several_databases_to_another_server(
    client: MongoClient[Any], mongo_uri: str, three: tuple[str, str, str],
    second_server: EmbeddedServer, tmp_path: Path, connect: Callable[[str], MongoClient[Any]],
) -> None:  # fmt: skip
    argv = [*TOOL, "backup", "--uri", mongo_uri, *several(three), "--out-dir",
            str(tmp_path / "w"), "--archive", "-"]  # fmt: skip
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as producer:
        assert producer.stdout is not None
        restore = subprocess.run(
            [*TOOL, "restore", "-", "--uri", second_server.uri, "-q"],
            stdin=producer.stdout, capture_output=True, timeout=300, check=False,
        )  # fmt: skip
        producer.stdout.close()
        assert producer.wait(60) == 0
    assert restore.returncode == 0, restore.stderr.decode()
    target = connect(second_server.uri)
    for db in three:
        assert_same_snapshot(snapshot(target, db), snapshot(client, db), db)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--all-databases", "--db", "x"], "--all-databases backs up every database"),
        (["--db", "x", "--include-admin"], "--include-admin applies to a backup of all"),
        (["--db", "x", "--db", "y", "--include-admin"], "--include-admin applies"),
        (["--db", "x", "--db", "y", "-c", "orders"], "--collection, --exclude-collection"),
        (["--all-databases", "--query", "{}"], "--collection, --exclude-collection and --query"),
        (["--db", "x", "--db", "a.b"], "invalid database name 'a.b'"),
    ],
)
def test_bad_requests_for_several_databases_are_one_line(
    cli: CliRunner, mongo_uri: str, tmp_path: Path, argv: list[str], message: str
) -> None:
    result = cli("backup", "--uri", mongo_uri, "--out-dir", tmp_path / "out", *argv)
    assert result.code == 2
    assert message in assert_single_error_line(result)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_named_database_with_nothing_in_it_is_refused(
    cli: CliRunner, mongo_uri: str, three: tuple[str, str, str], tmp_path: Path
) -> None:
    result = cli("backup", "--uri", mongo_uri, "--out-dir", tmp_path / "out",
                 "--db", three[0], "--db", "no_such_db_here")  # fmt: skip
    assert result.code == 1
    assert "database 'no_such_db_here' has no collections" in assert_single_error_line(result)
    assert not list((tmp_path / "out").glob("backup_data/*"))


def test_bad_restores_of_several_databases_are_one_line_and_write_nothing(
    cli: CliRunner, client: MongoClient[Any], mongo_uri: str, three: tuple[str, str, str],
    tmp_path: Path,
) -> None:  # fmt: skip
    archive = backup(cli, mongo_uri, tmp_path / "out", *several(three))
    before = sorted(client.list_database_names())
    cases = [
        (["--db", "nope"], "the backup holds no database 'nope'"),
        (["-c", "orders"], "this backup holds several databases"),
        (["--ns-include", "nope.*"], "matches no namespace"),
    ]
    for argv, message in cases:
        result = cli("restore", archive, "--uri", mongo_uri, *argv)
        assert result.code == 2, (argv, result.err)
        assert message in assert_single_error_line(result)
    verify = cli("verify", archive, "--against-uri", mongo_uri, "--against-db", three[0])
    assert verify.code == 2
    assert "--against-db names one database" in assert_single_error_line(verify)
    assert sorted(client.list_database_names()) == before
