"""``backup_dtb/backup_data.py``, the seed script: run as users run it, in a subprocess.

Its contract is its guide's: MONGO_URI / MONGO_DB from flags, the environment or a
``.env`` in the working directory (flag > environment > .env), output under
``backup_dtb`` relative to the working directory, a plain ``.tar``, the path on stdout.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from bsontools import archive_members, read_archive_member, read_manifest
from conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "backup_dtb" / "backup_data.py"
# Only reached if precedence is wrong. (The script has no --timeout and connect() lets its
# 30 s default override the URI's serverSelectionTimeoutMS, so an unreachable-server test
# of the script would take 30 s; the CLI tests cover that path with --timeout 1.)
UNREACHABLE = "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=300"


def run_seed(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("MONGO_URI", "MONGO_DB")}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def archive_of(result: subprocess.CompletedProcess[str], cwd: Path) -> Path:
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    path = cwd / lines[0]  # relative paths are relative to the script's working directory
    assert path.is_file()
    return path


@pytest.fixture
def seeded(client: Any, db_name: str) -> str:
    client[db_name].people.insert_many([{"_id": 1, "name": "Ada"}, {"_id": 2, "name": "Alan"}])
    return db_name


def test_flags_default_out_dir_and_plain_tar(mongo_uri: str, seeded: str, tmp_path: Path) -> None:
    result = run_seed(tmp_path, "--mongo-uri", mongo_uri, "--mongo-db", seeded)
    archive = archive_of(result, tmp_path)
    assert archive.parent == tmp_path / "backup_dtb" / "backup_data"
    assert archive.name.startswith("backup_") and archive.suffixes == [".tar"]
    with tarfile.open(archive, "r:") as tar:  # plain, uncompressed tar
        assert tar.getnames() == ["manifest.json", "people.jsonl"]
    assert sorted(p.name for p in (tmp_path / "backup_dtb").iterdir()) == ["backup_data"]
    lines = read_archive_member(archive, "people.jsonl").decode().splitlines()
    assert lines[0] == '{ "_id" : { "$numberInt" : "1" }, "name" : "Ada" }'


def test_environment_variables(mongo_uri: str, seeded: str, tmp_path: Path) -> None:
    result = run_seed(tmp_path, env={"MONGO_URI": mongo_uri, "MONGO_DB": seeded})
    assert read_manifest(archive_of(result, tmp_path))["database"] == seeded


def test_dotenv_in_working_directory(mongo_uri: str, seeded: str, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"MONGO_URI={mongo_uri}\nMONGO_DB={seeded}\n")
    result = run_seed(tmp_path, "--out-dir", "elsewhere")
    archive = archive_of(result, tmp_path)
    assert archive.parent == tmp_path / "elsewhere" / "backup_data"


def test_environment_beats_dotenv(mongo_uri: str, seeded: str, tmp_path: Path) -> None:
    # Were .env used, the unreachable URI would fail the run.
    (tmp_path / ".env").write_text(f"MONGO_URI={UNREACHABLE}\nMONGO_DB=not_this_one\n")
    result = run_seed(tmp_path, env={"MONGO_URI": mongo_uri, "MONGO_DB": seeded})
    assert read_manifest(archive_of(result, tmp_path))["database"] == seeded


def test_flags_beat_environment_and_dotenv(mongo_uri: str, seeded: str, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"MONGO_URI={UNREACHABLE}\nMONGO_DB=not_this_one\n")
    result = run_seed(
        tmp_path,
        "--mongo-uri",
        mongo_uri,
        "--mongo-db",
        seeded,
        env={"MONGO_URI": UNREACHABLE, "MONGO_DB": "nor_this_one"},
    )
    assert read_manifest(archive_of(result, tmp_path))["database"] == seeded


def test_missing_configuration_exits_2(tmp_path: Path) -> None:
    result = run_seed(tmp_path)
    assert result.returncode == 2
    assert result.stdout == "" and "MONGO_URI" in result.stderr
    assert not (tmp_path / "backup_dtb").exists()


def test_pretty(mongo_uri: str, seeded: str, tmp_path: Path) -> None:
    result = run_seed(tmp_path, "--mongo-uri", mongo_uri, "--mongo-db", seeded, "--pretty")
    archive = archive_of(result, tmp_path)
    assert read_manifest(archive)["pretty"] is True
    text = read_archive_member(archive, "people.jsonl")
    assert text.startswith(b'{\n  "_id": {\n') and text.count(b"\n}\n") == 2


def test_importable_backup_database(mongo_uri: str, seeded: str, tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("seed_backup_data", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path = module.backup_database(mongo_uri, seeded, str(tmp_path / "out"))
    assert isinstance(path, str) and path.endswith(".tar")
    assert Path(path).parent == tmp_path / "out" / "backup_data"
    assert archive_members(path) == ["manifest.json", "people.jsonl"]
