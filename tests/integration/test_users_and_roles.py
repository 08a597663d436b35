"""``--users-and-roles`` (issue 13, item 3): a database's users (with their password
hashes) and custom roles, backed up in a member of their own and recreated by restore.

Server-agnostic: the roles round-trip everywhere; the users need ``_mergeAuthzCollections``
(MongoDB has it, SecantusDB has not), so on a server without it the restore must end
incomplete (exit 3) with one problem line while the documents and roles are restored, and
on one with it the restored user must log in with its password (``MONGO_TEST_URI``)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymongo.errors
import pytest
from pymongo import MongoClient

from authtools import leaks, written_contents
from bsontools import read_manifest
from conftest import CliRunner
from damagetools import forged_manifest, members_of, write_tar
from mongo_backup.archive.manifest import (
    USERS_FILE,
    USERS_NAME,
    CollectionEntry,
    Manifest,
    manifest_bytes,
    parse_manifest,
)
from mongo_backup.errors import ArchiveError
from restoretools import assert_single_error_line, backup_archive
from serverfeatures import lacks

PASSWORD = "Uu-7q!pass word"
ORDERS = [{"_id": i, "total": i * 3} for i in range(20)]
BASE = [{"resource": {"db": "", "collection": "orders"}, "actions": ["find"]}]
CLERK = [{"resource": {"db": "", "collection": "orders"}, "actions": ["insert", "update"]}]


def _privileges(template: list[dict[str, Any]], db: str) -> list[dict[str, Any]]:
    return [{**p, "resource": {**p["resource"], "db": db}} for p in template]


def _drop_authz(client: MongoClient[Any], db: str) -> None:
    client[db].command("dropAllUsersFromDatabase")
    client[db].command("dropAllRolesFromDatabase")


@pytest.fixture
def shop(client: MongoClient[Any], db_name: str) -> Iterator[str]:
    """A database with documents, two custom roles (one inherits the other) and a user."""
    database = client[db_name]
    database.orders.insert_many(ORDERS)
    try:
        database.command("createRole", "base", privileges=_privileges(BASE, db_name), roles=[])
        database.command(
            "createRole", "clerk", privileges=_privileges(CLERK, db_name), roles=["base"]
        )
        database.command(
            "createUser", "app", pwd=PASSWORD, roles=["clerk", {"role": "read", "db": db_name}]
        )
    except pymongo.errors.OperationFailure as error:
        lacks("user-admin", error)
    yield db_name
    _drop_authz(client, db_name)


def _roles(client: MongoClient[Any], db: str) -> dict[str, tuple[str, str]]:
    found = client[db].command("rolesInfo", 1, showPrivileges=True)["roles"]
    return {
        role["role"]: (
            json.dumps(role["privileges"], sort_keys=True),
            json.dumps(sorted((r["db"], r["role"]) for r in role["roles"])),
        )
        for role in found
    }


def _logs_in(uri: str, db: str) -> bool:
    with MongoClient(
        uri, username="app", password=PASSWORD, authSource=db, serverSelectionTimeoutMS=5000
    ) as login:
        try:
            login[db].command("ping")
            return True
        except pymongo.errors.OperationFailure:
            return False


def test_users_and_roles_round_trip(
    cli: CliRunner, client: MongoClient[Any], mongo_uri: str, shop: str, tmp_path: Path
) -> None:
    roles_before = _roles(client, shop)
    result = cli(
        "backup", "--uri", mongo_uri, "--db", shop, "--out-dir", tmp_path / "out",
        "--users-and-roles",
    )  # fmt: skip
    assert result.code == 0, result.err
    archive = Path(result.out.strip())
    warnings = [line for line in result.err.splitlines() if " WARNING " in line]
    assert len(warnings) == 1 and "password hashes" in warnings[0], result.err
    assert "--encrypt-to" in warnings[0]
    manifest = read_manifest(archive)
    assert manifest["credentials"] is True
    users_entry = next(e for e in manifest["collections"] if e["type"] == "users")
    assert (users_entry["name"], users_entry["count"]) == (USERS_NAME, 3)  # 2 roles, 1 user
    # Hashes, never the password: not in the archive, the folder or any output.
    written = written_contents(tmp_path)
    assert not leaks([PASSWORD], written | {"out": result.out.encode(), "err": result.err.encode()})
    assert b"storedKey" in b"".join(written.values())  # the SCRAM credentials are kept

    inspected = cli("inspect", archive)
    assert "users and roles: 3 of them, with their password hashes" in inspected.out
    assert cli("verify", archive).code == 0

    _drop_authz(client, shop)
    client.drop_database(shop)
    restored = cli("restore", archive, "--uri", mongo_uri, "--users-and-roles")
    assert client[shop].orders.count_documents({}) == len(ORDERS)  # the data stands
    assert _roles(client, shop) == roles_before
    assert "users and roles: 2 roles created, 0 replaced, 0 kept" in restored.out
    if "cannot take users with their password hashes" in restored.out:  # SecantusDB
        assert restored.code == 3, restored.out + restored.err
        problems = [line for line in restored.out.splitlines() if "problem:" in line]
        assert len(problems) == 1 and "1 users not restored" in problems[0]
    else:
        assert restored.code == 0, restored.out + restored.err
        assert "1 users restored, 0 kept" in restored.out
        assert _logs_in(mongo_uri, shop)


def test_existing_roles_are_kept_unless_drop(
    cli: CliRunner, client: MongoClient[Any], mongo_uri: str, shop: str, tmp_path: Path
) -> None:
    archive = backup_archive(cli, mongo_uri, shop, tmp_path / "out", "--users-and-roles")
    backed_up = _roles(client, shop)
    client[shop].command("updateRole", "base", privileges=_privileges(CLERK, shop))
    changed = _roles(client, shop)
    assert changed != backed_up

    kept = cli("restore", archive, "--uri", mongo_uri, "--users-and-roles", "--drop")
    # --drop replaces the roles; the user exists, so it is replaced too where possible.
    assert "0 roles created, 2 replaced, 0 kept" in kept.out, kept.out
    assert _roles(client, shop) == backed_up

    client[shop].command("updateRole", "base", privileges=_privileges(CLERK, shop))
    client[shop].orders.drop()  # the documents restore cleanly: only users and roles differ
    again = cli("restore", archive, "--uri", mongo_uri, "--users-and-roles")
    assert "0 roles created, 0 replaced, 2 kept; 0 users restored, 1 kept" in again.out
    assert again.code == 0, again.out + again.err  # nothing to merge: the user exists
    assert _roles(client, shop) == changed  # never changed without --drop


def test_a_dry_run_says_what_it_would_restore_and_changes_nothing(
    cli: CliRunner, client: MongoClient[Any], mongo_uri: str, shop: str, tmp_path: Path
) -> None:
    archive = backup_archive(cli, mongo_uri, shop, tmp_path / "out", "--users-and-roles")
    _drop_authz(client, shop)
    result = cli("restore", archive, "--uri", mongo_uri, "--users-and-roles", "--dry-run")
    assert result.code == 0, result.err
    assert "users and roles: would restore 2 roles and 1 users" in result.out
    assert _roles(client, shop) == {}


def test_without_the_flag_restore_leaves_users_and_roles_alone(
    cli: CliRunner, client: MongoClient[Any], mongo_uri: str, shop: str, tmp_path: Path
) -> None:
    archive = backup_archive(cli, mongo_uri, shop, tmp_path / "out", "--users-and-roles")
    _drop_authz(client, shop)
    result = cli("restore", archive, "--uri", mongo_uri, "--drop")
    assert result.code == 0, result.err
    assert "--users-and-roles restores them" in result.err
    assert _roles(client, shop) == {}
    assert client[shop].orders.count_documents({}) == len(ORDERS)


def test_bad_inputs_are_one_line_and_write_nothing(
    cli: CliRunner, client: MongoClient[Any], mongo_uri: str, shop: str, target_db: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    out = tmp_path / "inc"
    increment = cli(
        "backup", "--uri", mongo_uri, "--db", shop, "--out-dir", out, "--incremental",
        "--users-and-roles",
    )  # fmt: skip
    assert increment.code == 2 and "--users-and-roles goes with a full backup" in (
        assert_single_error_line(increment)
    )
    assert not out.exists() or not any(out.iterdir())

    plain = backup_archive(cli, mongo_uri, shop, tmp_path / "plain")
    with_users = backup_archive(cli, mongo_uri, shop, tmp_path / "users", "--users-and-roles")
    refusals = [
        (cli("restore", plain, "--uri", mongo_uri, "--db", target_db, "--users-and-roles"),
         "the backup holds no users and roles"),
        (cli("restore", with_users, "--uri", mongo_uri, "--db", target_db, "--users-and-roles"),
         "into the databases they were defined in"),
        (cli("restore", with_users, "--uri", mongo_uri, "--users-and-roles",
             "--ns-from", f"{shop}.*", "--ns-to", f"{target_db}.*"),
         "into the databases they were defined in"),
    ]  # fmt: skip
    for result, text in refusals:
        assert result.code == 2 and text in assert_single_error_line(result)
    assert target_db not in client.list_database_names()


def _manifest(*entries: CollectionEntry) -> bytes:
    base = Manifest("shop", "0.1.0", "canonical", False, "none", "t0", "t1", {}, [])
    base.collections = list(entries)
    return manifest_bytes(base)


USERS = CollectionEntry(USERS_NAME, "users", USERS_FILE, count=1, bytes=2, sha256="0" * 64)


@pytest.mark.parametrize(
    "entries",
    [
        [CollectionEntry("$other", "users", USERS_FILE, sha256="0" * 64)],
        [CollectionEntry(USERS_NAME, "users", "users.jsonl", sha256="0" * 64)],
        [USERS, CollectionEntry(USERS_NAME, "users", USERS_FILE, sha256="1" * 64)],
    ],
)
def test_manifests_with_a_malformed_users_entry_are_refused(
    entries: list[CollectionEntry],
) -> None:
    with pytest.raises(ArchiveError):
        parse_manifest(_manifest(*entries))


def test_a_users_entry_is_not_a_collection() -> None:
    manifest = parse_manifest(_manifest(USERS, CollectionEntry("orders", "collection", "o.jsonl")))
    assert manifest.users is not None and not manifest.users.is_collection
    assert [e.name for e in manifest.collections if e.is_collection] == ["orders"]
    assert manifest.credentials is False and b"credentials" not in _manifest(USERS)


def test_several_databases_keep_each_database_users_and_roles(
    cli: CliRunner, client: MongoClient[Any], mongo_uri: str, shop: str, tmp_path: Path
) -> None:
    other = f"{shop}_b"
    client[other].items.insert_one({"_id": 1})
    client[other].command("createRole", "auditor", privileges=[], roles=[])
    try:
        before = {db: _roles(client, db) for db in (shop, other)}
        made = cli(
            "backup", "--uri", mongo_uri, "--db", shop, "--db", other, "--out-dir",
            tmp_path / "out", "--users-and-roles", "-q",
        )  # fmt: skip
        assert made.code == 0, made.err
        for db in (shop, other):
            _drop_authz(client, db)
        restored = cli("restore", made.out.strip(), "--uri", mongo_uri, "--users-and-roles")
        assert "3 roles created" in restored.out, restored.out
        assert {db: _roles(client, db) for db in (shop, other)} == before
    finally:
        _drop_authz(client, other)
        client.drop_database(other)


def test_an_archive_cannot_plant_users_or_roles_outside_its_databases(
    cli: CliRunner, client: MongoClient[Any], mongo_uri: str, shop: str, tmp_path: Path
) -> None:
    """A forged users member (checksums recomputed): an admin role, a user of the
    database granted root on admin, a role of the database reaching every database; each
    refused, the archive's own roles restored."""
    archive = backup_archive(cli, mongo_uri, shop, tmp_path / "out", "--users-and-roles")
    forged_records = [
        {"role": {"role": "evil", "db": "admin", "privileges": [],
                  "roles": [{"role": "root", "db": "admin"}]}},
        {"user": {"user": "x", "db": shop, "roles": [{"role": "root", "db": "admin"}],
                  "credentials": {}}},
        {"role": {"role": "wide", "db": shop, "roles": [],
                  "privileges": [{"resource": {"db": "", "collection": ""}, "actions": ["find"]}]}},
    ]  # fmt: skip
    lines = b"".join(json.dumps(record).encode() + b"\n" for record in forged_records)
    members = dict(members_of(archive))
    members[USERS_FILE] = members[USERS_FILE] + lines

    def change(data: dict[str, Any]) -> None:
        entry = next(e for e in data["collections"] if e["type"] == "users")
        body = members[USERS_FILE]
        entry.update(count=entry["count"] + len(forged_records), bytes=len(body))
        entry["sha256"] = hashlib.sha256(body).hexdigest()

    members["manifest.json"] = forged_manifest(members["manifest.json"], change)
    forged = write_tar(tmp_path / "forged.tar", list(members.items()), "none")
    _drop_authz(client, shop)
    result = cli("restore", forged, "--uri", mongo_uri, "--users-and-roles", "--drop")
    assert result.code == 3, result.out + result.err
    for refused in (
        "role admin.evil reaches admin",
        f"user {shop}.x reaches admin",
        f"role {shop}.wide reaches every database",
    ):
        assert refused in result.out, result.out
    assert client.admin.command("rolesInfo", "evil")["roles"] == []
    assert set(_roles(client, shop)) == {"base", "clerk"}
    assert [u["user"] for u in client[shop].command("usersInfo", 1)["users"]] in ([], ["app"])
