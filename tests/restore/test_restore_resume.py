"""``restore --resume``: a restore killed half-way goes on without sending everything
again and without duplicates; Ctrl-C leaves it resumable."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from conftest import CliRunner
from mongo_backup.restore.state import load_state
from resiliencetools import fail_point
from restoretools import assert_same_bytes, backup_archive, user_collections

COLLECTIONS = {"alpha": 20_000, "beta": 20_000, "gamma": 5}
TIMEOUT = 120.0


@pytest.fixture
def archive(client: Any, mongo_uri: str, db_name: str, cli: CliRunner, tmp_path: Path) -> Path:
    db = client[db_name]
    for name, count in COLLECTIONS.items():
        db[name].insert_many([{"_id": i, "name": name, "pad": "x" * 40} for i in range(count)])
    db.gamma.create_index("name")
    return backup_archive(cli, mongo_uri, db_name, tmp_path / "out")


class RestoreProcess:
    """``mongo-backup restore`` as a child in its own session, output to files."""

    def __init__(self, tmp: Path, *argv: str) -> None:
        self.stderr = tmp / f"restore-{time.monotonic_ns()}.err"
        with open(self.stderr, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mongo_backup", "restore", *argv],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
            )

    def signal(self, number: int) -> tuple[int, str]:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, number)
        code = self.proc.wait(TIMEOUT)
        return code, self.stderr.read_text()


def state_files() -> list[Path]:
    return sorted(Path(os.environ["MONGO_BACKUP_STATE_DIR"]).glob("restores/*.json"))


def wait_for_progress(process: RestoreProcess, collection: str) -> dict[str, Any]:
    """The state file once ``collection`` has some acknowledged documents."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        for path in state_files():  # read as --resume reads it: the file and its journal
            state = load_state(path)
            entry = state.collections.get(collection) if state is not None else None
            if state is not None and entry and entry.acknowledged > 0 and entry.status != "done":
                return asdict(state)
        assert process.proc.poll() is None, "the restore ended before it could be stopped"
        time.sleep(0.005)
    raise AssertionError("timed out waiting for restore progress")


@contextlib.contextmanager
def running_restore(tmp: Path, *argv: str) -> Iterator[RestoreProcess]:
    process = RestoreProcess(tmp, *argv)
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.proc.pid, signal.SIGKILL)
        process.proc.wait(TIMEOUT)


def resume_args(archive: Path, uri: str, target: str) -> list[str]:
    return [str(archive), "--uri", uri, "--db", target, "--batch-size", "100", "-j", "2"]


def stopped_restore(tmp: Path, args: list[str], number: int) -> tuple[int, str, dict[str, Any]]:
    """Start a restore, stop it with signal ``number`` once ``alpha`` is under way."""
    with running_restore(tmp, *args) as process:
        state = wait_for_progress(process, "alpha")
        code, err = process.signal(number)
    return code, err, state


def assert_restored(client: Any, source: str, target: str) -> None:
    for name in COLLECTIONS:
        assert assert_same_bytes(client, source, target, name) == COLLECTIONS[name]


def test_a_killed_restore_resumes_without_duplicates(
    cli: CliRunner, client: Any, mongo_uri: str, db_name: str, target_db: str,
    archive: Path, tmp_path: Path,
) -> None:  # fmt: skip
    args = resume_args(archive, mongo_uri, target_db)
    code, _, state = stopped_restore(tmp_path, args, signal.SIGKILL)
    assert code == -signal.SIGKILL
    acknowledged = state["collections"]["alpha"]["acknowledged"]
    assert 0 < acknowledged < COLLECTIONS["alpha"]

    result = cli("restore", *args, "--resume", "--json", "-v")
    assert result.code == 0, result.err
    assert "continuing after" in result.err
    report = {c["name"]: c for c in json.loads(result.out)["collections"]}
    alpha = report["alpha"]
    assert alpha["duplicates"] == 0 and alpha["ok"]
    assert alpha["inserted"] + alpha["already"] == COLLECTIONS["alpha"]
    assert alpha["already"] >= acknowledged
    assert_restored(client, db_name, target_db)
    assert "name_1" in client[target_db].gamma.index_information()
    assert state_files() == []  # done: nothing left to resume


def test_ctrl_c_leaves_a_resumable_restore(
    cli: CliRunner, client: Any, mongo_uri: str, db_name: str, target_db: str,
    archive: Path, tmp_path: Path,
) -> None:  # fmt: skip
    args = resume_args(archive, mongo_uri, target_db)
    code, err, _ = stopped_restore(tmp_path, args, signal.SIGINT)
    assert code == 130, err
    assert "--resume" in err.strip().splitlines()[-1]
    assert len(state_files()) == 1

    result = cli("restore", *args, "--resume")
    assert result.code == 0, result.err
    assert_restored(client, db_name, target_db)


def test_without_resume_an_interrupted_restore_starts_over(
    cli: CliRunner, client: Any, mongo_uri: str, db_name: str, target_db: str,
    archive: Path, tmp_path: Path,
) -> None:  # fmt: skip
    args = resume_args(archive, mongo_uri, target_db)
    stopped_restore(tmp_path, args, signal.SIGKILL)
    # Without --resume and without --drop, what the first run inserted is in the way:
    # reported as duplicates (exit 3), never silently skipped.
    again = cli("restore", *args, "--json", "-v")
    assert again.code == 3
    assert "--resume would continue it" in again.err
    alpha = next(c for c in json.loads(again.out)["collections"] if c["name"] == "alpha")
    assert alpha["duplicates"] > 0 and alpha["already"] == 0
    # --drop starts over cleanly.
    clean = cli("restore", *args, "--drop")
    assert clean.code == 0, clean.err
    assert sorted(user_collections(client, target_db)) == sorted(COLLECTIONS)
    assert_restored(client, db_name, target_db)


def test_resume_with_nothing_to_resume_restores_everything(
    cli: CliRunner, client: Any, mongo_uri: str, db_name: str, target_db: str, archive: Path
) -> None:
    result = cli("restore", *resume_args(archive, mongo_uri, target_db), "--resume", "-v")
    assert result.code == 0, result.err
    assert "starting from the top" in result.err
    assert_restored(client, db_name, target_db)


def test_a_write_the_server_cannot_confirm_stops_the_restore_resumably(
    cli: CliRunner, client: Any, mongo_uri: str, db_name: str, target_db: str, archive: Path
) -> None:
    """An insert applied but not confirmed by the write concern (a timeout waiting for
    the majority) may roll back: the restore fails with one line that says so, and
    --resume sends that batch again and finishes."""
    args = resume_args(archive, mongo_uri, target_db)
    concern = {"code": 64, "codeName": "WriteConcernFailed", "errmsg": "waiting timed out"}
    with fail_point(client, {"times": 1}, failCommands=["insert"], writeConcernError=concern):
        failed = cli("restore", *args)
    assert failed.code not in (0, 2), failed.err
    last = failed.err.strip().splitlines()[-1]
    assert "applied, but not confirmed by the write concern (it may roll back)" in last, last
    assert "waiting timed out" in last and "Traceback" not in failed.err
    assert len(state_files()) == 1

    resumed = cli("restore", *args, "--resume")
    assert resumed.code == 0, resumed.err
    assert_restored(client, db_name, target_db)
    assert state_files() == []
