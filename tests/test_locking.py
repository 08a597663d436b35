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
from pathlib import Path
from typing import Any

import pytest

from conftest import CliRunner
from mongo_backup.locking import LOCK_NAME, LockedError, location_lock


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


def test_a_waiting_run_gets_the_lock_when_it_is_released(tmp_path: Path) -> None:
    released = threading.Event()

    def hold() -> None:
        with location_lock(tmp_path, "first"):
            time.sleep(0.5)
        released.set()

    holder = threading.Thread(target=hold)
    holder.start()
    time.sleep(0.1)
    with location_lock(tmp_path, "second", wait=10):
        assert released.is_set()
    holder.join()


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
