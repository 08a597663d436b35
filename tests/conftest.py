"""Fixtures and rules shared by every test module.

The server: ``MONGO_TEST_URI`` if set (any real mongod or cluster), else one embedded
SecantusDB started for the whole session. Tests must pass against either, so a test
that needs a feature one server lacks skips, naming the feature from the one list in
``serverfeatures.py``; under ``MONGO_BACKUP_STRICT=1`` any other skip is a failure.

Tests that need a server (MongoDB or the S3 server) are marked ``server`` here, from
the fixtures they use; ``make test-fast`` runs the rest (``-m "not server"``).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from pymongo import MongoClient

from mongo_backup.cli.main import run_cli
from mongo_backup.mongo.embedded import EmbeddedServer
from serverfeatures import allowed_skip

REPO_ROOT = Path(__file__).resolve().parents[1]
BSON_CORPUS = REPO_ROOT.parent / "shared" / "bson-corpus"


@pytest.fixture(scope="session")
def mongo_uri() -> Iterator[str]:
    external = os.environ.get("MONGO_TEST_URI")
    if external:
        yield external
        return
    server = EmbeddedServer(extra_args=["--enable-test-commands"])
    server.start()
    try:
        yield server.uri
    finally:
        server.stop()


OPLOG_CAP = 50  # the oplog entries a pruning_server keeps


def _own_server(extra: list[str], why: str) -> EmbeddedServer:
    if os.environ.get("MONGO_TEST_URI"):
        from serverfeatures import lacks

        lacks("own-servers", f"{why} (MONGO_TEST_URI set)")
    return EmbeddedServer(extra_args=extra).start()


@pytest.fixture
def standalone_uri() -> Iterator[str]:
    """A SecantusDB of its own started --standalone (no change streams, no cluster time)."""
    server = _own_server(["--standalone"], "needs the embedded SecantusDB started --standalone")
    try:
        yield server.uri
    finally:
        server.stop()


@pytest.fixture
def pruning_server() -> Iterator[str]:
    """A SecantusDB of its own that keeps only the newest OPLOG_CAP oplog entries."""
    server = _own_server(
        ["--oplog-max-entries", str(OPLOG_CAP)], "needs its own server with a tiny oplog"
    )
    try:
        yield server.uri
    finally:
        server.stop()


@pytest.fixture
def own_server() -> Iterator[EmbeddedServer]:
    """A SecantusDB of its own, for a test that kills and restarts it."""
    server = _own_server([], "kills and restarts a server of its own")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def client(mongo_uri: str) -> Iterator[MongoClient[Any]]:
    connection: MongoClient[Any] = MongoClient(mongo_uri, serverSelectionTimeoutMS=10_000)
    try:
        yield connection
    finally:
        connection.close()


@pytest.fixture
def db_name(client: MongoClient[Any]) -> Iterator[str]:
    """A fresh database name, dropped after the test (whatever the test left in it)."""
    name = f"t_{uuid4().hex[:10]}"
    yield name
    client.drop_database(name)


@pytest.fixture
def target_db(client: MongoClient[Any]) -> Iterator[str]:
    """A second fresh database name (restore target), dropped after the test."""
    name = f"r_{uuid4().hex[:10]}"
    yield name
    client.drop_database(name)


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def out_lines(self) -> list[str]:
        return self.out.splitlines()


class CliRunner:
    """Runs ``mongo-backup`` in-process; each call returns exit code, stdout, stderr."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys = capsys

    def __call__(self, *argv: str | os.PathLike[str]) -> CliResult:
        self._capsys.readouterr()  # drop anything printed before this call
        root = logging.getLogger()
        saved = (list(root.handlers), root.level, logging.getLogger("mongo_backup").level)
        try:
            code = run_cli([os.fspath(arg) for arg in argv])
        except SystemExit as stop:  # argparse usage errors
            code = stop.code if isinstance(stop.code, int) else 2
        finally:
            # run_cli installs a handler on the captured stderr; put logging back so
            # later tests never write to a stream capsys has already closed.
            handlers, level, package_level = saved
            for handler in list(root.handlers):
                root.removeHandler(handler)
            for handler in handlers:
                root.addHandler(handler)
            root.setLevel(level)
            logging.getLogger("mongo_backup").setLevel(package_level)
        captured = self._capsys.readouterr()
        return CliResult(code, captured.out, captured.err)


@pytest.fixture(autouse=True)
def _private_state_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Restore progress goes to a per-test folder, never to the user's own state folder."""
    monkeypatch.setenv("MONGO_BACKUP_STATE_DIR", str(tmp_path_factory.mktemp("state")))


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> CliRunner:
    return CliRunner(capsys)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No MONGO_* variables and a working directory without ``.env``."""
    for variable in ("MONGO_URI", "MONGO_DB"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def pytest_report_header(config: pytest.Config) -> str:
    target = "MONGO_TEST_URI" if os.environ.get("MONGO_TEST_URI") else "embedded SecantusDB"
    return f"mongo-backup tests against: {target} (python {sys.version.split()[0]})"


STRICT = os.environ.get("MONGO_BACKUP_STRICT") == "1"
# Fixtures that start or reach a server: a test using any of them is not a fast test.
SERVER_FIXTURES = {
    "mongo_uri",
    "moto_s3",
    "standalone_uri",
    "pruning_server",
    "own_server",
    "auth",
    "tls",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.server)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if not (STRICT and report.skipped) or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if not allowed_skip(reason):
        report.outcome = "failed"
        report.longrepr = (
            f"MONGO_BACKUP_STRICT: a skip must name a server feature from "
            f"tests/serverfeatures.py, not: {reason}"
        )
