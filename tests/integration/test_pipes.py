"""``backup --archive -`` into ``restore -`` (and ``verify -``): a deployment copied through
a pipe between two server processes, and every way a pipe goes wrong (issue 13, streams)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from pyrage import x25519

from chaintools import snapshot
from conftest import CliRunner
from mongo_backup.mongo.embedded import EmbeddedServer
from restoretools import assert_single_error_line

TOOL = [sys.executable, "-m", "mongo_backup"]


def seed(client: MongoClient[Any], db: str) -> None:
    client[db].orders.insert_many([{"_id": i, "total": i * 1.25, "tags": ["a"] * (i % 4)}
                                   for i in range(3000)])  # fmt: skip
    client[db].orders.create_index("total", name="by_total")
    client[db].users.insert_many([{"_id": f"u{i}", "blob": os.urandom(64)} for i in range(200)])
    client[db].command("create", "big_orders", viewOn="orders",
                       pipeline=[{"$match": {"total": {"$gt": 100}}}])  # fmt: skip


def tool(*argv: str, **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*TOOL, *argv], capture_output=True, timeout=300, check=False, **kwargs)


def error_line(result: subprocess.CompletedProcess[bytes]) -> str:
    lines = [line for line in result.stderr.decode().splitlines() if "error" in line]
    assert lines, result.stderr.decode()
    assert "Traceback" not in result.stderr.decode()
    return lines[-1]


def test_a_pipe_between_two_servers_copies_the_database(
    client: MongoClient[Any], mongo_uri: str, db_name: str, own_server: EmbeddedServer,
    tmp_path: Path,
) -> None:  # fmt: skip
    seed(client, db_name)
    argv = ["backup", "--uri", mongo_uri, "--db", db_name, "--out-dir", str(tmp_path / "w")]
    with (
        open(tmp_path / "backup.err", "wb") as errors,
        subprocess.Popen([*TOOL, *argv, "--archive", "-"], stdout=subprocess.PIPE,
                         stderr=errors) as backup,
    ):  # fmt: skip
        assert backup.stdout is not None
        restore = tool("restore", "-", "--uri", own_server.uri, "-q", stdin=backup.stdout)
        backup.stdout.close()
        assert backup.wait(60) == 0, (tmp_path / "backup.err").read_text()
    backup_err = (tmp_path / "backup.err").read_text()
    assert restore.returncode == 0, restore.stderr.decode()
    assert "archive written to stdout" in backup_err  # logs went to stderr
    with MongoClient(own_server.uri) as target:
        assert snapshot(target, db_name) == snapshot(client, db_name)
        (view,) = target[db_name].list_collections(filter={"type": "view"})
        assert view["options"]["viewOn"] == "orders"
    assert not (tmp_path / "w" / "backup_data").exists()  # nothing but the pipe
    assert list((tmp_path / "w").iterdir()) == []  # the working folder is gone


@pytest.fixture
def piped_archive(client: MongoClient[Any], mongo_uri: str, db_name: str, tmp_path: Path) -> bytes:
    """The bytes ``backup --archive -`` writes (zstd), as a restore reads them."""
    seed(client, db_name)
    result = tool("backup", "--uri", mongo_uri, "--db", db_name, "--out-dir", str(tmp_path / "w"),
                  "--archive", "-")  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_a_cut_stream_writes_nothing(
    client: MongoClient[Any], mongo_uri: str, target_db: str, piped_archive: bytes,
    fraction: float,
) -> None:  # fmt: skip
    cut = piped_archive[: int(len(piped_archive) * fraction)]
    result = tool("restore", "-", "--uri", mongo_uri, "--db", target_db, input=cut)
    assert result.returncode != 0
    assert "nothing was restored" in error_line(result) or "archive" in error_line(result)
    assert target_db not in client.list_database_names()
    verified = tool("verify", "-", input=cut)
    assert verified.returncode != 0


def test_verify_reads_stdin(piped_archive: bytes) -> None:
    result = tool("verify", "-", input=piped_archive)
    assert result.returncode == 0, result.stderr.decode()
    assert "orders" in result.stdout.decode()


@pytest.mark.parametrize("encrypted", [False, True])
def test_a_reader_that_goes_away_is_one_line_and_the_folder_is_kept(
    client: MongoClient[Any], mongo_uri: str, db_name: str, tmp_path: Path, encrypted: bool
) -> None:
    seed(client, db_name)
    # 2 MB that no compression shrinks: far more than a pipe's buffer holds.
    client[db_name].noise.insert_many([{"_id": i, "b": os.urandom(4000)} for i in range(500)])
    key = str(x25519.Identity.generate().to_public())
    sealed = ["--encrypt-to", key] if encrypted else []
    argv = ["backup", "--uri", f"'{mongo_uri}'", "--db", db_name, "--out-dir", str(tmp_path / "w")]
    command = " ".join([*TOOL, *argv, "--archive", "-", "-q", *sealed])
    result = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {command} | head -c 1000 > /dev/null"],
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert result.returncode != 0
    line = error_line(result)
    assert "closed the pipe" in line and "--resume" in line
    # The backup stops as soon as the reader is gone (the next member it would send),
    # its folder kept with its plan for --resume.
    kept = [p for p in (tmp_path / "w").iterdir() if p.name.startswith("backup_")]
    assert len(kept) == 1 and (kept[0] / "checkpoint.json").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--archive", "dump.archive"], "only '-'"),
        (["--archive", "-", "--json"], "--json cannot share it"),
        (["--archive", "-", "--dest", "somewhere"], "not with --dest"),
        (["--archive", "-", "--incremental"], "not with --dest, --keep-folder or --incremental"),
    ],
)
def test_bad_archive_options_are_one_line(
    cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: list[str],
    message: str,
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    result = cli("backup", "--uri", "mongodb://127.0.0.1:1/", "--db", "d", "--out-dir", "o",
                 *extra)  # fmt: skip
    assert result.code == 2
    assert message in result.err.strip().splitlines()[-1]
    assert not (tmp_path / "o").exists()


def test_an_empty_stdin_is_one_line(mongo_uri: str) -> None:
    result = tool("restore", "-", "--uri", mongo_uri, "--db", "never", input=b"")
    assert result.returncode == 2
    assert "stdin ('-') is empty" in error_line(result)


def test_cli_runner_refuses_a_terminal_stdin(cli: CliRunner, monkeypatch: pytest.MonkeyPatch,
                                             mongo_uri: str) -> None:  # fmt: skip
    class Terminal:
        buffer = None

        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    terminal.buffer = terminal  # type: ignore[assignment]
    monkeypatch.setattr(sys, "stdin", terminal)
    result = cli("restore", "-", "--uri", mongo_uri, "--db", "never")
    assert result.code == 2
    assert "stdin is a terminal" in assert_single_error_line(result)


def test_an_encrypted_stream_restores_with_its_identity(
    client: MongoClient[Any], mongo_uri: str, db_name: str, target_db: str, tmp_path: Path
) -> None:
    seed(client, db_name)
    identity = x25519.Identity.generate()
    (tmp_path / "key.txt").write_text(str(identity))
    argv = ["--uri", mongo_uri, "--db", db_name, "--out-dir", str(tmp_path / "w")]
    sealed = tool("backup", *argv, "--archive", "-", "--encrypt-to", str(identity.to_public()))
    assert sealed.returncode == 0, sealed.stderr.decode()
    assert sealed.stdout.startswith(b"age-encryption.org/v1")
    refused = tool("restore", "-", "--uri", mongo_uri, "--db", target_db, input=sealed.stdout)
    assert refused.returncode == 2 and "--identity" in error_line(refused)
    restored = tool("restore", "-", "--uri", mongo_uri, "--db", target_db, "-q",
                    "--identity", str(tmp_path / "key.txt"), input=sealed.stdout)  # fmt: skip
    assert restored.returncode == 0, restored.stderr.decode()
    assert snapshot(client, target_db) == snapshot(client, db_name)
