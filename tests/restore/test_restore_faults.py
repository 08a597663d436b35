"""Faults the chaos campaign found, kept as regression tests: a restore whose server is
SIGKILLed and restarted mid-insert ends with every document (acknowledged means durable),
and a backup that starts while the server refuses connections waits for it."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from conftest import CliRunner
from faultproxy import FaultProxy
from mongo_backup.mongo.embedded import EmbeddedServer
from restoretools import assert_same_bytes
from serverfeatures import lacks

DOCUMENTS = 20_000


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[EmbeddedServer]:
    if os.environ.get("MONGO_TEST_URI"):
        lacks("own-servers", "the test kills and restarts its server")
    server = EmbeddedServer(storage_path=str(tmp_path / "store")).start()
    try:
        yield server
    finally:
        server.stop()


def test_a_restore_survives_its_server_killed_mid_insert(
    cli: CliRunner, own_server: EmbeddedServer, tmp_path: Path
) -> None:
    client: MongoClient[Any] = MongoClient(own_server.uri, serverSelectionTimeoutMS=30_000)
    client.src.items.insert_many(
        [{"_id": i, "text": f"item {i:06d}" * 4} for i in range(DOCUMENTS)]
    )
    made = cli("backup", "--uri", own_server.uri, "--db", "src", "--out-dir", tmp_path / "out")
    assert made.code == 0, made.err
    client.close()
    with FaultProxy("127.0.0.1", own_server.port) as proxy:

        def kill_mid_insert() -> None:
            for _ in range(6000):  # at most 30 s
                if proxy.stats["to_server"] > 400_000:
                    own_server.kill()
                    time.sleep(1.0)
                    own_server.start()
                    return
                time.sleep(0.005)

        killer = threading.Thread(target=kill_mid_insert, daemon=True)
        killer.start()
        uri = f"mongodb://127.0.0.1:{proxy.port}/?directConnection=true"
        restored = cli(
            "restore", made.out.strip(), "--uri", uri, "--db", "dst", "--batch-size", "200",
            "--timeout", "20",
        )  # fmt: skip
        killer.join(60)
    assert restored.code == 0, restored.err
    assert "sending the batch again" in restored.err  # the kill happened mid-insert
    client = MongoClient(own_server.uri, serverSelectionTimeoutMS=30_000)
    assert assert_same_bytes(client, "src", "dst", "items") == DOCUMENTS
    client.close()


def test_a_backup_waits_for_a_server_that_refuses_connections(
    cli: CliRunner, mongo_uri: str, client: MongoClient[Any], db_name: str, tmp_path: Path
) -> None:
    if os.environ.get("MONGO_TEST_URI"):
        lacks("own-servers", "the proxy forwards plain TCP to the suite's own server")
    client[db_name].items.insert_many([{"_id": i} for i in range(100)])
    port = int(mongo_uri.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
    with FaultProxy("127.0.0.1", port) as proxy:
        proxy.refuse(2.0)  # a connection reset at the first ping used to end the backup
        result = cli(
            "backup", "--uri", f"mongodb://127.0.0.1:{proxy.port}/?directConnection=true",
            "--db", db_name, "--out-dir", tmp_path, "--timeout", "15",
        )  # fmt: skip
    assert result.code == 0, result.err
    assert proxy.stats["refused"] >= 1
