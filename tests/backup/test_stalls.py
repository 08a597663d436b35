"""A server that stalls (accepts bytes, sends none) must not hold a backup or restore
forever: ``--stall-timeout`` turns the silence into a transient fault. A backup reads on
after its last ``_id``; a restore sends the batch again. Either names the host in one
line. The stall is made by the loopback fault proxy (tests/faultproxy.py)."""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.uri_parser import parse_uri

from conftest import CliRunner
from faultproxy import FaultProxy
from restoretools import assert_same_bytes
from serverfeatures import lacks

DOCUMENTS = 20_000


@pytest.fixture
def proxy(mongo_uri: str) -> Iterator[FaultProxy]:
    parsed = parse_uri(mongo_uri)
    host, port = parsed["nodelist"][0]
    local = host == "localhost" or ipaddress.ip_address(host).is_loopback
    if parsed["options"].get("tls") or parsed["username"] or not local:
        lacks("own-servers", "the proxy forwards plain TCP to a loopback server without users")
    with FaultProxy(host, port) as running:
        yield running


def proxied(proxy: FaultProxy) -> str:
    return f"mongodb://127.0.0.1:{proxy.port}/?directConnection=true"


def stall_when(proxy: FaultProxy, direction: str, after: int, seconds: float) -> threading.Thread:
    """Stall the proxy for ``seconds`` once ``after`` bytes went ``direction``."""
    started = threading.Event()

    def watch() -> None:
        for _ in range(6000):  # at most 30 s
            if proxy.stats[direction] > after:
                proxy.stall(seconds)
                started.set()
                return
            started.wait(0.005)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def source(client: MongoClient[Any], db_name: str) -> str:
    client[db_name]["items"].insert_many(
        [{"_id": i, "n": i, "text": f"item {i:06d} " + "x" * 60} for i in range(DOCUMENTS)]
    )
    return db_name


def test_a_backup_reads_on_after_a_stall(
    cli: CliRunner, proxy: FaultProxy, source: str, tmp_path: Path, mongo_uri: str
) -> None:
    # Above the server's own time to answer a find (about 1 s on SecantusDB for this
    # collection: it sorts before it answers), or every re-opened cursor would "stall".
    watcher = stall_when(proxy, "to_client", 200_000, seconds=6)
    result = cli(
        "backup", "--uri", proxied(proxy), "--db", source, "--out-dir", tmp_path,
        "--stall-timeout", "2.5", "--retries", "8", "--retry-delay", "0.1", "-j", "1",
        "--batch-size", "200", "--compress", "none",
    )  # fmt: skip
    watcher.join(30)
    assert result.code == 0, result.err
    assert f"stalled: no answer from 127.0.0.1:{proxy.port} for 2.5 s" in result.err
    archive = result.out.strip()
    checked = cli("verify", archive, "--against-uri", mongo_uri, "--against-db", source)
    assert checked.code == 0, checked.out + checked.err


@pytest.mark.parametrize("fault", ["stall", "drop"])
def test_a_restore_rides_out_a_stall_or_a_dropped_connection(
    cli: CliRunner,
    proxy: FaultProxy,
    source: str,
    target_db: str,
    tmp_path: Path,
    mongo_uri: str,
    client: MongoClient[Any],
    fault: str,
) -> None:
    """A batch whose answer was lost is sent again; what the first try had written counts
    as restored, not as a conflict (found by the chaos campaign: a dropped connection
    made the driver's silent retry report the batch's own documents as duplicates, exit 3,
    and every --resume after that met them again)."""
    made = cli("backup", "--uri", mongo_uri, "--db", source, "--out-dir", tmp_path)
    assert made.code == 0, made.err
    restore = ["restore", made.out.strip(), "--uri", proxied(proxy), "--db", target_db]
    if fault == "stall":
        watcher = stall_when(proxy, "to_server", 300_000, seconds=3)
    else:
        watcher = threading.Thread(target=lambda: drop_when(proxy, 300_000), daemon=True)
        watcher.start()
    done = cli(*restore, "--stall-timeout", "1", "--batch-size", "200", "-j", "2", "--json")
    watcher.join(30)
    assert done.code == 0, done.err
    expected = "stalled: no answer from" if fault == "stall" else "sending the batch again"
    assert expected in done.err
    assert assert_same_bytes(client, source, target_db, "items") == DOCUMENTS


def drop_when(proxy: FaultProxy, after: int) -> None:
    """Drop every connection once ``after`` bytes went to the server (bounded wait)."""
    for _ in range(6000):
        if proxy.stats["to_server"] > after:
            proxy.drop_all()
            return
        time.sleep(0.005)


def test_an_increment_rides_out_cut_connections(
    cli: CliRunner, proxy: FaultProxy, client: MongoClient[Any], mongo_uri: str, db_name: str,
    target_db: str, tmp_path: Path,
) -> None:  # fmt: skip
    """Found by the chaos campaign: a connection cut while an increment read the change
    stream ended the increment (exit 1) instead of resuming after the last event."""
    items = client[db_name]["items"]
    items.insert_many([{"_id": i, "n": 0} for i in range(2000)])
    out = tmp_path / "out"
    assert cli("backup", "--uri", mongo_uri, "--db", db_name, "--out-dir", out, "-q").code == 0
    for i in range(0, 2000, 2):
        items.update_one({"_id": i}, {"$set": {"n": i, "pad": "p" * 100}})
    # Every connection is cut after 40 kB for a while, then the path heals.
    proxy.cut_after(40_000, "to_client")
    threading.Timer(1.5, proxy.heal).start()
    result = cli("backup", "--uri", proxied(proxy), "--db", db_name, "--out-dir", out,
                 "--incremental", "--retries", "8", "--retry-delay", "0.2", "-q")  # fmt: skip
    assert result.code == 0, result.err
    assert "reading the change stream" in result.err and "after the last event read" in result.err
    restored = cli("restore", result.out.strip(), "--uri", mongo_uri, "--db", target_db, "-q")
    assert restored.code == 0, restored.err
    assert assert_same_bytes(client, db_name, target_db, "items") == 2000
