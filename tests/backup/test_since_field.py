"""``backup --since-field`` and ``--incremental --since-field`` (issue 5, the seed's idea).

A full backup taken with ``--since-field updatedAt`` records, per collection, the largest
``updatedAt`` it held before any document was exported (its high-water mark). An
increment exports the documents whose ``updatedAt`` is at or after its base's mark
(``$gte``: documents sharing the mark's value are exported again, so none is missed when
many share one timestamp). Restore of an increment restores the full backup, then
upserts each increment's documents by ``_id``. Deletes are not captured, and neither is a
change that leaves ``updatedAt`` alone: both are stated and tested here as the mode's
semantics.

Every result is judged on raw BSON bytes per ``_id``, against the source database.
"""

from __future__ import annotations

import datetime as dt
import importlib
import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bson
import pytest
from bson import Int64, json_util
from bson.json_util import CANONICAL_JSON_OPTIONS

from bsontools import id_key, manifest_entry, member_docs_by_id, raw_docs_by_id, read_manifest
from conftest import CliResult, CliRunner
from restoretools import assert_single_error_line, backup_archive, index_specs, restore_cli

# The module, not a same-named function some package __init__ might re-export.
planning_module = importlib.import_module("mongo_backup.backup.planning")

FIELD = "updatedAt"
# Millisecond precision: what a BSON date holds, so values compare equal after a trip.
T = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
T_MILLIS = int(T.timestamp() * 1000)
NO_MARK_WARNING = "recorded no high-water mark"


def as_date(offset_ms: int) -> Any:
    return T + dt.timedelta(milliseconds=offset_ms)


def as_millis(offset_ms: int) -> Any:
    return Int64(T_MILLIS + offset_ms)


STAMPS: dict[str, Callable[[int], Any]] = {"date": as_date, "epoch_millis": as_millis}


def extjson(value: Any) -> Any:
    """Canonical Extended JSON of one value, as the manifest records a mark."""
    return json.loads(json_util.dumps(value, json_options=CANONICAL_JSON_OPTIONS))


def key(value: Any) -> str:
    """The ``id_key`` of a document whose ``_id`` is ``value``."""
    return id_key(bson.encode({"_id": value}))


def backup(cli: CliRunner, uri: str, db: str, out: Path, *extra: str) -> CliResult:
    return cli("backup", "--uri", uri, "--db", db, "--out-dir", out, "-q", *extra)


def full_with_marks(cli: CliRunner, uri: str, db: str, out: Path) -> Path:
    return backup_archive(cli, uri, db, out, "--since-field", FIELD)


def field_increment(cli: CliRunner, uri: str, db: str, out: Path, *extra: str) -> CliResult:
    """An increment that must succeed (its archive: ``Path(result.out.strip())``)."""
    result = backup(cli, uri, db, out, "--incremental", "--since-field", FIELD, *extra)
    assert result.code == 0, result.err
    return result


def archive_of(result: CliResult) -> Path:
    return Path(result.out.strip())


def restore_chain(cli: CliRunner, archive: Path, uri: str, target: str) -> None:
    result = restore_cli(cli, archive, uri, "--db", target)
    assert result.code == 0, result.err


def exported(archive: Path, collection: str) -> dict[str, bytes]:
    """{id_key: raw bytes} of the documents one backup holds for ``collection``."""
    entry = manifest_entry(read_manifest(archive), collection)
    return member_docs_by_id(archive, entry["file"])


def no_mark_warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if NO_MARK_WARNING in line]


@pytest.mark.parametrize("kind", sorted(STAMPS))
def test_documents_sharing_the_mark_are_exported_again_and_none_is_missed(
    cli: CliRunner,
    client: Any,
    mongo_uri: str,
    db_name: str,
    target_db: str,
    tmp_path: Path,
    kind: str,
) -> None:
    stamp = STAMPS[kind]
    events = client[db_name].events
    events.insert_many([{"_id": f"old{i}", FIELD: stamp(-60_000), "v": 0} for i in range(10)])
    events.insert_many([{"_id": f"tie{i}", FIELD: stamp(0), "v": 0} for i in range(50)])
    out = tmp_path / "out"
    full = full_with_marks(cli, mongo_uri, db_name, out)
    at_full = raw_docs_by_id(client, db_name, "events")
    full_entry = manifest_entry(read_manifest(full), "events")
    assert full_entry["count"] == 60
    assert full_entry["watermark"] == {"field": FIELD, "value": extjson(stamp(0))}
    assert "since" not in full_entry or full_entry["since"] is None

    # Changes that keep the mark's very value, and changes that move past it.
    events.update_many({"_id": {"$in": [f"tie{i}" for i in range(10)]}}, {"$set": {"v": 1}})
    events.update_many(
        {"_id": {"$in": [f"tie{i}" for i in range(10, 15)]}},
        {"$set": {"v": 2, FIELD: stamp(1_000)}},
    )
    events.insert_many([{"_id": f"same{i}", FIELD: stamp(0), "v": 3} for i in range(20)])
    events.insert_many([{"_id": f"later{i}", FIELD: stamp(5), "v": 4} for i in range(5)])
    events.update_one({"_id": "old3"}, {"$set": {"v": 5, FIELD: stamp(2_000)}})
    # Changed without touching updatedAt (older than the mark): invisible to this mode.
    silent = [f"old{i}" for i in range(3)]
    events.update_many({"_id": {"$in": silent}}, {"$set": {"v": 6}})

    increment = archive_of(field_increment(cli, mongo_uri, db_name, out))
    manifest = read_manifest(increment)
    assert manifest["kind"] == "incremental"
    entry = manifest_entry(manifest, "events")
    assert entry["since"] == {"field": FIELD, "value": extjson(stamp(0))}
    assert entry["watermark"] == {"field": FIELD, "value": extjson(stamp(2_000))}

    source = raw_docs_by_id(client, db_name, "events")
    wanted = (
        [f"tie{i}" for i in range(50)]
        + [f"same{i}" for i in range(20)]
        + [f"later{i}" for i in range(5)]
        + ["old3"]
    )
    expected = {key(value): source[key(value)] for value in wanted}
    assert entry["count"] == len(expected) == 76
    in_increment = exported(increment, "events")
    assert sorted(in_increment) == sorted(expected)
    assert in_increment == expected  # the latest bytes of each, not the full's
    for value in silent:  # by definition of the mode: not exported
        assert key(value) not in in_increment

    restore_chain(cli, increment, mongo_uri, target_db)
    restored = raw_docs_by_id(client, target_db, "events")
    assert sorted(restored) == sorted(source)
    silent_keys = {key(value) for value in silent}
    for name, raw in source.items():
        if name in silent_keys:
            assert restored[name] == at_full[name] != raw, name
        else:
            assert restored[name] == raw, name


class Clock:
    """Strictly increasing ``updatedAt`` values, one per change."""

    def __init__(self) -> None:
        self.now = T

    def tick(self) -> dt.datetime:
        self.now += dt.timedelta(seconds=1)
        return self.now


def test_chain_of_two_increments_restores_all_but_deletes(
    cli: CliRunner, client: Any, mongo_uri: str, db_name: str, target_db: str, tmp_path: Path
) -> None:
    clock = Clock()
    items = client[db_name].items

    def touch(ids: list[int], v: int) -> None:
        for value in ids:
            items.update_one({"_id": value}, {"$set": {"v": v, FIELD: clock.tick()}})

    items.insert_many([{"_id": i, FIELD: clock.tick(), "v": 0} for i in range(100)])
    out = tmp_path / "out"
    full = full_with_marks(cli, mongo_uri, db_name, out)

    items.insert_many([{"_id": i, FIELD: clock.tick(), "v": 1} for i in range(100, 110)])
    touch([0, 1, 2, 3, 4], 1)
    last_seen = {key(50): raw_docs_by_id(client, db_name, "items")[key(50)]}
    items.delete_one({"_id": 50})
    first = archive_of(field_increment(cli, mongo_uri, db_name, out))

    touch([100, 101, 2], 2)
    items.insert_many([{"_id": i, FIELD: clock.tick(), "v": 2} for i in range(110, 115)])
    before_deletes = raw_docs_by_id(client, db_name, "items")
    last_seen |= {key(3): before_deletes[key(3)], key(105): before_deletes[key(105)]}
    items.delete_many({"_id": {"$in": [3, 105]}})
    second = archive_of(field_increment(cli, mongo_uri, db_name, out, "--base", str(first)))

    manifests = [read_manifest(path) for path in (full, first, second)]
    assert manifests[0]["kind"] == "full" and manifests[0]["parent"] is None
    for parent, child in itertools.pairwise(manifests):
        assert child["kind"] == "incremental"
        assert child["parent"] == {
            "id": parent["backup_id"],
            "manifest_sha256": parent["manifest_sha256"],
            "database": db_name,
        }
        assert child["increment"]["mode"] == "field"
        assert child["increment"]["field"] == FIELD
        assert child["increment"]["deletes_captured"] is False
    # Each increment: the 5 changes + 10 inserts (first), 3 + 5 (second), plus the one
    # document that holds its base's mark (the newest write before that base).
    assert manifest_entry(manifests[1], "items")["count"] == 5 + 10 + 1
    assert manifest_entry(manifests[2], "items")["count"] == 3 + 5 + 1

    restore_chain(cli, second, mongo_uri, target_db)
    source = raw_docs_by_id(client, db_name, "items")
    restored = raw_docs_by_id(client, target_db, "items")
    # Deletes are not captured: each deleted document is back, as last backed up.
    assert sorted(set(restored) - set(source)) == sorted(last_seen)
    for name, raw in last_seen.items():
        assert restored[name] == raw
    different = [name for name, raw in source.items() if restored.get(name) != raw]
    assert not different, different[:5]


def test_increment_holds_the_changed_documents_and_those_at_the_mark(
    cli: CliRunner, client: Any, mongo_uri: str, db_name: str, tmp_path: Path
) -> None:
    n, k, sharing = 500, 7, 3
    docs = client[db_name].docs
    docs.insert_many(
        [{"_id": i, FIELD: as_date(min(i, n - sharing)), "pad": "x" * 50} for i in range(n)]
    )
    out = tmp_path / "out"
    full_with_marks(cli, mongo_uri, db_name, out)
    changed = list(range(10, 10 + k))
    docs.update_many({"_id": {"$in": changed}}, {"$set": {FIELD: as_date(10_000), "pad": "y"}})

    increment = archive_of(field_increment(cli, mongo_uri, db_name, out))
    entry = manifest_entry(read_manifest(increment), "docs")
    assert entry["count"] == k + sharing
    assert entry["count"] * 10 < n
    at_mark = list(range(n - sharing, n))
    assert sorted(exported(increment, "docs")) == sorted(key(i) for i in changed + at_mark)


def test_base_without_marks_exports_everything_once_with_a_warning(
    cli: CliRunner, client: Any, mongo_uri: str, db_name: str, target_db: str, tmp_path: Path
) -> None:
    db = client[db_name]
    db.alpha.insert_many([{"_id": i, FIELD: as_date(i * 1000)} for i in range(30)])
    db.beta.insert_many([{"_id": i, FIELD: as_date(i * 1000)} for i in range(20)])
    out = tmp_path / "out"
    full = backup_archive(cli, mongo_uri, db_name, out)  # no --since-field: no marks
    assert all(entry.get("watermark") is None for entry in read_manifest(full)["collections"])

    first = field_increment(cli, mongo_uri, db_name, out)
    warnings = no_mark_warnings(first.err)
    assert len(warnings) == 2, first.err
    assert any("alpha" in line for line in warnings) and any("beta" in line for line in warnings)
    assert all("WARNING" in line for line in warnings)
    manifest = read_manifest(archive_of(first))
    for name, count, top in (("alpha", 30, 29_000), ("beta", 20, 19_000)):
        entry = manifest_entry(manifest, name)
        assert entry["count"] == count
        assert entry["since"] == {"field": FIELD, "value": None}
        assert entry["watermark"] == {"field": FIELD, "value": extjson(as_date(top))}

    db.alpha.update_many({"_id": {"$in": [3, 4]}}, {"$set": {FIELD: as_date(100_000)}})
    second = field_increment(cli, mongo_uri, db_name, out)
    assert not no_mark_warnings(second.err), second.err
    manifest = read_manifest(archive_of(second))
    assert manifest_entry(manifest, "alpha")["count"] == 2 + 1  # + the one at the mark
    assert manifest_entry(manifest, "beta")["count"] == 1  # only the one at the mark

    restore_chain(cli, archive_of(second), mongo_uri, target_db)
    for name in ("alpha", "beta"):
        assert raw_docs_by_id(client, target_db, name) == raw_docs_by_id(client, db_name, name)


def test_collection_created_after_the_full_appears_whole(
    cli: CliRunner, client: Any, mongo_uri: str, db_name: str, target_db: str, tmp_path: Path
) -> None:
    db = client[db_name]
    db.old.insert_many([{"_id": i, FIELD: as_date(i)} for i in range(10)])
    out = tmp_path / "out"
    full_with_marks(cli, mongo_uri, db_name, out)
    # Half of the new collection's documents have no updatedAt at all: all are exported.
    db.fresh.insert_many([{"_id": i, FIELD: as_date(-i)} for i in range(8)])
    db.fresh.insert_many([{"_id": i, "untimed": True} for i in range(8, 15)])
    db.fresh.create_index("untimed", name="untimed_idx")

    result = field_increment(cli, mongo_uri, db_name, out)
    warnings = no_mark_warnings(result.err)
    assert len(warnings) == 1 and "fresh" in warnings[0], result.err
    manifest = read_manifest(archive_of(result))
    entry = manifest_entry(manifest, "fresh")
    assert entry["count"] == 15
    assert entry["since"] == {"field": FIELD, "value": None}
    assert entry["watermark"] == {"field": FIELD, "value": extjson(as_date(0))}
    assert exported(archive_of(result), "fresh") == raw_docs_by_id(client, db_name, "fresh")
    assert manifest_entry(manifest, "old")["count"] == 1  # only the one at its mark

    restore_chain(cli, archive_of(result), mongo_uri, target_db)
    for name in ("old", "fresh"):
        assert raw_docs_by_id(client, target_db, name) == raw_docs_by_id(client, db_name, name)
    assert "untimed_idx" in index_specs(client, target_db, "fresh")


def test_a_dotted_field_path_works_the_same(
    cli: CliRunner, client: Any, mongo_uri: str, db_name: str, target_db: str, tmp_path: Path
) -> None:
    nested = client[db_name].nested
    nested.insert_many([{"_id": i, "meta": {"at": as_millis(i)}, "v": 0} for i in range(20)])
    out = tmp_path / "out"
    full = backup_archive(cli, mongo_uri, db_name, out, "--since-field", "meta.at")
    mark = {"field": "meta.at", "value": extjson(as_millis(19))}
    assert manifest_entry(read_manifest(full), "nested")["watermark"] == mark
    nested.update_one({"_id": 4}, {"$set": {"v": 1, "meta.at": as_millis(50)}})
    result = backup(cli, mongo_uri, db_name, out, "--incremental", "--since-field", "meta.at")
    assert result.code == 0, result.err
    entry = manifest_entry(read_manifest(archive_of(result)), "nested")
    assert entry["since"] == mark
    assert sorted(exported(archive_of(result), "nested")) == sorted([key(4), key(19)])
    restore_chain(cli, archive_of(result), mongo_uri, target_db)
    assert raw_docs_by_id(client, target_db, "nested") == raw_docs_by_id(client, db_name, "nested")


def test_writes_between_the_start_and_the_mark_are_not_lost(
    cli: CliRunner,
    client: Any,
    mongo_uri: str,
    db_name: str,
    target_db: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two writes land after the backup has started (on a replica set: after the cluster
    time its reads are pinned to) but before its marks are read. Whatever the full
    backup's data then holds, full + increment must hold both writes.

    On a server that keeps snapshots (a real replica set), the full reads at the start
    time and so holds neither write, while its mark (read later, at the latest data) is
    w2's: the increment's ``$gte`` then skips w1. SecantusDB answers snapshot reads at
    the latest time (the backup falls back to capturing changes), so it passes there."""
    rows = client[db_name].rows
    rows.insert_many([{"_id": i, FIELD: as_date(0)} for i in range(5)])
    real_watermarks = planning_module.watermarks

    def racing(*args: Any, **kwargs: Any) -> Any:
        rows.insert_one({"_id": "w1", FIELD: as_date(1_000)})
        rows.insert_one({"_id": "w2", FIELD: as_date(2_000)})
        return real_watermarks(*args, **kwargs)

    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        patch.setattr(planning_module, "watermarks", racing)
        full_with_marks(cli, mongo_uri, db_name, out)
    increment = archive_of(field_increment(cli, mongo_uri, db_name, out))
    restore_chain(cli, increment, mongo_uri, target_db)
    assert raw_docs_by_id(client, target_db, "rows") == raw_docs_by_id(client, db_name, "rows")


def test_refused_options_exit_2_with_one_line(
    cli: CliRunner, client: Any, mongo_uri: str, db_name: str, tmp_path: Path
) -> None:
    client[db_name].c.insert_one({"_id": 1, FIELD: as_date(0)})
    out = tmp_path / "out"

    result = backup(cli, mongo_uri, db_name, out, "--base", str(tmp_path / "any.tar.zst"))
    assert result.code == 2
    assert "--incremental" in assert_single_error_line(result)
    for bad in ("$bad", ""):
        for extra in ((), ("--incremental",)):
            result = backup(cli, mongo_uri, db_name, out, "--since-field", bad, *extra)
            assert result.code == 2, (bad, extra)
            assert "--since-field" in assert_single_error_line(result)
    # Without -q too: nothing but the error line.
    result = cli(
        "backup", "--uri", mongo_uri, "--db", db_name, "--out-dir", out,
        "--incremental", "--since-field", FIELD,
    )  # fmt: skip
    assert result.code == 2
    assert "full backup first" in assert_single_error_line(result)
    assert not list(out.glob("backup_*")), "a refused backup left a working folder"
    assert not (out / "backup_data").exists() or not list((out / "backup_data").iterdir())


def test_increment_needs_a_backup_of_the_same_database(
    cli: CliRunner, client: Any, mongo_uri: str, db_name: str, target_db: str, tmp_path: Path
) -> None:
    client[db_name].c.insert_one({"_id": 1, FIELD: as_date(0)})
    client[target_db].c.insert_one({"_id": 1, FIELD: as_date(0)})
    out = tmp_path / "out"
    other = full_with_marks(cli, mongo_uri, target_db, out)
    result = backup(cli, mongo_uri, db_name, out, "--incremental", "--since-field", FIELD)
    assert result.code == 2
    assert_single_error_line(result)
    result = backup(
        cli, mongo_uri, db_name, out, "--incremental", "--since-field", FIELD, "--base", str(other)
    )
    assert result.code == 2
    assert target_db in assert_single_error_line(result)


def test_field_increment_cannot_follow_a_change_stream_increment(
    cli: CliRunner, client: Any, mongo_uri: str, db_name: str, tmp_path: Path
) -> None:
    client[db_name].c.insert_many([{"_id": i, FIELD: as_date(i)} for i in range(3)])
    out = tmp_path / "out"
    full_with_marks(cli, mongo_uri, db_name, out)
    changes = backup(cli, mongo_uri, db_name, out, "--incremental")
    assert changes.code == 0, changes.err  # the suite's servers all have change streams
    assert read_manifest(archive_of(changes))["increment"]["mode"] == "changes"
    result = backup(cli, mongo_uri, db_name, out, "--incremental", "--since-field", FIELD)
    assert result.code == 2
    assert "change-stream increment" in assert_single_error_line(result)


def test_inspect_and_verify_of_a_field_increment(
    cli: CliRunner, client: Any, mongo_uri: str, db_name: str, tmp_path: Path
) -> None:
    client[db_name].c.insert_many([{"_id": i, FIELD: as_date(i)} for i in range(5)])
    out = tmp_path / "out"
    full = full_with_marks(cli, mongo_uri, db_name, out)
    client[db_name].c.insert_one({"_id": 5, FIELD: as_date(10)})
    increment = archive_of(field_increment(cli, mongo_uri, db_name, out))
    full_manifest = read_manifest(full)

    shown = cli("inspect", increment)
    assert shown.code == 0, shown.err
    assert (
        f"incremental: documents whose {FIELD!r} moved on (deletes not captured)" in shown.out_lines
    )
    parent = (
        f"parent: {full_manifest['backup_id']} (manifest sha256 {full_manifest['manifest_sha256']})"
    )
    assert parent in shown.out_lines
    assert "full backup" in cli("inspect", full).out_lines

    checked = cli("verify", increment)
    assert checked.code == 0, checked.out + checked.err
    assert f"chain: {full.name} -> {increment.name}" in checked.out_lines
    assert checked.out_lines[-1] == "OK"
