"""Helpers for the fault-injection and range-split tests: fail points, logs, archives.

Fail points are server-global: :func:`fail_point` always turns its fail point off again,
and skips the test (with the server's reason) when the server refuses test commands.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from pymongo.errors import OperationFailure

from bsontools import read_archive_member, read_manifest
from mongo_backup.mongo_source import APP_NAME

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
        pytest.skip(f"the server refuses configureFailPoint failCommand: {error}")
    try:
        yield
    finally:
        client.admin.command({"configureFailPoint": "failCommand", "mode": "off"})


def retry_warnings(stderr: str) -> list[str]:
    """The retry warning lines a run logged."""
    return [line for line in stderr.splitlines() if RETRY_WARNING.search(line)]


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
