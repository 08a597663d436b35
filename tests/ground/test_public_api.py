"""The public face: ``mongo_backup.__all__`` is what a program may import, every name in
it resolves, and no name is both a module and a function."""

from __future__ import annotations

import importlib
import inspect
import types

import mongo_backup
from mongo_backup import errors


def test_every_public_name_resolves() -> None:
    for name in mongo_backup.__all__:
        assert getattr(mongo_backup, name) is not None, name


def test_the_cores_and_the_seed_api_are_public() -> None:
    expected = {
        "run_backup",
        "run_restore",
        "run_verify",
        "run_prune",
        "list_backups",
        "backup_database",
        "BackupOptions",
        "RestoreOptions",
        "VerifyOptions",
        "PruneOptions",
        "BackupResult",
        "RestoreResult",
        "VerifyResult",
        "PruneResult",
        "MongoBackupError",
    }
    assert expected <= set(mongo_backup.__all__)
    assert all(callable(getattr(mongo_backup, n)) for n in expected)


def test_the_core_packages_are_modules_not_functions() -> None:
    for name in ("backup", "restore", "verify"):
        module = importlib.import_module(f"mongo_backup.{name}")
        assert isinstance(module, types.ModuleType)
        assert isinstance(getattr(mongo_backup, name), types.ModuleType), name


def test_seed_api_signature_is_unchanged() -> None:
    parameters = inspect.signature(mongo_backup.backup_database).parameters
    assert list(parameters) == ["mongo_uri", "db_name", "out_root", "pretty"]
    assert parameters["pretty"].default is False


def test_every_public_error_is_in_the_tree() -> None:
    for name in mongo_backup.__all__:
        value = getattr(mongo_backup, name)
        if isinstance(value, type) and issubclass(value, BaseException):
            assert issubclass(value, errors.MongoBackupError), name


def test_the_package_face_loads_the_cores_on_first_use() -> None:
    """``import mongo_backup.x`` runs the face first: it must not load every core (and the
    driver) for a command that needs one of them."""
    import subprocess
    import sys

    code = (
        "import sys, mongo_backup; "
        "print(sorted(m for m in sys.modules if m.startswith(('pymongo', 'mongo_backup.'))))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert loaded.strip() == "['mongo_backup._version', 'mongo_backup.errors']"
    assert set(dir(mongo_backup)) >= set(mongo_backup.__all__)
    assert mongo_backup.run_backup is importlib.import_module("mongo_backup.backup.run").run_backup
