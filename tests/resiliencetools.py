"""Helpers for the fault-injection and range-split tests: fail points, logs, archives.

Fail points are server-global: :func:`fail_point` always turns its fail point off again,
and skips the test (``lacks("fail-points")``, with the server's reason) when the server
refuses test commands.
"""

from __future__ import annotations

import datetime as dt
import random
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bson import Binary, Decimal128, Int64, MaxKey, MinKey, ObjectId
from pymongo.errors import OperationFailure

from bsontools import read_archive_member, read_manifest
from conftest import CliResult, CliRunner
from mongo_backup.mongo.connection import APP_NAME
from mongo_backup.mongo.source import UNKNOWN_DOCUMENT_BYTES
from serverfeatures import lacks

RETRY_WARNING = re.compile(r"WARNING .*; retry (\d+) of (\d+) in ")


def fast_failover_uri(uri: str) -> str:
    """``uri`` with a 500 ms heartbeat. After a "not primary" error the driver selects the
    server again only after its next heartbeat; SecantusDB answers the driver's awaitable
    ``hello`` only when its 10 s wait is over, so each such fault would cost 10 s."""
    if "heartbeatfrequencyms=" in uri.lower():
        return uri
    if "?" in uri:
        return f"{uri}&heartbeatFrequencyMS=500"
    has_path = "/" in uri.split("://", 1)[-1]
    return f"{uri}{'?' if has_path else '/?'}heartbeatFrequencyMS=500"


@contextmanager
def fail_point(client: Any, mode: str | dict[str, int], **data: Any) -> Iterator[None]:
    """``failCommand`` on for mongo-backup's connections (a real mongod honours
    ``appName``; SecantusDB applies it to every connection), off again afterwards."""
    command = {
        "configureFailPoint": "failCommand",
        "mode": mode,
        "data": {"appName": APP_NAME, **data},
    }
    try:
        client.admin.command(command)
    except OperationFailure as error:
        lacks("fail-points", error)
    try:
        yield
    finally:
        client.admin.command({"configureFailPoint": "failCommand", "mode": "off"})


def backup_cli(cli: CliRunner, uri: str, db: str, out: Path, *extra: str) -> CliResult:
    """``mongo-backup backup`` through :func:`fast_failover_uri`; any exit code."""
    return cli("backup", "--uri", fast_failover_uri(uri), "--db", db, "--out-dir", out, *extra)


def retry_warnings(stderr: str) -> list[str]:
    """The retry warning lines a run logged."""
    return [line for line in stderr.splitlines() if RETRY_WARNING.search(line)]


def retry_numbers(stderr: str) -> list[tuple[int, int]]:
    """(attempt, retries) of each retry warning, in order."""
    return [
        (int(match[1]), int(match[2]))
        for line in stderr.splitlines()
        if (match := RETRY_WARNING.search(line))
    ]


def filled(client: Any, db: str, name: str, count: int, pad: int = 40) -> None:
    """``count`` documents with int ``_id``s, inserted out of ``_id`` order."""
    ids = list(range(count))
    random.Random(count).shuffle(ids)
    docs = [{"_id": i, "n": {"x": i, "s": f"v{i}"}, "pad": "p" * pad} for i in ids]
    client[db][name].insert_many(docs)


def mixed_ids(per_type: int) -> list[Any]:
    """Scalar ``_id``s of many BSON types; numbers of every type stay distinct values.
    No embedded documents: SecantusDB orders those differently in its index walk and in
    its index bounds (a server quirk), so ranges of them would not line up there."""
    start = dt.datetime(2001, 1, 1, tzinfo=dt.UTC)
    ids: list[Any] = [True, False, MinKey(), MaxKey()]
    for n in range(per_type):
        ids += [
            4 * n - 600,  # int32, some negative
            Int64(4 * n + 1 - 600),
            4 * n + 2.5 - 600,
            Decimal128(f"{4 * n + 3 - 600}.25"),
            f"s{n:05d}-ü",
            ObjectId(f"{n:024x}"),
            start + dt.timedelta(seconds=n),
            Binary(n.to_bytes(4, "big")),
        ]
    return ids


def estimated_size(client: Any, db: str, name: str) -> int:
    """The size the planner splits by: the reported data size, else count x 1024."""
    stats = next(client[db][name].aggregate([{"$collStats": {"storageStats": {}}}]))
    size, count = stats["storageStats"].get("size"), stats["storageStats"]["count"]
    return int(size) if size else int(count) * UNKNOWN_DOCUMENT_BYTES


def collection_digests(archive: Path) -> dict[str, tuple[str, int, str | None]]:
    """{collection: (status, count, sha256)} from an archive's manifest."""
    return {
        entry["name"]: (entry["status"], entry["count"], entry.get("sha256"))
        for entry in read_manifest(archive)["collections"]
    }


def data_members(archive: Path) -> dict[str, bytes]:
    """{member name: bytes} of every collection file the manifest lists."""
    return {
        entry["file"]: read_archive_member(archive, entry["file"])
        for entry in read_manifest(archive)["collections"]
        if entry["file"]
    }
