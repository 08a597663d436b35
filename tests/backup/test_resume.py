"""Checkpoints and ``--resume``: a backup killed anywhere finishes as if never stopped.

Each test runs ``mongo-backup backup`` as a real process, stops it (SIGKILL of its whole
process group, SIGINT, a full disk, a failing archive step), resumes it, and compares
the result with one uninterrupted backup of the same data: the same manifest entries
(count, bytes, sha256) and the same bytes in every member.
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from bson import ObjectId

from conftest import CliRunner
from restoretools import ERROR_PREFIX, assert_single_error_line, backup_archive
from resumetools import (
    FAST_CHECKPOINTS,
    BackupProcess,
    archive_contents,
    check_private,
    estimated_size,
    poll,
    read_plan,
    resume_backup,
    run_backup,
    seeded,
    tear_tails,
    unfinished_units,
    wait_mid_unit,
    working_folder,
)

DOCUMENTS = 30_000  # per big collection: a -j 1 backup takes a few seconds on SecantusDB
BIG = ("alpha", "beta", "gamma")

Contents = tuple[list[tuple[Any, ...]], dict[str, bytes]]


@pytest.fixture(scope="module")
def big_db(client: Any) -> Iterator[str]:
    """Three big collections (int, string and ObjectId ``_id``s, a few of other types
    mixed in), a small one with an index and an empty one. Read only by the tests."""
    name = f"t_{uuid4().hex[:10]}"
    db = client[name]
    chunk = 5_000
    for start in range(0, DOCUMENTS, chunk):
        ids = range(start, start + chunk)
        db.alpha.insert_many([{"_id": i, "n": i, "s": f"alpha-{i}", "f": i / 7} for i in ids])
        db.beta.insert_many([{"_id": f"b{i:06d}", "d": {"k": i, "t": [i, "x"]}} for i in ids])
        db.gamma.insert_many(
            [{"_id": ObjectId(i.to_bytes(12, "big")), "n": i, "b": bytes([i % 256])} for i in ids]
        )
    db.gamma.insert_many([{"_id": i, "mixed": True} for i in (-5, 2.5, 10**12)])
    db.gamma.insert_many([{"_id": key, "mixed": True} for key in ("a", "zz", "")])
    db.tiny.insert_many([{"_id": i, "w": i * 1.5} for i in range(3)])
    db.tiny.create_index("w", name="w_idx")
    db.create_collection("void")
    yield name
    client.drop_database(name)


@pytest.fixture(scope="module")
def reference_archive(
    mongo_uri: str, big_db: str, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """An uninterrupted backup of ``big_db``."""
    out = tmp_path_factory.mktemp("reference")
    result = run_backup(mongo_uri, big_db, out, "-q", "-j", "1")
    assert result.code == 0, result.err
    return Path(result.out.strip())


@pytest.fixture(scope="module")
def reference(reference_archive: Path) -> Contents:
    """What an uninterrupted backup of ``big_db`` holds."""
    return archive_contents(reference_archive)


# --- 1 and 2: SIGKILL in the middle of a collection, with and without a torn tail ---------

KILL_CASES = {
    "j1": (("-j", "1"), False),
    "j1-torn": (("-j", "1"), True),
    "j2-torn": (("-j", "2"), True),
    "none-torn": (("-j", "1", "--compress", "none"), True),
    "keep-folder-torn": (("-j", "1", "--keep-folder"), True),
}


@pytest.mark.parametrize("case", list(KILL_CASES))
def test_kill_mid_collection_then_resume(
    mongo_uri: str, big_db: str, reference: Contents, tmp_path: Path, case: str
) -> None:
    extra, torn = KILL_CASES[case]
    rng = seeded(case)
    out = tmp_path / "out"
    backup = BackupProcess(mongo_uri, big_db, out, *FAST_CHECKPOINTS, *extra)
    folder, _ = wait_mid_unit(backup, rng.randint(1_000, DOCUMENTS * 2 // 3))
    backup.kill()
    check_private(folder)
    assert unfinished_units(folder), "killed after the unit finished: kill earlier"
    if torn:
        garbage = b'{"_id": {"$numberInt": "7' + rng.randbytes(rng.randint(1, 300))
        files = tear_tails(folder, garbage)
        assert files
        if "--keep-folder" in extra:  # zstd + --keep-folder writes both files
            assert {p.suffix for p in files} == {".jsonl", ".zst"}
    archive = resume_backup(mongo_uri, big_db, out, folder, *extra)
    assert archive_contents(archive) == reference
    if "--keep-folder" in extra:
        names = sorted(p.name for p in folder.iterdir())
        assert names == sorted(["manifest.json", *reference[1]])  # no checkpoint, no .zst
        for name, data in reference[1].items():
            assert (folder / name).read_bytes() == data
    else:
        assert not folder.exists()


def test_kill_between_collections_then_resume(
    mongo_uri: str, big_db: str, reference: Contents, tmp_path: Path
) -> None:
    finished = seeded("between").choice([1, 2])
    out = tmp_path / "out"
    backup = BackupProcess(mongo_uri, big_db, out, *FAST_CHECKPOINTS, "-j", "1")
    folder = poll("the working folder", backup, lambda: working_folder(out))

    def enough_done() -> bool:
        plan = read_plan(folder)
        return plan is not None and len(plan["done"]) >= finished

    poll(f"{finished} finished units", backup, enough_done)
    backup.kill()
    plan = read_plan(folder)
    assert plan is not None
    assert finished <= len(plan["done"]) < len(plan["units"])
    for stats in plan["done"].values():
        assert set(stats) >= {"count", "bytes", "sha256"}
    result = run_backup(mongo_uri, big_db, out, "--resume")
    assert result.code == 0, result.err
    assert f"{len(plan['done'])} of {len(plan['units'])} units already done" in result.err
    assert archive_contents(Path(result.out.strip())) == reference


def test_kill_in_split_collection_then_resume(
    client: Any, mongo_uri: str, big_db: str, reference: Contents, tmp_path: Path
) -> None:
    # Each big collection is about 2.5 thresholds: read as 3 _id ranges.
    threshold = max(estimated_size(client, big_db, name) for name in BIG) * 2 // 5
    out = tmp_path / "out"
    extra = ("-j", "2", "--split-threshold", str(threshold))
    backup = BackupProcess(mongo_uri, big_db, out, *FAST_CHECKPOINTS, *extra)
    folder, unit = wait_mid_unit(backup, seeded("split").randint(500, DOCUMENTS // 5))
    killed = backup.kill()
    assert re.search(r"alpha: \d+ bytes, read as [23] _id ranges", killed.err), killed.err
    assert ".part" in unit
    archive = resume_backup(mongo_uri, big_db, out, folder, *extra)
    assert archive_contents(archive) == reference  # ranges joined = one ordered scan


# --- 3: a unit checkpoint that does not match its files ----------------------------------


@pytest.mark.parametrize("damage", ["sha256", "truncated"])
def test_mismatched_unit_checkpoint_restarts_the_unit(
    mongo_uri: str, big_db: str, reference: Contents, tmp_path: Path, damage: str
) -> None:
    out = tmp_path / "out"
    backup = BackupProcess(mongo_uri, big_db, out, *FAST_CHECKPOINTS, "-j", "1")
    folder, _ = wait_mid_unit(backup, seeded(damage).randint(1_000, DOCUMENTS // 2))
    backup.kill()
    (unit, progress), *_ = unfinished_units(folder).items()
    if damage == "sha256":
        progress["sha256"] = "0" * 64
        (folder / f"{unit}.checkpoint").write_text(json.dumps(progress))
    else:
        for name, size in progress["sizes"].items():
            os.truncate(folder / name, size // 2)
    result = run_backup(mongo_uri, big_db, out, "--resume")
    assert result.code == 0, result.err
    collection = unit.split(".")[0]
    warnings = [line for line in result.err.splitlines() if "WARNING" in line]
    assert any(collection in line and "checkpoint" in line for line in warnings), result.err
    assert "Traceback" not in result.err
    assert archive_contents(Path(result.out.strip())) == reference


# --- 4: SIGINT ---------------------------------------------------------------------------


def test_sigint_keeps_the_partial_backup_and_resume_finishes_it(
    mongo_uri: str, big_db: str, reference: Contents, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    backup = BackupProcess(mongo_uri, big_db, out, *FAST_CHECKPOINTS, "-j", "1")
    folder, _ = wait_mid_unit(backup, seeded("sigint").randint(1_000, DOCUMENTS // 2))
    backup.proc.send_signal(signal.SIGINT)
    stopped = backup.wait(60)
    assert stopped.code == 130, stopped.err
    assert stopped.out == "" and "Traceback" not in stopped.err
    assert "--resume" in stopped.err and "kept" in stopped.err and str(folder) in stopped.err
    assert (folder / "checkpoint.json").is_file()
    assert unfinished_units(folder)  # Ctrl-C writes a last checkpoint: nothing is lost
    check_private(folder)
    result = run_backup(mongo_uri, big_db, out, "--resume")
    assert result.code == 0, result.err
    assert "continuing after" in result.err
    assert archive_contents(Path(result.out.strip())) == reference


# --- 1c and 7: the archive step fails; the resume only archives --------------------------


def test_archiving_failure_then_resume_only_archives(
    mongo_uri: str, big_db: str, reference: Contents, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "backup_data").write_text("a file where the archive folder should be")
    failed = run_backup(mongo_uri, big_db, out, "--keep-folder", "-j", "2")
    assert failed.code == 1 and failed.out == "" and "--resume" in failed.err
    folder = working_folder(out)
    assert folder is not None
    check_private(folder)
    plan = read_plan(folder)
    assert plan is not None and len(plan["done"]) >= len(plan["units"])
    (out / "backup_data").unlink()
    archive = resume_backup(mongo_uri, big_db, out, folder)  # --keep-folder comes from the plan
    assert archive_contents(archive) == reference
    assert sorted(p.name for p in folder.iterdir()) == sorted(["manifest.json", *reference[1]])


# --- 6: disk full (RLIMIT_FSIZE: writes past the limit fail with EFBIG) -------------------


@pytest.mark.parametrize("where", ["member-zstd", "member-none", "archive"])
def test_full_disk_stops_the_backup_and_resume_finishes_it(
    mongo_uri: str,
    big_db: str,
    reference: Contents,
    reference_archive: Path,
    tmp_path: Path,
    where: str,
) -> None:
    # Each big member takes about a third of the archive: "member" stops the export
    # inside the first members, "archive" lets every member fit but not the archive.
    size = reference_archive.stat().st_size
    limit = {"member-zstd": size // 8, "member-none": 64 * 1024, "archive": size * 3 // 4}[where]
    compress = "none" if where == "member-none" else "zstd"

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    out = tmp_path / "out"
    extra: tuple[str, ...] = ("--compress", compress, "-j", "2")
    if where != "archive":
        extra += FAST_CHECKPOINTS
    failed = run_backup(mongo_uri, big_db, out, *extra, preexec_fn=limited)
    assert failed.code == 1 and failed.out == "", failed.err
    # One error line; no traceback, and no collection reported as failed: the run stops.
    errors = [line for line in failed.err.splitlines() if line.startswith(ERROR_PREFIX)]
    assert len(errors) == 1 and "Traceback" not in failed.err, failed.err
    assert not [line for line in failed.err.splitlines() if " ERROR " in line], failed.err
    assert not list((out / "backup_data").glob("backup_*.tar*"))
    folder = working_folder(out)
    assert folder is not None and (folder / "checkpoint.json").is_file()
    plan = read_plan(folder)
    assert plan is not None
    exported = len(plan["done"]) >= len(plan["units"])
    assert exported == (where == "archive"), plan["done"].keys()
    archive = resume_backup(mongo_uri, big_db, out, folder)
    assert archive_contents(archive) == reference
    # Like the other stops (Ctrl-C, a failed archive step), the line says what to do.
    assert str(folder) in errors[0] and "--resume" in errors[0], errors[0]


# --- 5: what --resume refuses, and which folder it picks -----------------------------------


@pytest.fixture
def small(client: Any, db_name: str) -> str:
    client[db_name].items.insert_many([{"_id": i, "v": f"v{i}"} for i in range(5)])
    return db_name


def unfinished(cli: CliRunner, uri: str, db: str, out: Path, *extra: str) -> Path:
    """An unfinished backup of ``db`` in ``out``: everything exported, not archived."""
    blocker = out / "backup_data"
    out.mkdir(exist_ok=True)
    blocker.write_text("not a folder")
    before = set(out.iterdir())
    assert cli("backup", "--uri", uri, "--db", db, "--out-dir", out, "-q", *extra).code == 1
    blocker.unlink()
    (folder,) = set(out.iterdir()) - before
    return folder


def test_resume_refuses_a_folder_of_another_database(
    cli: CliRunner, client: Any, mongo_uri: str, small: str, tmp_path: Path
) -> None:
    folder = unfinished(cli, mongo_uri, small, tmp_path)
    other = f"{small}_other"
    result = cli(
        "backup", "--uri", mongo_uri, "--db", other, "--out-dir", tmp_path, "--resume", folder
    )
    assert result.code == 2 and result.out == ""
    line = assert_single_error_line(result)
    assert repr(small) in line and repr(other) in line
    assert (folder / "checkpoint.json").is_file()
    assert other not in client.list_database_names()


@pytest.mark.parametrize("content", [None, b"{}", b"\x00garbage{", b'{"format": "other"}'])
def test_resume_refuses_a_folder_without_a_checkpoint(
    cli: CliRunner, mongo_uri: str, small: str, tmp_path: Path, content: bytes | None
) -> None:
    folder = tmp_path / "backup_20240101_000000"
    folder.mkdir()
    if content is not None:
        (folder / "checkpoint.json").write_bytes(content)
    result = cli(
        "backup", "--uri", mongo_uri, "--db", small, "--out-dir", tmp_path, "--resume", folder
    )
    assert result.code == 2 and result.out == ""
    assert "checkpoint" in assert_single_error_line(result)
    assert not (tmp_path / "backup_data").exists()


def test_resume_without_an_unfinished_backup_starts_a_new_one(
    cli: CliRunner, mongo_uri: str, small: str, tmp_path: Path
) -> None:
    result = cli("backup", "--uri", mongo_uri, "--db", small, "--out-dir", tmp_path, "--resume")
    assert result.code == 0, result.err
    archive = Path(result.out.strip())
    summary, members = archive_contents(archive)
    assert [row[:5] for row in summary] == [("items", "collection", "items.jsonl", "ok", 5)]
    assert members["items.jsonl"].count(b"\n") == 5
    assert [p.name for p in tmp_path.iterdir()] == ["backup_data"]


def test_resume_picks_the_unfinished_backup_of_the_requested_database(
    cli: CliRunner, client: Any, mongo_uri: str, small: str, target_db: str, tmp_path: Path
) -> None:
    client[target_db].other.insert_one({"_id": 1})
    mine = unfinished(cli, mongo_uri, small, tmp_path)
    newer = unfinished(cli, mongo_uri, target_db, tmp_path)  # the newest folder in out
    assert newer.name > mine.name
    result = cli("backup", "--uri", mongo_uri, "--db", small, "--out-dir", tmp_path, "--resume")
    assert result.code == 0, result.err
    archive = Path(result.out.strip())
    assert archive.name == f"{mine.name}.tar.zst"
    assert archive_contents(archive)[0][0][:5] == ("items", "collection", "items.jsonl", "ok", 5)
    assert not mine.exists() and (newer / "checkpoint.json").is_file()


def test_crash_after_joining_ranges_before_the_plan_records_it(
    cli: CliRunner, client: Any, mongo_uri: str, db_name: str, tmp_path: Path
) -> None:
    """join_parts removes the ranges' files before the plan records the joined member:
    a crash in between leaves this state, which --resume must still finish."""
    client[db_name].big.insert_many([{"_id": i, "v": i} for i in range(2_000)])
    threshold = str(estimated_size(client, db_name, "big") * 2 // 5)
    expected = archive_contents(backup_archive(cli, mongo_uri, db_name, tmp_path / "ref"))
    out = tmp_path / "out"
    folder = unfinished(cli, mongo_uri, db_name, out, "--split-threshold", threshold)
    plan = read_plan(folder)
    assert plan is not None and "big.jsonl.part1" in plan["done"]
    del plan["done"]["big.jsonl"]
    (folder / "checkpoint.json").write_text(json.dumps(plan))
    result = cli("backup", "--uri", mongo_uri, "--db", db_name, "--out-dir", out, "--resume")
    assert result.code == 0, result.err
    assert archive_contents(Path(result.out.strip())) == expected
