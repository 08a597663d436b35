"""``--metrics-file``, ``--on-success`` / ``--on-failure`` and ``status``: backups someone
can watch. The metrics file is read with prometheus_client's own parser."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pymongo import MongoClient

from conftest import CliRunner
from mongo_backup.cli.monitoring import Monitor, render

SECRET = "pa55-in-the-uri"


def metrics(path: Path) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def one(found: dict[str, Any], name: str) -> float:
    (value,) = found[f"mongo_backup_{name}"].values()
    return float(value)


def test_metrics_after_a_success_then_a_failure(
    cli: CliRunner, client: MongoClient[Any], mongo_uri: str, db_name: str, tmp_path: Path
) -> None:
    client[db_name].items.insert_many([{"_id": i} for i in range(25)])
    client[db_name].other.insert_one({"_id": 1})
    prom = tmp_path / "mongo_backup.prom"
    ok = cli("backup", "--uri", mongo_uri, "--db", db_name, "--out-dir", tmp_path / "o",
             "--metrics-file", prom, "-q")  # fmt: skip
    assert ok.code == 0, ok.err
    found = metrics(prom)
    assert one(found, "last_run_success") == 1
    assert one(found, "last_documents") == 26
    assert one(found, "chain_length") == 1
    assert one(found, "last_failure_timestamp_seconds") == 0
    per = found["mongo_backup_last_collection_documents"]
    assert per[(("collection", "items"), ("database", db_name))] == 25
    success = one(found, "last_success_timestamp_seconds")
    assert success > 1.7e9
    assert stat.S_IMODE(prom.stat().st_mode) & 0o044  # the collector must read it

    bad = cli("backup", "--uri", "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=200",
              "--db", db_name, "--out-dir", tmp_path / "o", "--timeout", "0.5",
              "--metrics-file", prom, "-q")  # fmt: skip
    assert bad.code == 1
    found = metrics(prom)
    assert one(found, "last_run_success") == 0
    assert one(found, "last_failure_timestamp_seconds") >= success
    assert one(found, "last_success_timestamp_seconds") == success  # kept over a failure
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".mongo_backup.prom")] == []


def test_metrics_file_is_replaced_whole(tmp_path: Path) -> None:
    """A scrape sees the old file or the new one: the new one is renamed over it."""
    prom = tmp_path / "m.prom"
    prom.write_text("old\n")
    inode = prom.stat().st_ino
    Monitor("backup", 'we"ird\\db\n', metrics_file=prom)._write({"last_run_success": 1})
    assert prom.stat().st_ino != inode
    families = {f.name: f for f in text_string_to_metric_families(prom.read_text())}
    family = families["mongo_backup_last_run_success"]
    assert family.samples[0].labels == {"database": 'we"ird\\db\n'}
    assert render({"watch_lag_seconds": None}, {"database": "d"}) == "\n"


def test_hooks_get_the_result_without_credentials(
    cli: CliRunner, client: MongoClient[Any], mongo_uri: str, db_name: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    client[db_name].items.insert_one({"_id": 1})
    seen, env_seen = tmp_path / "seen.json", tmp_path / "env.txt"
    monkeypatch.setenv("MONGO_PASSWORD", SECRET)
    hook = f"cat > {seen}; env > {env_seen}"
    ok = cli("backup", "--uri", mongo_uri, "--db", db_name, "--out-dir", tmp_path / "o",
             "--on-success", hook, "--on-failure", "false", "-q")  # fmt: skip
    assert ok.code == 0, ok.err
    report = json.loads(seen.read_text())
    assert report["event"] == "success" and report["database"] == db_name
    assert report["result"]["complete"] is True and report["result"]["archive"]
    assert SECRET not in env_seen.read_text()

    uri = f"mongodb://someone:{SECRET}@127.0.0.1:1/?serverSelectionTimeoutMS=200"
    failed = cli("backup", "--uri", uri, "--db", db_name, "--out-dir", tmp_path / "o",
                 "--timeout", "0.5", "--on-failure", hook, "-q")  # fmt: skip
    assert failed.code == 1
    report = json.loads(seen.read_text())
    assert report["event"] == "failure" and report["error"]
    assert SECRET not in seen.read_text() and SECRET not in failed.err


def test_a_failing_hook_is_a_warning_only(
    cli: CliRunner, client: MongoClient[Any], mongo_uri: str, db_name: str, tmp_path: Path
) -> None:
    client[db_name].items.insert_one({"_id": 1})
    ok = cli("backup", "--uri", mongo_uri, "--db", db_name, "--out-dir", tmp_path / "o",
             "--on-success", "echo nope >&2; exit 4")  # fmt: skip
    assert ok.code == 0
    assert "the success hook exited with 4 nope" in ok.err


# -- status ------------------------------------------------------------------------------


def test_status_exit_codes_fresh_stale_and_broken(
    cli: CliRunner, client: MongoClient[Any], mongo_uri: str, db_name: str, tmp_path: Path
) -> None:
    out = tmp_path / "o"
    client[db_name].items.insert_one({"_id": 1})
    empty = cli("status", out)
    assert empty.code == 1 and "no good backup" in empty.out
    assert cli("backup", "--uri", mongo_uri, "--db", db_name, "--out-dir", out, "-q").code == 0
    client[db_name].items.insert_one({"_id": 2})
    assert cli("backup", "--uri", mongo_uri, "--db", db_name, "--out-dir", out, "-q",
               "--incremental").code == 0  # fmt: skip
    client[db_name].items.insert_one({"_id": 3})
    newest = cli("backup", "--uri", mongo_uri, "--db", db_name, "--out-dir", out, "-q",
                 "--incremental")  # fmt: skip
    fresh = cli("status", out, "--max-age", "1h")
    assert fresh.code == 0, fresh.out
    assert "chain: 3 backup(s), whole" in fresh.out and "status: OK" in fresh.out
    as_json = json.loads(cli("status", out, "--json").out)
    assert as_json["ok"] and as_json["chain_length"] == 3 and len(as_json["windows"]) == 1

    stale = cli("status", out, "--max-age", "0h")
    assert stale.code == 1 and "older than" not in stale.out and "(more than 0h)" in stale.out

    middle = sorted((out / "backup_data").glob("backup_*"))[1]
    os.remove(middle)
    broken = cli("status", out, "--db", db_name)
    assert broken.code == 1
    assert f"{Path(newest.out.strip()).name}: its chain misses a backup" in broken.out
    assert "broken " in cli("list", out).out


def test_status_of_a_location_that_does_not_exist(cli: CliRunner, tmp_path: Path) -> None:
    result = cli("status", tmp_path / "nowhere")
    assert result.code == 1 and "no good backup" in result.out
    bad = cli("status", tmp_path, "--max-age", "soon")
    assert bad.code == 2 and "invalid duration" in bad.err


def test_a_metrics_file_that_cannot_be_written_is_refused_first(
    cli: CliRunner, tmp_path: Path
) -> None:
    for bad in (tmp_path / "no" / "such" / "m.prom", tmp_path):
        result = cli("backup", "--uri", "mongodb://127.0.0.1:1/", "--db", "d",
                     "--out-dir", tmp_path / "o", "--metrics-file", bad)  # fmt: skip
        assert result.code == 2 and "--metrics-file" in result.err
        assert not (tmp_path / "o").exists()
