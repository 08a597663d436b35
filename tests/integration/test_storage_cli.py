"""Storage end to end, through the CLI: ``backup --dest/--stream/--keep-local``, restore,
verify and inspect of archive URLs, ``list`` and ``prune``, and ``--encrypt-to`` /
``--identity``.

S3 is moto's server on loopback (``s3tools.py``). Every CLI call of this module goes
through :func:`mb`, which fails the test if the session's distinctive S3 credentials
(``s3tools.ACCESS_KEY_ID`` and ``SECRET_ACCESS_KEY``) ever show on stdout, on stderr or
in a log record; tests that write to S3 look for them in the files and objects too.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from bson import Binary, Code, Decimal128, Int64, ObjectId, Regex, Timestamp
from moto.server import ThreadedMotoServer
from pyrage import x25519

from chaintools import assert_same_snapshot, snapshot
from conftest import CliResult, CliRunner
from restoretools import assert_same_bytes, assert_single_error_line, user_collections
from s3tools import (
    ACCESS_KEY_ID,
    SECRET_ACCESS_KEY,
    MotoS3,
    credential_leaks,
    log_records,
    moto_s3_fixture,  # noqa: F401  (registers the fixture moto_s3)
    quiet_s3_fixture,  # noqa: F401  (registers the fixture s3)
)

ARCHIVE_STEM = r"backup_\d{8}_\d{6}(_\d+)?"
NEXT_SECOND = 1.1  # writes after a backup fall in a later second than its point
MiB = 1024 * 1024


# -- fixtures and helpers --------------------------------------------------------------


class Mb:
    """The CLI, with every output checked for credentials; remembers what it printed."""

    def __init__(self, cli: CliRunner, uri: str) -> None:
        self._cli = cli
        self.uri = uri
        self.results: list[CliResult] = []

    def __call__(self, *argv: str | os.PathLike[str]) -> CliResult:
        with log_records() as records:
            result = self._cli(*argv)
        self.results.append(result)
        texts = {"stdout": result.out, "stderr": result.err}
        assert credential_leaks(texts, records) == [], (argv, result.out, result.err, records)
        return result

    def backup(self, db: str, out: Path, *extra: str | os.PathLike[str]) -> CliResult:
        return self("backup", "--uri", self.uri, "--db", db, "--out-dir", out, "-q", *extra)

    def backup_ok(self, db: str, out: Path, *extra: str | os.PathLike[str]) -> str:
        result = self.backup(db, out, *extra)
        assert result.code == 0, result.err
        lines = result.out.splitlines()
        assert len(lines) == 1, result.out
        return lines[0]

    def restore(self, source: str | Path, target: str, *extra: str | os.PathLike[str]) -> CliResult:
        return self("restore", source, "--uri", self.uri, "--db", target, "-q", *extra)


@pytest.fixture
def mb(cli: CliRunner, mongo_uri: str) -> Mb:
    return Mb(cli, mongo_uri)


def seed(client: Any, db: str) -> None:
    """Two collections with a spread of BSON types, and an index."""
    database = client[db]
    database.people.insert_many(
        [
            {
                "_id": i,
                "name": f"p{i}",
                "big": Int64(2**40 + i),
                "price": Decimal128("1.10"),
                "when": dt.datetime(2020, 1, 1, tzinfo=dt.UTC) + dt.timedelta(days=i),
                "tags": ["a", {"b": i}],
                "bin": Binary(bytes([i % 256]) * 5, 4),
                "re": Regex("^x", "i"),
                "code": Code("f()"),
                "ts": Timestamp(1_600_000_000 + i, 1),
                "ratio": 0.1 * i,
            }
            for i in range(1, 41)
        ]
    )
    database.people.create_index("name", name="name_idx")
    database.things.insert_many([{"_id": ObjectId(), "n": i, "s": "é" * i} for i in range(25)])


def assert_same_db(client: Any, source: str, target: str) -> None:
    assert user_collections(client, target) == user_collections(client, source)
    for name in user_collections(client, source):
        assert_same_bytes(client, source, target, name)


def prefix_of(url: str) -> str:
    """``s3://bucket/t-x`` -> ``t-x/`` (the key prefix under which its objects live)."""
    return url.split("://", 1)[1].split("/", 1)[1] + "/"


def key_of(url: str) -> str:
    return url.split("://", 1)[1].split("/", 1)[1]


def object_bytes(s3: MotoS3, key: str) -> bytes:
    body: bytes = s3.client().get_object(Bucket=s3.bucket, Key=key)["Body"].read()
    return body


def sha256sum_line(data: bytes, name: str) -> str:
    return f"{hashlib.sha256(data).hexdigest()}  {name}\n"


def local_archives(out: Path) -> list[str]:
    folder = out / "backup_data"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def the_error(result: CliResult) -> str:
    """The one error line of a failed command: the last line on stderr, no traceback;
    any line before it is a logged warning (such as an upload that could not be
    aborted)."""
    lines = result.err.splitlines()
    errors = [line for line in lines if line.startswith("mongo-backup: error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.err
    assert "Traceback" not in result.err
    assert all(" WARNING " in line for line in lines[:-1]), result.err
    return errors[0]


def database_exists(client: Any, name: str) -> bool:
    return name in client.list_database_names()


# -- 1. backup --dest s3://, three ways; list, restore, verify, inspect ---------------------


@pytest.mark.parametrize("mode", ["file", "stream", "keep-local"])
def test_s3_backup_round_trip(
    mode: str, s3: MotoS3, mb: Mb, client: Any, db_name: str, target_db: str, tmp_path: Path
) -> None:
    seed(client, db_name)
    location = s3.fresh_url()
    prefix = prefix_of(location)
    out = tmp_path / "out"
    extra = {"file": [], "stream": ["--stream"], "keep-local": ["--keep-local"]}[mode]
    url = mb.backup_ok(db_name, out, "--dest", location, "--endpoint-url", s3.endpoint_url, *extra)

    # stdout: the archive's URL, right under the location.
    assert url.startswith(location + "/")
    key = key_of(url)
    name = key.rsplit("/", 1)[1]
    assert re.fullmatch(ARCHIVE_STEM + r"\.tar\.zst", name), name
    # What the store holds: the archive and its sidecar, no temporary key, no upload
    # left pending.
    assert s3.keys(prefix) == [key, key + ".sha256"]
    assert not [k for k in s3.keys("") if ".partial-" in k]
    assert s3.pending_uploads(prefix) == []
    data = object_bytes(s3, key)
    assert object_bytes(s3, key + ".sha256").decode() == sha256sum_line(data, name)
    metadata = s3.client().head_object(Bucket=s3.bucket, Key=key)["Metadata"]
    assert metadata["mb_id"] == name.removesuffix(".tar.zst")
    assert metadata["mb_database"] == db_name
    assert metadata["mb_kind"] == "full"
    assert metadata["mb_collections"] == "2"
    assert metadata["mb_failed"] == "0"
    assert metadata["mb_encrypted"] == "no"
    assert metadata["mb_started"] and metadata["mb_consistency"]
    assert "mb_parent" not in metadata  # a full backup has none
    # The local archive: gone, except with --keep-local (then byte-identical).
    if mode == "keep-local":
        assert local_archives(out) == [name]
        assert (out / "backup_data" / name).read_bytes() == data
    else:
        assert local_archives(out) == []

    listed = mb("list", location, "--endpoint-url", s3.endpoint_url, "--json")
    assert listed.code == 0, listed.err
    [entry] = json.loads(listed.out)
    assert entry["key"] == name and entry["database"] == db_name
    assert entry["kind"] == "full" and entry["parent"] is None
    assert entry["size"] == len(data) and entry["collections"] == 2
    assert entry["status"] == "ok" and entry["encrypted"] is False

    restored = mb.restore(url, target_db, "--endpoint-url", s3.endpoint_url)
    assert restored.code == 0, restored.err
    assert_same_db(client, db_name, target_db)

    verified = mb("verify", url, "--endpoint-url", s3.endpoint_url, "-q")
    assert verified.code == 0, verified.out + verified.err
    if mode == "file":
        shown = mb("inspect", url, "--endpoint-url", s3.endpoint_url, "--json")
        assert shown.code == 0, shown.err
        assert json.loads(shown.out)["database"] == db_name
        table = mb("list", location, "--endpoint-url", s3.endpoint_url)
        assert table.code == 0 and name in table.out and "ok" in table.out
    # No credential in what the backup left on disk (state included) or in the store.
    state = Path(os.environ["MONGO_BACKUP_STATE_DIR"])
    assert credential_leaks(paths=[tmp_path, state], stores=[(s3, prefix)]) == []
    s3.clear(prefix)


def test_local_folder_and_file_url_destinations(
    mb: Mb, client: Any, db_name: str, target_db: str, tmp_path: Path
) -> None:
    """``--dest`` as a folder path and as file://: the same contract as S3."""
    seed(client, db_name)
    store = tmp_path / "store"
    url = mb.backup_ok(db_name, tmp_path / "out", "--dest", f"file://{store}")
    name = url.rsplit("/", 1)[1]
    assert url == f"file://{store}/{name}"
    data = (store / name).read_bytes()
    assert (store / f"{name}.sha256").read_text() == sha256sum_line(data, name)
    assert not [p for p in store.rglob("*") if ".partial-" in p.name or ".mb-tmp-" in p.name]
    assert local_archives(tmp_path / "out") == []
    assert mb.restore(url, target_db).code == 0
    assert_same_db(client, db_name, target_db)
    listed = json.loads(mb("list", str(store), "--json").out)
    assert [(e["key"], e["status"], e["database"]) for e in listed] == [(name, "ok", db_name)]
    assert mb("verify", store / name, "-q").code == 0


def test_dest_is_the_out_dirs_own_archive_folder(
    cli: CliRunner, mongo_uri: str, client: Any, db_name: str, tmp_path: Path
) -> None:
    """``--dest OUT/backup_data`` names the folder the archive is written to anyway: the
    upload would copy the archive onto itself and then remove "the local copy". It is
    refused before any work, with one line."""
    seed(client, db_name)
    out = tmp_path / "out"
    for dest in (str(out / "backup_data"), (out / "backup_data").as_uri()):
        result = cli(
            "backup", "--mongo-uri", mongo_uri, "--mongo-db", db_name, "--out-dir", out,
            "--dest", dest,
        )  # fmt: skip
        assert result.code == 2, result.err
        assert "leave --dest out" in result.err and result.out == ""
    assert not (out / "backup_data").exists() or not any((out / "backup_data").iterdir())


# -- 2. a chain on S3 ------------------------------------------------------------------------


def test_s3_chain_of_increments(
    s3: MotoS3, mb: Mb, client: Any, db_name: str, target_db: str, tmp_path: Path
) -> None:
    seed(client, db_name)
    location = s3.fresh_url()
    prefix = prefix_of(location)
    out = tmp_path / "out"
    dest = ("--dest", location, "--endpoint-url", s3.endpoint_url)
    # The increment finds its base in OUT/backup_data: the full backup must stay local.
    full = mb.backup_ok(db_name, out, *dest, "--keep-local")
    time.sleep(NEXT_SECOND)
    people = client[db_name].people
    people.insert_one({"_id": 100, "name": "new"})
    people.update_one({"_id": 1}, {"$set": {"name": "changed"}})
    people.delete_one({"_id": 2})
    client[db_name].things.drop()
    increment = mb.backup_ok(db_name, out, *dest, "--incremental")
    expected = snapshot(client, db_name)
    full_id = key_of(full).rsplit("/", 1)[1].removesuffix(".tar.zst")
    inc_key = key_of(increment)
    metadata = s3.client().head_object(Bucket=s3.bucket, Key=inc_key)["Metadata"]
    assert metadata["mb_kind"] == "incremental" and metadata["mb_parent"] == full_id
    assert len(s3.keys(prefix)) == 4  # two archives, two sidecars

    listed = json.loads(mb("list", location, "--endpoint-url", s3.endpoint_url, "--json").out)
    assert [(e["kind"], e["parent"]) for e in listed] == [("incremental", full_id), ("full", None)]

    # Restoring the increment's URL fetches the full backup from the same place.
    restored = mb.restore(increment, target_db, "--endpoint-url", s3.endpoint_url)
    assert restored.code == 0, restored.err
    assert_same_snapshot(snapshot(client, target_db), expected, "restored chain")
    assert mb("verify", increment, "--endpoint-url", s3.endpoint_url, "-q").code == 0

    # prune on S3: an older copy of the full backup goes (with its sidecar); the full
    # backup that the kept increment needs stays.
    witness = s3.client()
    full_key = key_of(full)
    old_key = f"{prefix}backup_20200101_000000.tar.zst"
    witness.copy_object(
        Bucket=s3.bucket, Key=old_key, CopySource={"Bucket": s3.bucket, "Key": full_key}
    )
    witness.copy_object(
        Bucket=s3.bucket,
        Key=old_key + ".sha256",
        CopySource={"Bucket": s3.bucket, "Key": full_key + ".sha256"},
    )
    assert len(s3.keys(prefix)) == 6
    pruned = mb("prune", location, "--endpoint-url", s3.endpoint_url, "--keep-last", "1", "--json")
    assert pruned.code == 0, pruned.err
    report = json.loads(pruned.out)
    assert report["remove"] == ["backup_20200101_000000.tar.zst"]
    reasons = {k["id"]: k["reasons"] for k in report["keep"]}
    inc_id = inc_key.rsplit("/", 1)[1].removesuffix(".tar.zst")
    assert reasons[full_id] == [f"needed by kept incremental {inc_id}"]
    assert s3.keys(prefix) == sorted([full_key, full_key + ".sha256", inc_key, inc_key + ".sha256"])
    s3.clear(prefix)


def test_s3_increment_without_a_local_base(
    s3: MotoS3, mb: Mb, client: Any, db_name: str, tmp_path: Path
) -> None:
    """What a user meets: after ``--dest`` without ``--keep-local`` the local base is
    gone, and ``--base`` takes a local file only, not the uploaded archive's URL."""
    seed(client, db_name)
    location = s3.fresh_url()
    out = tmp_path / "out"
    dest = ("--dest", location, "--endpoint-url", s3.endpoint_url)
    full = mb.backup_ok(db_name, out, *dest)
    refused = mb.backup(db_name, out, *dest, "--incremental")
    assert refused.code == 2
    line = assert_single_error_line(refused)
    assert "take a full backup first" in line and "--base" in line
    by_url = mb.backup(db_name, out, *dest, "--incremental", "--base", full)
    assert by_url.code == 2
    assert "no such backup archive" in assert_single_error_line(by_url)
    s3.clear(prefix_of(location))


# -- 3. the store goes away in the middle of an upload -----------------------------------


class _AbortFailed(logging.Handler):
    """Sets ``event`` when the destination reports that it could not abort an upload:
    by then the upload has failed, and the server may come back for the clean-up."""

    def __init__(self, event: threading.Event) -> None:
        super().__init__(logging.WARNING)
        self._event = event

    def emit(self, record: logging.LogRecord) -> None:
        if "could not be aborted" in record.getMessage():
            self._event.set()


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "file"])
def test_s3_server_gone_mid_upload(
    stream: bool,
    s3: MotoS3,
    mb: Mb,
    client: Any,
    db_name: str,
    target_db: str,
    tmp_path: Path,
) -> None:
    """A private moto server (same in-process state as the session's) is stopped as soon
    as the multipart upload of the archive has begun. The backup must fail with one
    error line (after the warning that the upload could not be aborted), and nothing
    may appear under the archive's name."""
    database = client[db_name]
    # Incompressible: the archive passes the first 8 MiB part, so it goes up in parts.
    for i in range(16):
        database.blobs.insert_one({"_id": i, "data": Binary(os.urandom(MiB))})
    location = s3.fresh_url()
    prefix = prefix_of(location)
    private = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    private.start()
    port = private.get_host_and_port()[1]
    stopped, give_back = threading.Event(), threading.Event()
    state: dict[str, Any] = {"running": True}

    def watch() -> None:
        witness = s3.client()  # through the session's server: same objects
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not give_back.is_set():
            if witness.list_multipart_uploads(Bucket=s3.bucket, Prefix=prefix).get("Uploads"):
                private.stop()
                state["running"] = False
                stopped.set()
                return
            time.sleep(0.005)

    def bring_back() -> None:
        # Once the upload has failed (its abort could not reach the server), the server
        # returns, so that the clean-up's retries end in seconds instead of a minute. At
        # the latest 20 s after the stop: long after the part's own retries gave up.
        while not stopped.wait(0.05):
            if give_back.is_set():
                return  # the server was never stopped
        give_back.wait(20)
        if stopped.is_set() and not state["running"]:
            restarted = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
            restarted.start()
            state["server"] = restarted

    handler = _AbortFailed(give_back)
    watched = logging.getLogger("mongo_backup.destinations.objectstore")
    watched.addHandler(handler)
    watcher = threading.Thread(target=watch, daemon=True)
    returner = threading.Thread(target=bring_back, daemon=True)
    watcher.start()
    returner.start()
    endpoint = f"http://127.0.0.1:{port}"
    out = tmp_path / "out"
    extra = ["--stream"] if stream else []
    started = time.monotonic()
    try:
        result = mb.backup(db_name, out, "--dest", location, "--endpoint-url", endpoint, *extra)
    finally:
        elapsed = time.monotonic() - started
        watched.removeHandler(handler)
        give_back.set()
        watcher.join(5)
        returner.join(10)
        later = state.get("server")
        if isinstance(later, ThreadedMotoServer):
            later.stop()
        elif state["running"]:
            private.stop()
    assert stopped.is_set(), f"the upload never began a multipart upload: {result.err}"
    assert result.code == 1, (result.code, result.out, result.err)
    line = the_error(result)
    assert result.out == ""
    assert location in line, line
    # Nothing under the final name, no temporary object, no sidecar.
    keys = s3.keys(prefix)
    assert keys == [], keys
    if stream:
        # The working folder is kept, and the message says how to finish the upload.
        assert "--resume" in line, line
        assert local_archives(out) == []
        resumed = mb.backup_ok(
            db_name,
            out,
            "--dest",
            location,
            "--endpoint-url",
            s3.endpoint_url,
            "--stream",
            "--resume",
        )
        assert key_of(resumed) in s3.keys(prefix)
        assert mb.restore(resumed, target_db, "--endpoint-url", s3.endpoint_url).code == 0
        assert_same_db(client, db_name, target_db)
    else:
        # The archive that could not be uploaded is still on disk.
        [kept] = local_archives(out)
        assert kept.endswith(".tar.zst")
    assert elapsed < 60, f"the failed backup took {elapsed:.0f} s"
    s3.clear(prefix)


# -- 4. a damaged object in the store --------------------------------------------------------


def test_s3_damaged_object_is_caught(
    s3: MotoS3, mb: Mb, client: Any, db_name: str, target_db: str, tmp_path: Path
) -> None:
    seed(client, db_name)
    location = s3.fresh_url()
    prefix = prefix_of(location)
    endpoint = ("--endpoint-url", s3.endpoint_url)
    url = mb.backup_ok(db_name, tmp_path / "out", "--dest", location, *endpoint)
    key = key_of(url)
    data = bytearray(object_bytes(s3, key))
    metadata = s3.client().head_object(Bucket=s3.bucket, Key=key)["Metadata"]
    data[len(data) // 2] ^= 0x01  # one bit, same size, same metadata, sidecar kept
    s3.client().put_object(Bucket=s3.bucket, Key=key, Body=bytes(data), Metadata=metadata)

    verified = mb("verify", url, *endpoint)
    assert verified.code == 1
    assert "damaged" in assert_single_error_line(verified)
    restored = mb.restore(url, target_db, *endpoint)
    assert restored.code == 1
    assert "damaged" in assert_single_error_line(restored)
    assert not database_exists(client, target_db)
    inspected = mb("inspect", url, *endpoint)
    assert inspected.code == 1 and "damaged" in inspected.err

    # Without its sidecar the same object cannot be checked: list says so.
    s3.client().delete_object(Bucket=s3.bucket, Key=key + ".sha256")
    [entry] = json.loads(mb("list", location, *endpoint, "--json").out)
    assert entry["status"] == "no checksum"
    # An archive that is not there at all.
    missing = mb("verify", url.replace(".tar.zst", "0.tar.zst"), *endpoint)
    assert missing.code != 0 and "no such archive" in missing.err
    s3.clear(prefix)


# -- 5. list and prune of a folder --------------------------------------------------------------


def copy_backup(store: Path, name: str, new_stem: str) -> str:
    """A copy of an uploaded archive under an older name, with sidecar and metadata, as
    if it had been taken then (its content is the same backup)."""
    suffix = name[name.index(".tar") :]
    new = new_stem + suffix
    shutil.copyfile(store / name, store / new)
    shutil.copyfile(store / f"{name}.meta.json", store / f"{new}.meta.json")
    (store / f"{new}.sha256").write_text(sha256sum_line((store / new).read_bytes(), new))
    return new


def test_list_and_prune_of_a_folder(
    mb: Mb, client: Any, db_name: str, target_db: str, tmp_path: Path
) -> None:
    seed(client, db_name)
    out, store = tmp_path / "out", tmp_path / "store"
    dest = ("--dest", store, "--keep-local")
    full = mb.backup_ok(db_name, out, *dest).rsplit("/", 1)[1]
    time.sleep(NEXT_SECOND)
    client[db_name].people.insert_one({"_id": 500})
    inc1 = mb.backup_ok(db_name, out, *dest, "--incremental").rsplit("/", 1)[1]
    time.sleep(NEXT_SECOND)
    client[db_name].people.delete_one({"_id": 3})
    inc2 = mb.backup_ok(db_name, out, *dest, "--incremental").rsplit("/", 1)[1]
    expected = snapshot(client, db_name)
    old = [
        copy_backup(store, full, stem)
        for stem in ("backup_20240101_000000", "backup_20250101_000000", "backup_20250601_120000")
    ]
    ids = [name.removesuffix(".tar.zst") for name in (inc2, inc1, full)]

    listed = mb("list", store, "--json")
    assert listed.code == 0, listed.err
    entries = json.loads(listed.out)
    assert [e["key"] for e in entries] == [inc2, inc1, full, *reversed(old)]  # newest first
    assert [(e["kind"], e["parent"]) for e in entries[:3]] == [
        ("incremental", ids[1]),
        ("incremental", ids[2]),
        ("full", None),
    ]
    assert {e["status"] for e in entries} == {"ok"}
    assert {e["database"] for e in entries} == {db_name}
    times = [e["time"] for e in entries]
    assert times == sorted(times, reverse=True)
    assert entries[-1]["time"].startswith("2024-01-01T00:00:00")
    table = mb("list", store)
    assert table.code == 0 and f"incremental of {ids[1]}" in table.out
    # The --out-dir lists its backup_data (plain archives: read from their manifests).
    local = json.loads(mb("list", out, "--json").out)
    assert [e["key"] for e in local] == [inc2, inc1, full]
    assert [e["status"] for e in local] == ["ok"] * 3
    assert json.loads(mb("list", out / "backup_data", "--json").out) == local

    before = sorted(p.name for p in store.iterdir())
    dry = mb("prune", store, "--keep-last", "2", "--dry-run")
    assert dry.code == 0, dry.err
    assert "would remove" in dry.out and "3 would remove" in dry.out
    assert sorted(p.name for p in store.iterdir()) == before
    dry_json = json.loads(mb("prune", store, "--keep-last", "2", "--dry-run", "--json").out)
    assert dry_json["dry_run"] is True and sorted(dry_json["remove"]) == sorted(old)
    within = json.loads(mb("prune", store, "--keep-within", "1d", "--dry-run", "--json").out)
    assert sorted(within["remove"]) == sorted(old)

    empty = mb("prune", store)
    assert empty.code == 2
    assert_single_error_line(empty)
    assert mb("prune", store, "--keep-within", "soon").code == 2
    assert sorted(p.name for p in store.iterdir()) == before

    pruned = mb("prune", store, "--keep-last", "1", "--json")
    assert pruned.code == 0, pruned.err
    report = json.loads(pruned.out)
    assert report["dry_run"] is False and sorted(report["remove"]) == sorted(old)
    reasons = {k["id"]: k["reasons"] for k in report["keep"]}
    assert reasons[ids[1]] == [f"needed by kept incremental {ids[0]}"]
    assert reasons[ids[2]] == [f"needed by kept incremental {ids[0]}"]
    left = sorted(p.name for p in store.iterdir())
    assert left == sorted(
        n + extra
        for n in (full, inc1, inc2)
        for extra in ("", ".sha256", ".meta.json", ".sha256.meta.json")
    )
    # The chain that is left restores.
    restored = mb.restore(store / inc2, target_db)
    assert restored.code == 0, restored.err
    assert_same_snapshot(snapshot(client, target_db), expected, "after prune")


def test_prune_of_a_plain_out_dir(mb: Mb, client: Any, db_name: str, tmp_path: Path) -> None:
    """Archives of plain backups (no sidecar, no metadata): prune by the manifest."""
    seed(client, db_name)
    out = tmp_path / "out"
    archive = Path(mb.backup_ok(db_name, out))
    older = archive.with_name("backup_20200101_000000.tar.zst")
    shutil.copyfile(archive, older)
    table = mb("prune", out, "--keep-last", "1")
    assert table.code == 0, table.err
    assert "1 kept, 1 removed" in table.out
    assert local_archives(out) == [archive.name]


# -- 6. encryption -----------------------------------------------------------------------------


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path | str]:
    folder = tmp_path / "keys"
    folder.mkdir()
    age = x25519.Identity.generate()
    (folder / "age.txt").write_text(f"# created: test\n# public key: {age.to_public()}\n{age}\n")
    other = x25519.Identity.generate()
    (folder / "other.txt").write_text(f"{other}\n")
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "test", "-f", folder / "ssh"],
        check=True,
        capture_output=True,
    )
    ssh_secret = (folder / "ssh").read_text().splitlines()[1:-1]
    return {
        "secrets": [str(age), str(other), *[line for line in ssh_secret if len(line) > 20]],
        "age_public": str(age.to_public()),
        "age_identity": folder / "age.txt",
        "other_identity": folder / "other.txt",
        "ssh_public_file": folder / "ssh.pub",
        "ssh_identity": folder / "ssh",
    }


def test_encrypted_backup_to_age_and_ssh_keys(
    keys: dict[str, Any], mb: Mb, client: Any, db_name: str, target_db: str, tmp_path: Path
) -> None:
    seed(client, db_name)
    out = tmp_path / "out"
    archive = Path(
        mb.backup_ok(
            db_name,
            out,
            "--encrypt-to",
            keys["age_public"],
            "--encrypt-to",
            keys["ssh_public_file"],
        )
    )
    assert archive.name.endswith(".tar.zst.age")
    assert local_archives(out) == [archive.name]  # no plaintext archive left beside it
    data = archive.read_bytes()
    assert data.startswith(b"age-encryption.org/v1\n")
    assert b'"database"' not in data and db_name.encode() not in data
    assert archive.stat().st_mode & 0o077 == 0

    for identity in ("age_identity", "ssh_identity"):
        target = f"{target_db}_{identity[:3]}"
        try:
            restored = mb.restore(archive, target, "--identity", keys[identity])
            assert restored.code == 0, restored.err
            assert_same_db(client, db_name, target)
        finally:
            client.drop_database(target)
    assert mb("verify", archive, "--identity", keys["age_identity"], "-q").code == 0
    shown = mb("inspect", archive, "--identity", keys["ssh_identity"], "--json")
    assert shown.code == 0 and json.loads(shown.out)["database"] == db_name

    wrong = mb.restore(archive, target_db, "--identity", keys["other_identity"])
    assert wrong.code == 1
    assert "wrong key" in the_error(wrong)
    assert not database_exists(client, target_db)
    wrong_verify = mb("verify", archive, "--identity", keys["other_identity"])
    assert wrong_verify.code == 1
    the_error(wrong_verify)
    missing = mb.restore(archive, target_db)
    assert missing.code == 2
    assert "--identity" in the_error(missing)
    assert not database_exists(client, target_db)
    # A public key file is no identity: a configuration error, no secret shown.
    not_secret = mb.restore(archive, target_db, "--identity", keys["ssh_public_file"])
    assert not_secret.code == 2
    the_error(not_secret)
    for result in mb.results:
        assert not [key for key in keys["secrets"] if key in result.out + result.err]

    listed = json.loads(mb("list", out, "--json").out)
    assert [(e["key"], e["encrypted"]) for e in listed] == [(archive.name, True)]
    assert "encrypted" in mb("list", out).out


def test_local_encrypted_restore_is_quiet(
    keys: dict[str, Any], mb: Mb, client: Any, db_name: str, target_db: str, tmp_path: Path
) -> None:
    """A local .age archive was never uploaded and has no sidecar: a quiet restore of it
    should print nothing, not a warning that "its download cannot be checked"."""
    seed(client, db_name)
    archive = mb.backup_ok(db_name, tmp_path / "out", "--encrypt-to", keys["age_public"])
    restored = mb.restore(archive, target_db, "--identity", keys["age_identity"])
    assert restored.code == 0, restored.err
    assert_same_db(client, db_name, target_db)
    assert restored.err == ""


def test_increment_after_an_encrypted_full_backup(
    keys: dict[str, Any], mb: Mb, client: Any, db_name: str, target_db: str, tmp_path: Path
) -> None:
    """Encrypted backups and increments: either the increment works (and restores with
    the identity), or it is refused with a message that names the encryption; never a
    "take a full backup first" when there is one."""
    seed(client, db_name)
    out = tmp_path / "out"
    encrypt = ("--encrypt-to", keys["age_public"])
    full = mb.backup_ok(db_name, out, *encrypt)
    time.sleep(NEXT_SECOND)
    client[db_name].people.insert_one({"_id": 700})
    for extra in ([], ["--base", full]):
        result = mb.backup(db_name, out, *encrypt, "--incremental", *extra)
        if result.code == 0:
            restored = mb.restore(result.out.strip(), target_db, "--identity", keys["age_identity"])
            assert restored.code == 0, restored.err
            assert_same_db(client, db_name, target_db)
            client.drop_database(target_db)
            continue
        line = the_error(result)
        assert result.code == 2 and "encrypt" in line, (extra, result.code, line)


def test_bad_recipient_is_refused_before_any_work(
    mb: Mb, client: Any, db_name: str, tmp_path: Path
) -> None:
    seed(client, db_name)
    out = tmp_path / "out"
    for value in ("age1notakey", str(tmp_path / "absent.pub")):
        refused = mb.backup(db_name, out, "--encrypt-to", value)
        assert refused.code == 2, refused.err
        assert "--encrypt-to" in assert_single_error_line(refused)
    assert not out.exists() or local_archives(out) == []


def test_s3_encrypted_stream_round_trip(
    s3: MotoS3,
    keys: dict[str, Any],
    mb: Mb,
    client: Any,
    db_name: str,
    target_db: str,
    tmp_path: Path,
) -> None:
    seed(client, db_name)
    location = s3.fresh_url()
    prefix = prefix_of(location)
    endpoint = ("--endpoint-url", s3.endpoint_url)
    url = mb.backup_ok(
        db_name,
        tmp_path / "out",
        "--dest",
        location,
        *endpoint,
        "--stream",
        "--encrypt-to",
        keys["age_public"],
    )
    key = key_of(url)
    assert key.endswith(".tar.zst.age")
    assert s3.keys(prefix) == [key, key + ".sha256"]
    assert local_archives(tmp_path / "out") == []
    data = object_bytes(s3, key)
    assert data.startswith(b"age-encryption.org/v1\n") and b'"database"' not in data
    metadata = s3.client().head_object(Bucket=s3.bucket, Key=key)["Metadata"]
    assert metadata["mb_encrypted"] == "yes" and metadata["mb_kind"] == "full"

    [entry] = json.loads(mb("list", location, *endpoint, "--json").out)
    assert entry["encrypted"] is True and entry["status"] == "ok"
    assert entry["database"] == db_name
    assert "encrypted, ok" in mb("list", location, *endpoint).out

    missing = mb.restore(url, target_db, *endpoint)
    assert missing.code == 2 and "--identity" in assert_single_error_line(missing)
    wrong = mb.restore(url, target_db, *endpoint, "--identity", keys["other_identity"])
    assert wrong.code == 1
    assert_single_error_line(wrong)
    assert not database_exists(client, target_db)
    restored = mb.restore(url, target_db, *endpoint, "--identity", keys["age_identity"])
    assert restored.code == 0, restored.err
    assert_same_db(client, db_name, target_db)
    assert mb("verify", url, *endpoint, "--identity", keys["age_identity"], "-q").code == 0
    s3.clear(prefix)


# -- 7. credentials ------------------------------------------------------------------------------


def test_s3_failures_never_show_credentials(
    s3: MotoS3, mb: Mb, client: Any, db_name: str, tmp_path: Path
) -> None:
    """Verbose runs against a missing bucket and a location with user information: the
    error lines (and, with -v, the tracebacks and debug logs) carry no secret."""
    seed(client, db_name)
    endpoint = ("--endpoint-url", s3.endpoint_url)
    out = tmp_path / "out"
    failed = mb.backup(db_name, out, "-vv", "--dest", "s3://no-such-bucket-mb/x", *endpoint)
    assert failed.code == 1 and "NoSuchBucket" in failed.err
    listed = mb("list", "s3://no-such-bucket-mb/x", *endpoint, "-vv")
    assert listed.code == 1
    with_userinfo = mb.backup(
        db_name, out, "--dest", f"s3://{ACCESS_KEY_ID}:{SECRET_ACCESS_KEY}@{s3.bucket}/x", *endpoint
    )
    assert with_userinfo.code == 2
    assert_single_error_line(with_userinfo)
    restored = mb(
        "restore",
        f"s3://{s3.bucket}/absent/backup_20200101_000000.tar.zst",
        "--uri",
        mb.uri,
        "--db",
        "unused_target",
        "-vv",
        *endpoint,
    )
    assert restored.code == 1 and "no such archive" in restored.err
    # Every call's output and log records were checked by mb; then what was written.
    state = Path(os.environ["MONGO_BACKUP_STATE_DIR"])
    assert credential_leaks(paths=[tmp_path, state], stores=[(s3, "x/"), (s3, "absent/")]) == []
