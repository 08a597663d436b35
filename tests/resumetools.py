"""Helpers for the checkpoint / ``--resume`` tests: backups as real processes, killed.

A backup runs as ``python -m mongo_backup backup`` in its own session, so that a kill
hits it and its converter processes at once, as a crash or the OOM killer would. Its
stdout and stderr go to files (a pipe nobody reads could stall it).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from bsontools import read_archive_member, read_manifest
from conftest import CliResult

T = TypeVar("T")
TIMEOUT = 120.0
# Many small checkpoints and batches: a kill lands between checkpoints, as in real life.
FAST_CHECKPOINTS = ("--batch-size", "200", "--checkpoint-interval", "0.05")


class BackupProcess:
    """One ``mongo-backup backup`` child process and its captured output."""

    def __init__(self, uri: str, db: str, out: Path, *extra: str, **popen: Any) -> None:
        self.out = out
        logs = out.parent / f"{out.name}-logs"
        logs.mkdir(exist_ok=True)
        count = len(list(logs.iterdir())) // 2
        self._stdout = logs / f"{count}.out"
        self._stderr = logs / f"{count}.err"
        argv = ["backup", "--uri", uri, "--db", db, "--out-dir", str(out), *extra]
        with open(self._stdout, "wb") as stdout, open(self._stderr, "wb") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mongo_backup", *argv],
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
                **popen,
            )

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float = TIMEOUT) -> CliResult:
        code = self.proc.wait(timeout)
        return CliResult(code, self._stdout.read_text(), self._stderr.read_text())

    def kill(self) -> CliResult:
        """SIGKILL the backup and its converters (its whole process group)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        result = self.wait()
        assert result.code == -signal.SIGKILL, f"the backup ended before the kill:\n{result.err}"
        return result


def run_backup(uri: str, db: str, out: Path, *extra: str, **popen: Any) -> CliResult:
    return BackupProcess(uri, db, out, *extra, **popen).wait()


def poll(what: str, process: BackupProcess, condition: Callable[[], T | None]) -> T:
    """The first truthy ``condition()``, checked every few ms while the backup runs."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if not process.running():
            result = process.wait()
            raise AssertionError(
                f"the backup ended (exit {result.code}) before {what}; "
                f"make the data bigger\n{result.err}"
            )
        time.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


def working_folder(out: Path) -> Path | None:
    folders = [p for p in out.glob("backup_*") if p.is_dir() and p.name != "backup_data"]
    assert len(folders) <= 1, folders
    return folders[0] if folders else None


def read_json(path: Path) -> dict[str, Any] | None:
    """A checkpoint file's content, or None while it does not exist (yet, or any more)."""
    try:
        data: dict[str, Any] = json.loads(path.read_bytes())
    except (FileNotFoundError, ValueError):
        return None
    return data


def read_plan(folder: Path) -> dict[str, Any] | None:
    """The plan as ``--resume`` sees it: ``checkpoint.json`` with the finished units of
    the done journal (one line per unit) merged into its ``done``."""
    plan = read_json(folder / "checkpoint.json")
    if plan is None:
        return None
    with contextlib.suppress(FileNotFoundError):
        for line in (folder / "checkpoint.done.jsonl").read_bytes().splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                plan["done"][entry["file"]] = entry["stats"]
    return plan


def unit_checkpoints(folder: Path) -> dict[str, dict[str, Any]]:
    """{unit file: its checkpoint} for every unit checkpoint in the folder."""
    found = {}
    for path in folder.glob("*.checkpoint"):
        data = read_json(path)
        if data is not None:
            found[path.name.removesuffix(".checkpoint")] = data
    return found


def wait_mid_unit(process: BackupProcess, documents: int) -> tuple[Path, str]:
    """Wait until a unit has a checkpoint of at least ``documents`` documents; returns
    the working folder and that unit's file name."""
    folder = poll("the working folder exists", process, lambda: working_folder(process.out))

    def far_enough() -> str | None:
        units = unit_checkpoints(folder)
        return next((unit for unit, data in units.items() if data["count"] >= documents), None)

    return folder, poll(f"a unit checkpoint of {documents} documents", process, far_enough)


def unfinished_files(folder: Path) -> list[Path]:
    """The working files of every unit that the plan does not record as done."""
    plan = read_plan(folder)
    assert plan is not None
    files = []
    for unit in plan["units"]:
        if unit["file"] not in plan["done"]:
            for name in (unit["file"], unit["file"] + ".zst"):
                if (folder / name).exists():
                    files.append(folder / name)
    return files


def tear_tails(folder: Path, garbage: bytes) -> list[Path]:
    """Append ``garbage`` to every unfinished working file (a torn last write)."""
    files = unfinished_files(folder)
    for path in files:
        with open(path, "ab") as handle:
            handle.write(garbage)
    return files


def archive_contents(archive: Path) -> tuple[list[tuple[Any, ...]], dict[str, bytes]]:
    """(per-namespace manifest summary, {data member: bytes}) of an archive."""
    manifest = read_manifest(archive)
    fields = ("name", "type", "file", "status", "count", "bytes", "sha256", "escaped")
    summary = [tuple(entry.get(key) for key in fields) for entry in manifest["collections"]]
    members = {
        entry["file"]: read_archive_member(archive, entry["file"])
        for entry in manifest["collections"]
        if entry["file"]
    }
    return summary, members


def seeded(name: str) -> random.Random:
    """A random source of its own for each test: kill points differ but repeat."""
    return random.Random(zlib.crc32(name.encode()))


def check_private(folder: Path) -> None:
    """The working folder is 0700, its checkpoint files 0600."""
    assert _mode(folder) == 0o700
    assert _mode(folder / "checkpoint.json") == 0o600
    for path in folder.glob("*.checkpoint"):
        assert _mode(path) == 0o600, path


def resume_backup(uri: str, db: str, out: Path, folder: Path, *extra: str) -> Path:
    """``--resume`` must continue ``folder`` and write the archive of the same name."""
    result = run_backup(uri, db, out, "--resume", *extra)
    assert result.code == 0, result.err
    assert "Traceback" not in result.err
    archive = Path(result.out.strip())
    assert archive.parent == out / "backup_data" and archive.name.startswith(folder.name + ".tar")
    assert [p.name for p in archive.parent.iterdir()] == [archive.name]  # no partial file
    return archive


def unfinished_units(folder: Path) -> dict[str, dict[str, Any]]:
    """The unit checkpoints of units the plan does not record as done."""
    plan = read_plan(folder)
    assert plan is not None
    return {u: data for u, data in unit_checkpoints(folder).items() if u not in plan["done"]}


def estimated_size(client: Any, db: str, coll: str) -> int:
    """The size the planner goes by: the server's figure, else 1 KiB per document."""
    stats: dict[str, Any] = next(
        client[db][coll].aggregate([{"$collStats": {"storageStats": {}}}]), {}
    )
    storage = stats.get("storageStats", {})
    size = storage.get("size")
    return int(size) if size else int(storage["count"]) * 1024


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777
