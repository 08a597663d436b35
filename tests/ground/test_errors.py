"""One error tree: every exception class the package defines derives from
MongoBackupError, the tree drawn in errors.py's docstring is the real one, and the CLI
picks exit codes in one place (cli/exits.py) from results and errors."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from typing import Any, cast

import pytest

import mongo_backup
from mongo_backup import errors
from mongo_backup.cli.exits import exit_code_for, exit_code_for_error
from mongo_backup.restore.namespaces import CollectionOutcome
from mongo_backup.restore.run import RestoreResult
from mongo_backup.verify.run import VerifyResult


def package_exceptions() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(mongo_backup.__path__, "mongo_backup."):
        if info.name == "mongo_backup.__main__":
            continue  # importing it runs the CLI
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__.startswith("mongo_backup")
            ):
                found[name] = value
    return found


def test_every_exception_class_derives_from_the_base() -> None:
    classes = package_exceptions()
    assert "LockedError" in classes and "DestinationError" in classes  # the walk works
    strays = [n for n, c in classes.items() if not issubclass(c, errors.MongoBackupError)]
    assert strays == []


def test_the_docstring_tree_names_exactly_the_classes() -> None:
    drawn = set(re.findall(r"(?:── |^    )([A-Z]\w+)", errors.__doc__ or "", re.M))
    drawn |= (
        {"StoreFailed", "TooLarge"} if "StoreFailed / TooLarge" in (errors.__doc__ or "") else set()
    )
    assert drawn == set(package_exceptions())


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.ConfigError("x"), 2),
        (errors.ArchiveError("x"), 1),
        (errors.LockedError("x"), 1),
        (errors.Interrupted("x"), 130),
        (KeyboardInterrupt(), 130),
        (RuntimeError("a bug"), 1),
    ],
)
def test_errors_map_to_exit_codes(error: BaseException, code: int) -> None:
    assert exit_code_for_error(error) == code


def test_results_map_to_exit_codes() -> None:
    whole = RestoreResult(
        "a.tar", "shop", [CollectionOutcome("orders", "collection", 2)], False, 0.1
    )
    refused = CollectionOutcome("users", "collection", 2, problems=["index refused"])
    partial = RestoreResult("a.tar", "shop", [refused], False, 0.1)
    assert (whole.complete, partial.complete) == (True, False)
    assert (exit_code_for(whole), exit_code_for(partial)) == (0, 3)
    damaged = VerifyResult("a.tar", cast(Any, None), [], None, 0.1, chain_problems=["gone"])
    assert exit_code_for(damaged) == 1
    assert (exit_code_for(None), exit_code_for(True), exit_code_for(False)) == (0, 0, 1)
