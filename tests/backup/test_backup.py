"""``mongo-backup backup`` end to end against a server: layout, manifest, options, errors."""

from __future__ import annotations

import contextlib
import gc
import hashlib
import importlib
import json
import re
import tarfile
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
from pymongo.errors import OperationFailure

from bsontools import archive_members, manifest_entry, read_archive_member, read_manifest
from conftest import CliRunner
from mongo_backup import __version__
from mongo_backup.archive.manifest import parse_manifest
from mongo_backup.cli.config import AuthOptions, with_auth
from mongo_backup.errors import ConnectionFailed
from mongo_backup.mongo.connection import connect
from mongo_backup.names import is_safe_member_name
from mongo_backup.redact import hosts_of
from serverfeatures import lacks

# The module, not the function that mongo_backup/__init__ re-exports under the same name.
planning_module = importlib.import_module("mongo_backup.backup.planning")
# Tests that reach no server would otherwise fail on a src bug tested on its own below
# (test_failed_connect_closes_its_client): connect() leaks its MongoClient.

STAMP = r"backup_\d{8}_\d{6}(_\d+)?"


def run_backup(cli: CliRunner, uri: str, db: str, out: Path, *extra: str) -> Path:
    """A backup that must succeed; returns the archive path printed on stdout."""
    result = cli("backup", "--uri", uri, "--db", db, "--out-dir", out, *extra)
    assert result.code == 0, result.err
    return Path(result.out.strip())


@pytest.fixture
def shop(client: Any, db_name: str) -> str:
    """A small database: two collections with data, one empty, one secondary index."""
    db = client[db_name]
    db.alpha.insert_many([{"_id": i, "v": f"a{i}"} for i in range(3)])
    db.beta.insert_many([{"_id": i, "w": i * 1.5} for i in range(2)])
    db.beta.create_index("w", name="w_idx")
    db.create_collection("empty")
    return db_name


def test_stdout_is_exactly_the_archive_path_and_folder_is_removed(
    cli: CliRunner, mongo_uri: str, shop: str, tmp_path: Path
) -> None:
    result = cli("backup", "--uri", mongo_uri, "--db", shop, "--out-dir", tmp_path)
    assert result.code == 0, result.err
    assert result.out.count("\n") == 1
    archive = Path(result.out.strip())
    assert re.fullmatch(rf"{re.escape(str(tmp_path))}/backup_data/{STAMP}\.tar\.zst", str(archive))
    assert archive.is_file()
    # Only the archive remains: no working folder, no temporary partial file.
    assert [p.name for p in tmp_path.iterdir()] == ["backup_data"]
    assert [p.name for p in archive.parent.iterdir()] == [archive.name]
    assert archive.stat().st_mode & 0o077 == 0  # private: the data may be sensitive


def test_keep_folder_keeps_the_working_folder(
    cli: CliRunner, mongo_uri: str, shop: str, tmp_path: Path
) -> None:
    archive = run_backup(cli, mongo_uri, shop, tmp_path, "--keep-folder")
    folder = tmp_path / archive.name.removesuffix(".tar.zst")
    assert sorted(p.name for p in folder.iterdir()) == sorted(archive_members(archive))
    for name in archive_members(archive):
        assert (folder / name).read_bytes() == read_archive_member(archive, name)


@pytest.mark.parametrize(
    ("compress", "suffix", "magic"),
    [
        ("none", ".tar", None),
        ("gzip", ".tar.gz", b"\x1f\x8b"),
        ("zstd", ".tar.zst", b"\x28\xb5\x2f\xfd"),
    ],
)
def test_compressions(
    cli: CliRunner,
    mongo_uri: str,
    shop: str,
    tmp_path: Path,
    compress: str,
    suffix: str,
    magic: bytes | None,
) -> None:
    archive = run_backup(cli, mongo_uri, shop, tmp_path, "--compress", compress)
    assert archive.name.endswith(suffix) and re.fullmatch(STAMP + re.escape(suffix), archive.name)
    head = archive.read_bytes()[:512]
    if magic is None:
        assert head[257:262] == b"ustar"
        with tarfile.open(archive, "r:") as tar:  # plain tarfile, no helpers
            assert tar.getnames()[0] == "manifest.json"
    else:
        assert head.startswith(magic)
    assert archive_members(archive) == ["manifest.json", "alpha.jsonl", "beta.jsonl", "empty.jsonl"]


def test_manifest_describes_every_member_exactly(
    cli: CliRunner, mongo_uri: str, shop: str, tmp_path: Path
) -> None:
    archive = run_backup(cli, mongo_uri, shop, tmp_path)
    manifest = read_manifest(archive)
    parse_manifest(read_archive_member(archive, "manifest.json"))  # its own checksum holds
    assert manifest["format"] == "mongo-backup"
    assert manifest["format_version"] == 1
    assert manifest["tool_version"] == __version__
    assert manifest["database"] == shop
    assert manifest["json_format"] == "canonical" and manifest["compression"] == "zstd"
    assert manifest["server"]["version"] not in ("", "unknown")
    assert manifest["hosts"] == hosts_of(mongo_uri)
    assert all("@" not in host for host in manifest["hosts"])
    expected = {"alpha": 3, "beta": 2, "empty": 0}
    assert {c["name"]: c["count"] for c in manifest["collections"]} == expected
    for entry in manifest["collections"]:
        data = read_archive_member(archive, entry["file"])
        assert entry["status"] == "ok" and entry["error"] is None
        assert entry["bytes"] == len(data)
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert data.count(b"\n") == entry["count"]
    beta = manifest_entry(manifest, "beta")
    assert "w_idx" in {index["name"] for index in beta["indexes"]}
    assert read_archive_member(archive, "empty.jsonl") == b""


def test_view_capped_and_validated_collections(
    cli: CliRunner, client: Any, mongo_uri: str, db_name: str, tmp_path: Path
) -> None:
    db = client[db_name]
    db.base.insert_one({"_id": 1, "x": 1})
    db.command("create", "by_x", viewOn="base", pipeline=[{"$match": {"x": 1}}])
    db.create_collection("ring", capped=True, size=4096, max=10)
    db.ring.insert_one({"_id": 1})
    schema = {"bsonType": "object", "required": ["x"]}
    db.create_collection("checked", validator={"$jsonSchema": schema})
    archive = run_backup(cli, mongo_uri, db_name, tmp_path)
    manifest = read_manifest(archive)
    view = manifest_entry(manifest, "by_x")
    assert view["type"] == "view" and view["file"] is None
    assert view["options"]["viewOn"] == "base"
    assert "by_x.jsonl" not in archive_members(archive)
    ring = manifest_entry(manifest, "ring")
    assert ring["options"]["capped"] is True and "size" in ring["options"] and ring["count"] == 1
    checked = manifest_entry(manifest, "checked")
    assert checked["options"]["validator"]["$jsonSchema"]["required"] == ["x"]


HOSTILE_NAMES = ["a/b", "a b", "a\nb", "ünï", "Case", "case", "x" * 150, "con", "aux.logs"]


def test_hostile_collection_names_get_unique_safe_files(
    cli: CliRunner, client: Any, mongo_uri: str, db_name: str, tmp_path: Path
) -> None:
    db = client[db_name]
    for index, name in enumerate(HOSTILE_NAMES):
        try:
            db[name].insert_one({"_id": index})
        except OperationFailure as error:
            lacks("collection-names", f"{name!r}: {error}")
    archive = run_backup(cli, mongo_uri, db_name, tmp_path, "--keep-folder")
    manifest = read_manifest(archive)
    files = {c["name"]: c["file"] for c in manifest["collections"]}
    assert set(files) == set(HOSTILE_NAMES)
    assert len({f.casefold() for f in files.values()}) == len(files)
    assert all(is_safe_member_name(f) and len(f) <= 126 for f in files.values())
    for index, name in enumerate(HOSTILE_NAMES):
        assert read_archive_member(archive, files[name]).count(b'"$numberInt" : "%d"' % index) == 1
    folder = tmp_path / archive.name.removesuffix(".tar.zst")
    assert {p.name for p in folder.iterdir()} == {*files.values(), "manifest.json"}


def test_collection_filters(cli: CliRunner, mongo_uri: str, shop: str, tmp_path: Path) -> None:
    only = read_manifest(
        run_backup(
            cli, mongo_uri, shop, tmp_path / "1", "--collection", "alpha", "--collection", "empty"
        )
    )
    assert [c["name"] for c in only["collections"]] == ["alpha", "empty"]
    without = read_manifest(
        run_backup(cli, mongo_uri, shop, tmp_path / "2", "--exclude-collection", "beta")
    )
    assert [c["name"] for c in without["collections"]] == ["alpha", "empty"]
    missing = cli(
        "backup",
        "--uri",
        mongo_uri,
        "--db",
        shop,
        "--out-dir",
        tmp_path / "3",
        "--collection",
        "nope",
    )
    assert missing.code == 2 and "nope" in missing.err and missing.out == ""


def test_json_output(cli: CliRunner, mongo_uri: str, shop: str, tmp_path: Path) -> None:
    result = cli("backup", "--uri", mongo_uri, "--db", shop, "--out-dir", tmp_path, "--json")
    assert result.code == 0, result.err
    assert len(result.out_lines) == 1
    data = json.loads(result.out)
    assert set(data) == {
        "archive",
        "url",
        "database",
        "kind",
        "consistency",
        "point",
        "parent",
        "collections",
        "duration_s",
        "complete",
        "exit_code",
    }
    assert data["kind"] == "full" and data["parent"] is None
    assert Path(data["archive"]).is_file() and data["database"] == shop
    assert (data["complete"], data["exit_code"]) == (True, 0)
    alpha = next(c for c in data["collections"] if c["name"] == "alpha")
    assert alpha == {
        "name": "alpha",
        "type": "collection",
        "file": "alpha.jsonl",
        "count": 3,
        "bytes": alpha["bytes"],
        "status": "ok",
        "error": None,
    }


def test_relaxed_and_pretty_formats(
    cli: CliRunner, mongo_uri: str, shop: str, tmp_path: Path
) -> None:
    relaxed = run_backup(cli, mongo_uri, shop, tmp_path / "r", "--json-format", "relaxed")
    assert read_manifest(relaxed)["json_format"] == "relaxed"
    first_line = read_archive_member(relaxed, "alpha.jsonl").splitlines()[0]
    assert first_line == b'{ "_id" : 0, "v" : "a0" }'
    pretty = run_backup(cli, mongo_uri, shop, tmp_path / "p", "--pretty")
    assert read_manifest(pretty)["pretty"] is True
    text = read_archive_member(pretty, "alpha.jsonl")
    assert text.startswith(b'{\n  "_id": {\n    "$numberInt": "0"\n  },\n')
    assert text.count(b"\n}\n") == 3


def test_missing_configuration_exits_2(cli: CliRunner, clean_env: Path) -> None:
    result = cli("backup", "--db", "x", "--out-dir", clean_env / "out")
    assert result.code == 2
    assert "MONGO_URI" in result.err and result.out == ""
    assert not (clean_env / "out").exists()


def test_unreachable_server_fails_fast_naming_the_host(cli: CliRunner, tmp_path: Path) -> None:
    started = time.monotonic()
    result = cli(
        "backup",
        "--uri",
        "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=1000",
        "--db",
        "x",
        "--out-dir",
        tmp_path,
        "--timeout",
        "1",
    )
    assert time.monotonic() - started < 8
    assert result.code == 1 and result.out == ""
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and "127.0.0.1:1" in lines[0], result.err


def test_empty_database_fails_unless_allowed(
    cli: CliRunner, mongo_uri: str, db_name: str, tmp_path: Path
) -> None:
    refused = cli("backup", "--uri", mongo_uri, "--db", db_name, "--out-dir", tmp_path)
    assert refused.code == 1 and db_name in refused.err and "--allow-empty" in refused.err
    archive = run_backup(cli, mongo_uri, db_name, tmp_path, "--allow-empty")
    assert archive_members(archive) == ["manifest.json"]
    assert read_manifest(archive)["collections"] == []


def test_backups_in_the_same_second_never_collide(
    cli: CliRunner, mongo_uri: str, shop: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(planning_module, "utc_stamp", lambda now=None: "20240101_000000")
    archives = [run_backup(cli, mongo_uri, shop, tmp_path) for _ in range(3)]
    assert [a.name for a in archives] == [
        "backup_20240101_000000.tar.zst",
        "backup_20240101_000000_1.tar.zst",
        "backup_20240101_000000_2.tar.zst",
    ]


def test_archiving_failure_keeps_the_folder(
    cli: CliRunner, mongo_uri: str, shop: str, tmp_path: Path
) -> None:
    (tmp_path / "backup_data").write_text("a file where the archive folder should be")
    result = cli("backup", "--uri", mongo_uri, "--db", shop, "--out-dir", tmp_path)
    assert result.code == 1 and result.out == ""
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert str(folder) in result.err
    # zstd (the default) keeps each member compressed while it is written.
    # The checkpoint (the plan and its journal of finished units) stays too, so that
    # --resume can finish the job.
    assert sorted(p.name for p in folder.iterdir()) == [
        "alpha.jsonl.zst",
        "beta.jsonl.zst",
        "checkpoint.done.jsonl",
        "checkpoint.json",
        "empty.jsonl.zst",
        "manifest.json",
    ]
    # ... and such a folder is still a backup that verify (and restore) can read.
    assert cli("verify", folder).code == 0
    # Once the obstacle is gone, --resume archives what was exported, reading nothing again.
    (tmp_path / "backup_data").unlink()
    resumed = cli("backup", "--uri", mongo_uri, "--db", shop, "--out-dir", tmp_path, "--resume")
    assert resumed.code == 0, resumed.err
    assert Path(resumed.out.strip()).name == folder.name + ".tar.zst"
    assert not folder.exists()


def test_failed_connect_closes_its_client() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with contextlib.suppress(ConnectionFailed):
            connect("mongodb://127.0.0.1:1/", timeout=0.5)
        gc.collect()
    leaks = [
        w
        for w in caught
        if issubclass(w.category, ResourceWarning) and "MongoClient" in str(w.message)
    ]
    assert leaks == []


# --- credentials ---------------------------------------------------------------------

PASSWORD = "s3cr3tPW"


@pytest.mark.parametrize(
    "flags", [(), ("-v",), ("-vv", "--log-format", "json")], ids=["plain", "v", "vv-json"]
)
def test_credentials_never_printed_for_unreachable_server(
    cli: CliRunner, tmp_path: Path, flags: tuple[str, ...]
) -> None:
    uri = f"mongodb://alice:{PASSWORD}@127.0.0.1:1/?serverSelectionTimeoutMS=1000"
    result = cli(
        "backup", "--uri", uri, "--db", "x", "--out-dir", tmp_path, "--timeout", "1", *flags
    )
    assert result.code == 1
    assert "127.0.0.1:1" in result.err
    for secret in (PASSWORD, "alice"):
        assert secret not in result.out + result.err


def test_credentials_never_written_on_success(
    cli: CliRunner, client: Any, mongo_uri: str, shop: str, tmp_path: Path
) -> None:
    user = f"alice_{shop}"
    try:
        client.admin.command("createUser", user, pwd=PASSWORD, roles=["root"])
    except OperationFailure as error:
        lacks("user-admin", error)
    try:
        # This user's credentials in place of any the URI carries (MONGO_TEST_URI may).
        as_user = AuthOptions(username=user, password=PASSWORD, auth_source="admin")
        uri = with_auth(mongo_uri, as_user)
        result = cli(
            "backup",
            "--uri",
            uri,
            "--db",
            shop,
            "--out-dir",
            tmp_path,
            "-v",
            "--compress",
            "none",
            "--json",
        )
    finally:
        client.admin.command("dropUser", user)
    assert result.code == 0, result.err
    archive = Path(json.loads(result.out)["archive"])
    everything = result.out + result.err
    data = archive.read_bytes()  # an uncompressed tar: every member's bytes are in here
    for secret in (PASSWORD, user):
        assert secret not in everything
        assert secret.encode() not in data
    assert read_manifest(archive)["hosts"] == hosts_of(mongo_uri)


# --- a failing collection ----------------------------------------------------------


def test_failing_collection_is_recorded_and_exit_code_is_3(
    cli: CliRunner, client: Any, mongo_uri: str, db_name: str, tmp_path: Path
) -> None:
    db = client[db_name]
    db.a_first.insert_one({"_id": 1})
    db.b_second.insert_one({"_id": 2})
    # With one worker, collections of the same size are read in name order, and nothing
    # else the backup sends is a "find", so one failure hits a_first even where the
    # namespace filter is ignored.
    failpoint = {
        "configureFailPoint": "failCommand",
        "mode": {"times": 1},
        "data": {"failCommands": ["find"], "errorCode": 2, "namespace": f"{db_name}.a_first"},
    }
    try:
        client.admin.command(failpoint)
    except OperationFailure as error:
        lacks("fail-points", error)
    try:
        result = cli(
            "backup", "--uri", mongo_uri, "--db", db_name, "--out-dir", tmp_path, "-j", "1"
        )
    finally:
        client.admin.command({"configureFailPoint": "failCommand", "mode": "off"})
    assert result.code == 3, result.err
    archive = Path(result.out.strip())
    manifest = read_manifest(archive)
    failed = manifest_entry(manifest, "a_first")
    assert failed["status"] == "failed" and failed["file"] is None and failed["error"]
    assert manifest_entry(manifest, "b_second")["status"] == "ok"
    assert archive_members(archive) == ["manifest.json", "b_second.jsonl"]
    assert "a_first" in result.err  # logged, with the reason
