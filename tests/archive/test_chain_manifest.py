"""Chains without a server: manifest fields of increments, finding parents, --until plans.

The archives here hold only a manifest (a backup of a database with no collections), which
is all that chain resolution reads.
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from bson.timestamp import Timestamp

from mongo_backup.archive.chain import archives_in, backup_id_of, resolve_chain
from mongo_backup.archive.manifest import (
    CHANGES_FILE,
    CHANGES_NAME,
    CollectionEntry,
    Manifest,
    manifest_bytes,
    parse_manifest,
)
from mongo_backup.errors import ArchiveError, ConfigError
from mongo_backup.mongo.cluster_time import to_json
from mongo_backup.restore.replay import plan_chain


def _manifest(**fields: Any) -> Manifest:
    base = Manifest(
        database="shop",
        tool_version="test",
        json_format="canonical",
        pretty=False,
        compression="none",
        started_at="2026-11-26T12:00:00+00:00",
        finished_at="2026-11-26T12:00:01+00:00",
        server={},
        hosts=[],
    )
    return replace(base, **fields)


def _write(folder: Path, name: str, manifest: Manifest) -> tuple[Path, Manifest]:
    data = manifest_bytes(replace(manifest, backup_id=name))
    path = folder / f"{name}.tar"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path, parse_manifest(data)


def _point(seconds: int) -> dict[str, Any]:
    return {"cluster_time": to_json(Timestamp(seconds, 1)), "resume_token": {"_data": "x"}}


def _increment(parent: Manifest, name: str, start: int, end: int) -> Manifest:
    assert parent.checksum is not None
    return _manifest(
        kind="incremental",
        consistency="oplog",
        point=_point(end),
        parent={"id": parent.backup_id, "manifest_sha256": parent.checksum, "database": "shop"},
        increment={
            "mode": "changes",
            "field": None,
            "from": to_json(Timestamp(start, 1)),
            "to": to_json(Timestamp(end, 1)),
            "deletes_captured": True,
        },
        finished_at="2026-11-26T12:00:05+00:00",
    )


@pytest.fixture
def chain(tmp_path: Path) -> list[Path]:
    full_path, full = _write(
        tmp_path, "backup_20261126_120000", _manifest(consistency="oplog", point=_point(1000))
    )
    paths = [full_path]
    parent, start = full, 1000
    for index in range(1, 4):
        path, parent = _write(
            tmp_path,
            f"backup_20261126_12000{index}",
            _increment(parent, f"inc{index}", start, start + 10),
        )
        paths.append(path)
        start += 10
    return paths


def test_the_chain_is_found_full_backup_first(chain: list[Path]) -> None:
    links = resolve_chain(chain[-1])
    assert [link.path for link in links] == chain
    assert [link.manifest.kind for link in links] == [
        "full",
        "incremental",
        "incremental",
        "incremental",
    ]


def test_a_missing_parent_breaks_the_chain(chain: list[Path]) -> None:
    chain[1].unlink()
    with pytest.raises(ArchiveError, match=r"broken chain: .* backup_20261126_120001, which"):
        resolve_chain(chain[-1])


def test_a_different_parent_under_the_same_name_breaks_the_chain(chain: list[Path]) -> None:
    other = _manifest(consistency="oplog", point=_point(999), finished_at="2026-11-26T13:00:00Z")
    _write(chain[0].parent, backup_id_of(chain[0]), other)
    with pytest.raises(ArchiveError, match="checksum differs"):
        resolve_chain(chain[-1])


def test_until_picks_the_increments_that_start_before_it(chain: list[Path]) -> None:
    links = resolve_chain(chain[-1])
    assert plan_chain(links, None) == links
    assert plan_chain(links, Timestamp(1015, 0)) == links[:3]
    assert plan_chain(links, Timestamp(1010, 1)) == links[:2]
    assert plan_chain(links, Timestamp(1000, 1)) == links[:1]
    with pytest.raises(ConfigError, match=r"before backup_20261126_120000\.tar is consistent"):
        plan_chain(links, Timestamp(999, 5))


def test_until_needs_a_full_backup_with_a_point(tmp_path: Path) -> None:
    path, _ = _write(tmp_path, "backup_20261126_120000", _manifest())
    with pytest.raises(ConfigError, match="records no cluster time"):
        plan_chain(resolve_chain(path), Timestamp(2000, 0))


def test_archives_sort_by_the_time_in_their_names(tmp_path: Path) -> None:
    for name in ("backup_20261126_120000_10", "backup_20261126_120000_9", "backup_20261125_235959"):
        (tmp_path / f"{name}.tar.zst").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("x")
    assert [backup_id_of(p) for p in archives_in(tmp_path)] == [
        "backup_20261126_120000_10",
        "backup_20261126_120000_9",
        "backup_20261125_235959",
    ]


def _forged(manifest: Manifest, change: Any) -> bytes:
    data = json.loads(manifest_bytes(manifest))
    del data["manifest_sha256"]
    change(data)
    return manifest_bytes_of(data)


def manifest_bytes_of(data: dict[str, Any]) -> bytes:
    import hashlib

    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    data["manifest_sha256"] = hashlib.sha256(canonical.encode()).hexdigest()
    return json.dumps(data).encode()


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda d: d.update(kind="partial"), "unknown kind"),
        (lambda d: d.update(consistency="strong"), "unknown consistency"),
        (lambda d: d.update(kind="incremental"), "needs a parent"),
        (
            lambda d: d.update(
                kind="incremental",
                parent={"id": "../etc", "manifest_sha256": "0" * 64, "database": "shop"},
            ),
            "parent link is malformed",
        ),
        (
            lambda d: d.update(
                kind="incremental", parent={"id": "b", "manifest_sha256": "xyz", "database": "s"}
            ),
            "parent link is malformed",
        ),
        (lambda d: d.update(increment={"mode": "magic"}), "unknown increment mode"),
        (lambda d: d.update(backup_id="a/b"), "malformed backup id"),
    ],
)
def test_hostile_chain_fields_are_refused(change: Any, problem: str) -> None:
    with pytest.raises(ArchiveError, match=problem):
        parse_manifest(_forged(_manifest(), change))


def _changes_entry(**fields: Any) -> CollectionEntry:
    return CollectionEntry(
        **{"name": CHANGES_NAME, "type": "changes", "file": CHANGES_FILE, **fields}
    )


def test_the_changes_entry_has_one_name_and_file() -> None:
    good = parse_manifest(manifest_bytes(_manifest(collections=[_changes_entry()])))
    assert good.changes is not None and good.changes.file == CHANGES_FILE
    for bad in (
        [_changes_entry(name="orders")],
        [_changes_entry(file="orders.jsonl")],
        [_changes_entry(), _changes_entry()],
    ):
        with pytest.raises(ArchiveError):
            parse_manifest(manifest_bytes(_manifest(collections=bad)))


def test_a_parsed_manifest_keeps_its_checksum() -> None:
    raw = manifest_bytes(_manifest())
    assert parse_manifest(raw).checksum == json.loads(raw)["manifest_sha256"]
