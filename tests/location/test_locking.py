"""One lock per backup location: a second run waits or fails with one line; a lock left
by a dead process, or an old one, is taken over with a warning."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any

import pytest

from conftest import CliRunner
from mongo_backup.errors import LockedError
from mongo_backup.location import locking as locking_module
from mongo_backup.location.locking import LOCK_NAME, location_lock


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def write_lock(folder: Path, **fields: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    record = {"pid": os.getpid(), "host": socket.gethostname(), "time": time.time(),
              "what": "a backup of 'x'"} | fields  # fmt: skip
    path = folder / LOCK_NAME
    path.write_text(json.dumps(record))
    return path


def test_a_held_lock_refuses_a_second_holder_and_is_released(tmp_path: Path) -> None:
    with location_lock(tmp_path, "first"):
        assert (tmp_path / LOCK_NAME).stat().st_mode & 0o777 == 0o600
        with (
            pytest.raises(LockedError, match=r"in use by first \(pid \d+"),
            location_lock(tmp_path, "second"),
        ):
            pass
    assert not (tmp_path / LOCK_NAME).exists()
    with location_lock(tmp_path, "third"):
        pass


def waits_reported(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Set when a run finds the lock held and starts to wait for it (its first sleep in
    the polling loop): a condition, where a sleep of the test's own would be a guess."""
    waiting = threading.Event()
    real_sleep = time.sleep

    def sleep(seconds: float) -> None:
        waiting.set()
        real_sleep(seconds)

    clock = types.SimpleNamespace(**{**vars(time), "sleep": sleep})
    monkeypatch.setattr(locking_module, "time", clock)
    return waiting


def test_a_waiting_run_gets_the_lock_when_it_is_released(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    held, leaving = threading.Event(), threading.Event()
    waiting = waits_reported(monkeypatch)
    errors: list[BaseException] = []

    def hold() -> None:
        try:
            with location_lock(tmp_path, "first"):
                held.set()
                # Held until the second run is seen waiting (or long enough to fail it).
                waiting.wait(30)
                leaving.set()
        except BaseException as error:
            errors.append(error)
            held.set()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(30) and not errors, errors
        with location_lock(tmp_path, "second", wait=60):
            # Only once the holder had left its block: not before, and not never.
            assert leaving.is_set()
            assert waiting.is_set(), "the second run never waited: the lock was not held"
    finally:
        waiting.set()
        holder.join(30)
    assert not holder.is_alive() and not errors, errors
    assert not (tmp_path / LOCK_NAME).exists()


def test_locks_of_dead_processes_and_old_locks_are_taken_over(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_lock(tmp_path, pid=dead_pid())
    with location_lock(tmp_path, "mine"):
        pass
    old = write_lock(tmp_path, host="elsewhere")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    with location_lock(tmp_path, "mine", stale_after=3600):
        pass
    warnings = [r.getMessage() for r in caplog.records if "stale lock" in r.getMessage()]
    assert len(warnings) == 2


def test_a_live_lock_of_another_host_is_respected(tmp_path: Path) -> None:
    write_lock(tmp_path, host="elsewhere", pid=1)
    with pytest.raises(LockedError, match="pid 1 on elsewhere"), location_lock(tmp_path, "mine"):
        pass


def test_backup_refuses_a_location_in_use(
    cli: CliRunner, client: Any, mongo_uri: str, db_name: str, tmp_path: Path
) -> None:
    client[db_name].c.insert_one({"_id": 1})
    out = tmp_path / "out"
    with location_lock(out, "a backup of 'other'"):
        result = cli("backup", "--uri", mongo_uri, "--db", db_name, "--out-dir", out)
    assert result.code == 1 and result.out == ""
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mongo-backup: error: ")
    assert "in use by a backup of 'other'" in lines[0]
    assert not (out / "backup_data").exists()
    # A lock its process left behind does not block the next backup.
    write_lock(out, pid=dead_pid())
    result = cli("backup", "--uri", mongo_uri, "--db", db_name, "--out-dir", out)
    assert result.code == 0, result.err
    assert "taking over the stale lock" in result.err
    assert not (out / LOCK_NAME).exists()
