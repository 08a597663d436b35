"""A restore into namespaces the target does not hold reads the archive once: each
member is checked against the manifest as it ends, and a damaged archive drops what
the restore created. Into a target that holds one of them, the archive is verified
whole before the first write, as before."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from conftest import CliRunner
from damagetools import forged_manifest, members_of, write_tar
from mongo_backup.restore import namespaces
from mongo_backup.restore import run as restore_run
from mongo_backup.verify import run as verify_run
from restoretools import (
    assert_same_bytes,
    assert_single_error_line,
    backup_archive,
    restore_cli,
    user_collections,
)

SIZES = {"alpha": 300, "beta": 500, "gamma": 40}


@pytest.fixture
def archive(client: Any, mongo_uri: str, db_name: str, cli: CliRunner, tmp_path: Path) -> Path:
    db = client[db_name]
    for name, count in SIZES.items():
        db[name].insert_many([{"_id": i, "n": i * 7, "name": f"{name}{i}"} for i in range(count)])
    db.beta.create_index("n", name="n_idx")
    return backup_archive(cli, mongo_uri, db_name, tmp_path / "out", "--compress", "zstd")


def rewritten(archive: Path, tmp_path: Path, member: str, change: Any, forge: bool) -> Path:
    """A copy of ``archive`` with ``member``'s bytes changed (and, with ``forge``, the
    manifest's checksum for it recomputed, so that only the parse can find it)."""
    members = dict(members_of(archive))
    members[member] = change(members[member])
    if forge:

        def fix(data: dict[str, Any]) -> None:
            for entry in data["collections"]:
                if entry.get("file") == member:
                    entry["sha256"] = hashlib.sha256(members[member]).hexdigest()
                    entry["bytes"] = len(members[member])

        members["manifest.json"] = forged_manifest(members["manifest.json"], fix)
    return write_tar(tmp_path / "damaged.tar.zst", list(members.items()), "zstd")


def test_a_new_target_is_restored_without_a_verify_pass(
    cli: CliRunner, client: Any, mongo_uri: str, db_name: str, target_db: str,
    archive: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    def no_verify(*_: Any, **__: Any) -> Any:
        raise AssertionError("the archive was verified before the restore")

    monkeypatch.setattr(verify_run, "verify", no_verify)
    monkeypatch.setattr(restore_run, "verify", no_verify)
    result = restore_cli(cli, archive, mongo_uri, "--db", target_db, "--drop")
    assert result.code == 0, result.err
    for name, count in SIZES.items():
        assert assert_same_bytes(client, db_name, target_db, name) == count
    assert "n_idx" in client[target_db].beta.index_information()


@pytest.mark.parametrize("member", ["alpha.jsonl", "gamma.jsonl"])
def test_a_damaged_member_drops_what_the_restore_created(
    cli: CliRunner, client: Any, mongo_uri: str, target_db: str, archive: Path,
    tmp_path: Path, member: str,
) -> None:  # fmt: skip
    # A digit changed: still valid JSON, found by the member's checksum at its end; for
    # the last member, after the others were inserted.
    damaged = rewritten(archive, tmp_path, member, lambda b: b.replace(b"7", b"8", 1), False)
    result = restore_cli(cli, damaged, mongo_uri, "--db", target_db, "--drop", "-q")
    assert result.code == 1
    line = assert_single_error_line(result)
    assert member in line and "sha256" in line and "nothing was kept" in line
    assert user_collections(client, target_db) == []


def test_a_damaged_member_says_nothing_of_the_documents_it_made_up(
    cli: CliRunner, client: Any, mongo_uri: str, target_db: str, archive: Path, tmp_path: Path,
) -> None:  # fmt: skip
    # A damaged member that repeats a document (as a flipped bit in a compressed stream
    # can): the damage is the one line, not an "already exists" warning before it.
    damaged = rewritten(
        archive, tmp_path, "alpha.jsonl", lambda b: b + b.splitlines(keepends=True)[3], False
    )
    result = restore_cli(cli, damaged, mongo_uri, "--db", target_db, "--drop")
    assert result.code == 1
    line = assert_single_error_line(result)
    assert "alpha.jsonl" in line and "damaged archive" in line and "nothing was kept" in line
    assert user_collections(client, target_db) == []


def test_a_line_that_does_not_parse_drops_what_the_restore_created(
    cli: CliRunner, client: Any, mongo_uri: str, target_db: str, archive: Path, tmp_path: Path,
) -> None:  # fmt: skip
    # The checksum made to match: only the parse of the line finds it.
    damaged = rewritten(archive, tmp_path, "beta.jsonl", lambda b: b + b"{not json\n", True)
    result = restore_cli(cli, damaged, mongo_uri, "--db", target_db, "-q")
    assert result.code == 1
    line = assert_single_error_line(result)
    assert "beta.jsonl" in line and "nothing was kept" in line
    assert user_collections(client, target_db) == []
    state_dir = Path(os.environ["MONGO_BACKUP_STATE_DIR"]) / "restores"
    assert not list(state_dir.glob("*.json")), "a damaged archive leaves nothing to resume"


def test_a_target_that_holds_a_namespace_is_verified_first(
    cli: CliRunner, client: Any, mongo_uri: str, target_db: str, archive: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    verified: list[str] = []

    def recording_verify(location: str, **options: Any) -> Any:
        verified.append(Path(location).name)
        return verify_run.verify(location, **options)

    monkeypatch.setattr(restore_run, "verify", recording_verify)
    client[target_db].gamma.insert_one({"_id": "theirs"})
    damaged = rewritten(archive, tmp_path, "alpha.jsonl", lambda b: b.replace(b"7", b"8", 1), False)
    result = restore_cli(cli, damaged, mongo_uri, "--db", target_db, "--drop", "-q")
    assert result.code == 1
    assert "nothing was restored" in assert_single_error_line(result)
    assert user_collections(client, target_db) == ["gamma"]
    assert list(client[target_db].gamma.find()) == [{"_id": "theirs"}]
    # And a whole archive replaces it, through the verified path (--drop).
    result = restore_cli(cli, archive, mongo_uri, "--db", target_db, "--drop", "--json")
    assert result.code == 0, result.err
    assert verified == [damaged.name, archive.name]
    outcome = {c["name"]: c for c in json.loads(result.out)["collections"]}
    assert outcome["gamma"]["inserted"] == SIZES["gamma"]


@pytest.mark.parametrize("again", [["--resume"], []])
def test_an_interrupted_one_pass_restore_of_a_damaged_backup_is_undone_later(
    cli: CliRunner, client: Any, mongo_uri: str, target_db: str, archive: Path,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, again: list[str],
) -> None:  # fmt: skip
    """Interrupted before it reached the damaged member, the first run keeps what it wrote
    for --resume; the next run checks the backup first, finds the damage, and drops what
    the first one had created."""
    damaged = rewritten(archive, tmp_path, "gamma.jsonl", lambda b: b.replace(b"7", b"8", 1), False)
    original = namespaces.Restorer._restore_member
    members: list[str] = []

    def interrupted(self: Any, entry: Any, stream: Any, outcome: Any) -> None:
        members.append(entry.name)
        if len(members) == 2:
            raise KeyboardInterrupt
        original(self, entry, stream, outcome)

    monkeypatch.setattr(namespaces.Restorer, "_restore_member", interrupted)
    first = restore_cli(cli, damaged, mongo_uri, "--db", target_db, "-q")
    monkeypatch.setattr(namespaces.Restorer, "_restore_member", original)
    assert first.code == 130 and "--resume" in first.err
    assert client[target_db].alpha.count_documents({}) == SIZES["alpha"]
    second = restore_cli(cli, damaged, mongo_uri, "--db", target_db, "-q", *again)
    assert second.code == 1
    line = assert_single_error_line(second)
    assert "gamma.jsonl" in line and "had created are dropped" in line
    assert user_collections(client, target_db) == []
    state_dir = Path(os.environ["MONGO_BACKUP_STATE_DIR"]) / "restores"
    assert not list(state_dir.glob("*"))
