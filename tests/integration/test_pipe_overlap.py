"""``restore -`` restores a piped backup while it arrives (issue 13, streams): the documents
are in before the stream ends, and whatever ends the stream early (a cut, a damaged
member) leaves the target as it was. A target that already holds a namespace is restored
the careful way (the stream checked whole first); a stream saved to a file reads as any
archive."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from pyrage import x25519
from test_pipes import TOOL, error_line, seed, tool

from chaintools import snapshot


@pytest.fixture
def plain_stream(client: MongoClient[Any], mongo_uri: str, db_name: str, tmp_path: Path) -> bytes:
    """``backup --archive -`` uncompressed: its members can be found and changed."""
    seed(client, db_name)
    result = tool("backup", "--uri", mongo_uri, "--db", db_name, "--out-dir",
                  str(tmp_path / "w"), "--archive", "-", "--compress", "none")  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def offset_of(stream: bytes, name: str) -> int:
    with tarfile.open(fileobj=io.BytesIO(stream), mode="r") as tar:
        return next(info.offset for info in tar.getmembers() if info.name == name)


def start_restore(mongo_uri: str, target_db: str, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*TOOL, "restore", "-", "--uri", mongo_uri, "--db", target_db, *extra],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def wait_for_orders(client: MongoClient[Any], db: str, count: int) -> None:
    deadline = time.monotonic() + 120
    while client[db].orders.estimated_document_count() < count:
        assert time.monotonic() < deadline, "the documents never arrived"
        time.sleep(0.05)


@contextlib.contextmanager
def held_before_its_manifest(
    client: MongoClient[Any], mongo_uri: str, target_db: str, stream: bytes
) -> Iterator[subprocess.Popen[bytes]]:
    """A restore fed everything but the manifest, once the orders are in (while the
    stream is still open); the caller ends the stream."""
    with start_restore(mongo_uri, target_db) as restore:
        assert restore.stdin is not None and restore.stderr is not None
        restore.stdin.write(stream[: offset_of(stream, "manifest.json")])
        restore.stdin.flush()
        wait_for_orders(client, target_db, 3000)  # inserted while the stream is open
        yield restore


def test_documents_are_in_before_the_stream_ends(
    client: MongoClient[Any], mongo_uri: str, db_name: str, target_db: str, plain_stream: bytes
) -> None:
    with held_before_its_manifest(client, mongo_uri, target_db, plain_stream) as restore:
        assert restore.stdin is not None and restore.stderr is not None
        restore.stdin.write(plain_stream[offset_of(plain_stream, "manifest.json") :])
        restore.stdin.close()
        assert restore.wait(120) == 0, restore.stderr.read().decode()
    assert snapshot(client, target_db) == snapshot(client, db_name)
    views = list(client[target_db].list_collections(filter={"type": "view"}))
    assert [view["name"] for view in views] == ["big_orders"]


def test_the_plan_goes_first_then_the_smallest_collection(
    client: MongoClient[Any], mongo_uri: str, db_name: str, tmp_path: Path
) -> None:
    seed(client, db_name)
    client[db_name].big.insert_many([{"_id": i, "pad": "x" * 200} for i in range(30_000)])
    result = tool("backup", "--uri", mongo_uri, "--db", db_name, "--out-dir",
                  str(tmp_path / "w"), "--archive", "-", "--compress", "none",
                  "-j", "2")  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    with tarfile.open(fileobj=io.BytesIO(result.stdout), mode="r") as tar:
        names = [info.name for info in tar.getmembers()]
    # One of the two export workers starts with the smallest collection (users, 200
    # small documents), the other with the largest (big), so the restore gets a
    # collection to insert long before the largest one is read.
    assert names[:2] == ["plan.json", "users.jsonl"]
    assert names.index("big.jsonl") > names.index("orders.jsonl")
    assert names[-1] == "manifest.json"


def test_a_stream_cut_after_its_documents_are_in_keeps_nothing(
    client: MongoClient[Any], mongo_uri: str, target_db: str, plain_stream: bytes
) -> None:
    with held_before_its_manifest(client, mongo_uri, target_db, plain_stream) as restore:
        assert restore.stdin is not None and restore.stderr is not None
        restore.stdin.close()  # the backup side died before its manifest
        assert restore.wait(120) != 0
        stderr = restore.stderr.read().decode()
    line = [text for text in stderr.splitlines() if "error" in text][-1]
    assert "ends before its manifest.json" in line and "nothing was kept" in line
    assert "Traceback" not in stderr
    assert client[target_db].list_collection_names() == []


def test_a_cut_stream_drops_only_what_the_restore_created(
    client: MongoClient[Any], mongo_uri: str, target_db: str, plain_stream: bytes
) -> None:
    with held_before_its_manifest(client, mongo_uri, target_db, plain_stream) as restore:
        assert restore.stdin is not None
        # Someone else takes the view's name (views come after the stream's end).
        client[target_db].big_orders.insert_one({"_id": "theirs"})
        restore.stdin.close()
        assert restore.wait(120) != 0
    assert client[target_db].list_collection_names() == ["big_orders"]
    assert list(client[target_db].big_orders.find()) == [{"_id": "theirs"}]


def test_a_damaged_member_is_found_at_the_end_and_keeps_nothing(
    mongo_uri: str, client: MongoClient[Any], target_db: str, plain_stream: bytes
) -> None:
    # A digit changed inside the orders member: still valid JSON, another document.
    start = offset_of(plain_stream, "orders.jsonl") + 512 * 3
    marker = b'"$numberDouble" : "'
    at = plain_stream.index(marker, start) + len(marker)
    digit = plain_stream[at : at + 1]
    assert digit.isdigit()
    damaged = plain_stream[:at] + (b"7" if digit != b"7" else b"8") + plain_stream[at + 1 :]
    result = tool("restore", "-", "--uri", mongo_uri, "--db", target_db, input=damaged)
    assert result.returncode != 0
    line = error_line(result)
    assert "does not match its checksum" in line and "nothing was kept" in line
    assert client[target_db].list_collection_names() == []


def test_verify_reads_a_stream_as_it_arrives(
    client: MongoClient[Any], mongo_uri: str, db_name: str, plain_stream: bytes,
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:  # fmt: skip
    # No temporary copy: TMPDIR points at a folder that cannot be written.
    unwritable = tmp_path / "no-tmp"
    unwritable.mkdir(mode=0o500)
    env = {**os.environ, "TMPDIR": str(unwritable)}
    result = tool("verify", "-", "--against-uri", mongo_uri, "--against-db", db_name,
                  input=plain_stream, env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    assert "3000/3000" in result.stdout.decode()
    client[db_name].orders.delete_one({"_id": 5})
    differs = tool("verify", "-", "--against-uri", mongo_uri, "--against-db", db_name,
                   input=plain_stream, env=env)  # fmt: skip
    assert differs.returncode == 1 and "missing _id" in differs.stdout.decode()
    start = offset_of(plain_stream, "orders.jsonl") + 512 * 3
    damaged = plain_stream[:start] + plain_stream[start:].replace(b'"1', b'"2', 1)
    broken = tool("verify", "-", input=damaged, env=env)
    assert broken.returncode == 1 and "does not match its checksum" in error_line(broken)


def test_a_target_that_holds_a_namespace_checks_the_stream_first(
    client: MongoClient[Any], mongo_uri: str, db_name: str, target_db: str, plain_stream: bytes
) -> None:
    client[target_db].orders.insert_one({"_id": "kept"})
    cut = plain_stream[: offset_of(plain_stream, "manifest.json")]
    result = tool("restore", "-", "--uri", mongo_uri, "--db", target_db, "--drop", input=cut)
    assert result.returncode != 0
    assert "checked whole before the first write" in result.stderr.decode()
    assert list(client[target_db].orders.find()) == [{"_id": "kept"}]  # not dropped
    result = tool("restore", "-", "--uri", mongo_uri, "--db", target_db, "--drop",
                  input=plain_stream)  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    assert snapshot(client, target_db) == snapshot(client, db_name)


def test_a_stream_saved_to_a_file_is_an_archive(
    client: MongoClient[Any], mongo_uri: str, db_name: str, target_db: str, tmp_path: Path
) -> None:
    seed(client, db_name)
    saved = tmp_path / "saved.tar.zst"
    with open(saved, "wb") as out:
        argv = ["backup", "--uri", mongo_uri, "--db", db_name, "--out-dir", str(tmp_path / "w")]
        backup = subprocess.run([*TOOL, *argv, "--archive", "-"], stdout=out,
                                stderr=subprocess.PIPE, timeout=300, check=False)  # fmt: skip
    assert backup.returncode == 0, backup.stderr.decode()
    inspected = tool("inspect", str(saved))
    assert inspected.returncode == 0 and "orders" in inspected.stdout.decode()
    assert tool("verify", str(saved)).returncode == 0
    restored = tool("restore", str(saved), "--uri", mongo_uri, "--db", target_db)
    assert restored.returncode == 0, restored.stderr.decode()
    assert snapshot(client, target_db) == snapshot(client, db_name)
    saved.write_bytes(saved.read_bytes()[: saved.stat().st_size // 2])
    verified = tool("verify", str(saved))
    assert verified.returncode != 0 and "Traceback" not in verified.stderr.decode()


def test_a_backup_whose_reader_went_away_resumes_into_a_new_pipe(
    client: MongoClient[Any], mongo_uri: str, db_name: str, target_db: str, tmp_path: Path
) -> None:
    seed(client, db_name)
    client[db_name].noise.insert_many([{"_id": i, "b": os.urandom(4000)} for i in range(500)])
    argv = [*TOOL, "backup", "--uri", f"'{mongo_uri}'", "--db", db_name,
            "--out-dir", str(tmp_path / "w"), "--archive", "-", "-q"]  # fmt: skip
    first = subprocess.run(["bash", "-c", f"{' '.join(argv)} | head -c 1000 > /dev/null"],
                           capture_output=True, timeout=300, check=False)  # fmt: skip
    assert b"closed the pipe" in first.stderr
    # The same backup with --resume sends the whole archive again, the finished
    # collections first: the new reader restores all of it.
    restore = f"{' '.join(TOOL)} restore - --uri '{mongo_uri}' --db {target_db} -q"
    piped = f"set -o pipefail; {' '.join(argv)} --resume | {restore}"
    second = subprocess.run(["bash", "-c", piped], capture_output=True, timeout=300, check=False)
    assert second.returncode == 0, second.stderr.decode()
    assert snapshot(client, target_db) == snapshot(client, db_name)
    assert list((tmp_path / "w").iterdir()) == []


def test_an_encrypted_stream_is_restored_as_it_arrives(
    client: MongoClient[Any], mongo_uri: str, db_name: str, target_db: str, tmp_path: Path
) -> None:
    seed(client, db_name)  # and more than one 64 KiB chunk of age, so that a cut comes late
    client[db_name].noise.insert_many([{"_id": i, "b": os.urandom(4000)} for i in range(200)])
    identity = x25519.Identity.generate()
    (tmp_path / "key.txt").write_text(str(identity))
    (tmp_path / "other.txt").write_text(str(x25519.Identity.generate()))
    argv = ["--uri", mongo_uri, "--db", db_name, "--out-dir", str(tmp_path / "w")]
    sealed = tool("backup", *argv, "--archive", "-", "--encrypt-to", str(identity.to_public()))
    assert sealed.returncode == 0, sealed.stderr.decode()
    restore = ["restore", "-", "--uri", mongo_uri, "--db", target_db]
    wrong = tool(*restore, "--identity", str(tmp_path / "other.txt"), input=sealed.stdout)
    assert wrong.returncode == 1 and "none of the --identity keys" in error_line(wrong)
    cut = sealed.stdout[: len(sealed.stdout) * 2 // 3]
    broken = tool(*restore, "--identity", str(tmp_path / "key.txt"), input=cut)
    assert broken.returncode == 1 and "nothing was kept" in error_line(broken)
    assert client[target_db].list_collection_names() == []
    restored = tool(*restore, "--identity", str(tmp_path / "key.txt"), input=sealed.stdout)
    assert restored.returncode == 0, restored.stderr.decode()
    assert "while checking the backup" in restored.stderr.decode()  # no spooling
    assert snapshot(client, target_db) == snapshot(client, db_name)


def test_a_reader_gone_mid_collection_stops_the_export_there(
    client: MongoClient[Any], mongo_uri: str, db_name: str, tmp_path: Path
) -> None:
    client[db_name].big.insert_many([{"_id": i, "pad": "x" * 200} for i in range(80_000)])
    argv = [*TOOL, "backup", "--uri", f"'{mongo_uri}'", "--db", db_name,
            "--out-dir", str(tmp_path / "w"), "--archive", "-", "-q"]  # fmt: skip
    result = subprocess.run(["bash", "-c", f"{' '.join(argv)} | head -c 100 > /dev/null"],
                            capture_output=True, timeout=300, check=False)  # fmt: skip
    assert b"closed the pipe" in result.stderr and b"--resume" in result.stderr
    (kept,) = (tmp_path / "w").iterdir()
    journal = kept / "checkpoint.done.jsonl"
    # Noticed while nothing was being sent: the one collection was left unfinished.
    assert not journal.exists() or "big.jsonl" not in journal.read_text()
