"""files.py: private files are 0600 whatever the umask, and an atomic JSON write leaves
the old or the new document, never a torn one, and no temporary behind."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mongo_backup.files import private_file, sync_folder, write_json_atomic


@pytest.fixture
def open_umask() -> object:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_private_file_is_owner_only_whatever_the_umask(tmp_path: Path, open_umask: object) -> None:
    path = tmp_path / "member.jsonl"
    with private_file(path) as handle:
        handle.write(b"{}\n")
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_bytes() == b"{}\n"


def test_write_json_atomic_replaces_whole_and_private(tmp_path: Path, open_umask: object) -> None:
    path = tmp_path / "checkpoint.json"
    write_json_atomic(path, {"n": 1})
    write_json_atomic(path, {"n": 2, "name": "é"})
    assert json.loads(path.read_text("utf-8")) == {"n": 2, "name": "é"}
    assert path.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.json"]


def test_a_failed_write_leaves_the_old_document(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.json"
    write_json_atomic(path, {"n": 1})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"n": object()})  # not JSON: fails before the rename
    assert json.loads(path.read_text()) == {"n": 1}


def test_sync_folder_tolerates_what_cannot_be_opened(tmp_path: Path) -> None:
    sync_folder(tmp_path)
    sync_folder(tmp_path / "missing")  # no error: as durable as the platform allows
