"""The list and prune cores (``location/prune.py``), called as a program would, on a
local folder: what is kept and removed, dry runs, refusals, and the location's lock."""

from __future__ import annotations

import datetime as dt
import threading
import time
import types
from pathlib import Path

import pytest

from mongo_backup import (
    ConfigError,
    LockedError,
    Policy,
    PruneOptions,
    list_backups,
    run_prune,
)
from mongo_backup.location import locking as locking_module
from mongo_backup.location.locking import location_lock

NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
STAMPS = ["20261101_010000", "20261102_010000", "20261103_010000", "20261104_010000"]


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    """An --out-dir with four (content-free) archives in its backup_data folder."""
    archives = tmp_path / "backups" / "backup_data"
    archives.mkdir(parents=True)
    for stamp in STAMPS:
        (archives / f"backup_{stamp}.tar.zst").write_bytes(b"not really an archive")
    (archives / "notes.txt").write_text("not a backup: never listed, never removed")
    return tmp_path / "backups"


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in (folder / "backup_data").iterdir())


def test_list_backups_newest_first_and_only_archives(out_dir: Path) -> None:
    rows = list_backups(str(out_dir))
    assert [row.id for row in rows] == [f"backup_{s}" for s in reversed(STAMPS)]
    assert rows[0].time == dt.datetime(2026, 11, 4, 1, tzinfo=dt.UTC)


def test_prune_keeps_the_newest_and_removes_the_rest(out_dir: Path) -> None:
    result = run_prune(PruneOptions(str(out_dir), Policy(last=2)), now=NOW)
    assert [b.id for b in result.kept] == ["backup_20261104_010000", "backup_20261103_010000"]
    assert [b.id for b in result.removed] == ["backup_20261102_010000", "backup_20261101_010000"]
    assert all(result.reasons[b.id] for b in result.kept)  # each kept one says why
    assert names(out_dir) == [
        "backup_20261103_010000.tar.zst",
        "backup_20261104_010000.tar.zst",
        "notes.txt",
    ]
    assert result.to_json()["remove"] == [b.key for b in result.removed]


def test_dry_run_removes_nothing(out_dir: Path) -> None:
    before = names(out_dir)
    result = run_prune(PruneOptions(str(out_dir), Policy(last=1), dry_run=True), now=NOW)
    assert len(result.removed) == 3 and result.dry_run
    assert names(out_dir) == before


def test_an_empty_policy_is_refused_and_nothing_goes(out_dir: Path) -> None:
    before = names(out_dir)
    with pytest.raises(ConfigError, match="at least one --keep"):
        run_prune(PruneOptions(str(out_dir), Policy()), now=NOW)
    assert names(out_dir) == before


def test_prune_refuses_a_location_in_use(out_dir: Path) -> None:
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with location_lock(out_dir, "a backup of 'x'"):
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(10)
        before = names(out_dir)
        with pytest.raises(LockedError):
            run_prune(PruneOptions(str(out_dir), Policy(last=1)), now=NOW)
        assert names(out_dir) == before
    finally:
        release.set()
        holder.join()
    assert len(run_prune(PruneOptions(str(out_dir), Policy(last=1)), now=NOW).removed) == 3


def test_prune_waits_for_the_locations_lock(out_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``lock_wait``, a prune that finds the location in use waits, and removes only
    once the holder is done: the holder leaves as soon as the prune is seen waiting."""
    waiting, holding = threading.Event(), threading.Event()
    real_sleep, slept = time.sleep, []

    def sleep(seconds: float) -> None:  # the lock's polling loop: the prune waits
        slept.append(seconds)
        waiting.set()
        real_sleep(seconds)

    monkeypatch.setattr(
        locking_module, "time", types.SimpleNamespace(**{**vars(time), "sleep": sleep})
    )
    everything = names(out_dir)
    seen: list[list[str]] = []

    def hold() -> None:
        with location_lock(out_dir, "a backup of 'x'"):
            holding.set()
            waiting.wait(30)  # until the prune is seen waiting (or has failed)
            seen.append(names(out_dir))  # what is there while the lock is still held

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(30)
        result = run_prune(PruneOptions(str(out_dir), Policy(last=1), lock_wait=60), now=NOW)
    finally:
        waiting.set()  # a holder still waiting (the prune failed) leaves now
        holder.join(30)
    assert slept, "the prune never waited: the lock was not in its way"
    assert seen == [everything], "the prune removed backups while the lock was held"
    assert len(result.removed) == 3
    assert names(out_dir) == ["backup_20261104_010000.tar.zst", "notes.txt"]
