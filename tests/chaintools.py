"""Helpers for the increment and chain tests: database snapshots, points, change events.

A *snapshot* is what a restore must reproduce, read as raw bytes: for every collection,
``{encoded _id: raw document}`` plus its set of ``(index name, key)`` pairs. Two
snapshots are equal only if every document is byte-identical.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bson
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp

from bsontools import RAW_OPTIONS, documents_of, manifest_entry, read_archive_member
from conftest import CliRunner

CHANGES_MEMBER = "~changes.jsonl"
_READABLE: CodecOptions[Any] = CodecOptions(datetime_conversion=DatetimeConversion.DATETIME_AUTO)


@dataclass(frozen=True)
class CollectionState:
    documents: dict[bytes, bytes]  # BSON of {"_id": value} -> raw document
    indexes: frozenset[tuple[str, tuple[tuple[str, Any], ...]]]  # (name, key items)


Snapshot = dict[str, CollectionState]


def id_bytes(document: RawBSONDocument) -> bytes:
    """The document's ``_id`` as BSON ``{"_id": value}``: a key that keeps its type."""
    return bson.encode({"_id": document["_id"]}, codec_options=RAW_OPTIONS)


def snapshot(client: Any, db: str) -> Snapshot:
    """Every (non-system, non-view) collection of ``db`` as raw bytes and index keys."""
    database = client[db]
    state: Snapshot = {}
    for info in database.list_collections():
        name = info["name"]
        if name.startswith("system.") or info.get("type", "collection") == "view":
            continue
        collection = database.get_collection(name, codec_options=RAW_OPTIONS)
        documents = {id_bytes(doc): bytes(doc.raw) for doc in collection.find({})}
        indexes = frozenset(
            (str(spec["name"]), tuple(dict(spec["key"]).items()))
            for spec in collection.list_indexes()
        )
        state[name] = CollectionState(documents, indexes)
    return state


def _show(raw: bytes) -> str:
    return repr(bson.decode(raw, codec_options=_READABLE))


def assert_same_snapshot(actual: Snapshot, expected: Snapshot, what: str = "") -> None:
    """``actual`` equals ``expected``; on failure, says which collection and documents."""
    label = f"{what}: " if what else ""
    assert sorted(actual) == sorted(expected), f"{label}different collections"
    for name, want in expected.items():
        got = actual[name]
        assert got.indexes == want.indexes, f"{label}{name}: indexes differ"
        missing = [_show(key) for key in want.documents.keys() - got.documents.keys()]
        extra = [_show(key) for key in got.documents.keys() - want.documents.keys()]
        assert not missing and not extra, f"{label}{name}: missing {missing}, extra {extra}"
        different = [
            f"{_show(got.documents[key])} != {_show(raw)}"
            for key, raw in want.documents.items()
            if got.documents[key] != raw
        ]
        assert not different, f"{label}{name}: documents differ: {different[:3]}"


def manifest_json(cli: CliRunner, archive: Path) -> dict[str, Any]:
    """The manifest as ``inspect --json`` prints it."""
    result = cli("inspect", archive, "--json")
    assert result.code == 0, result.err
    data: dict[str, Any] = json.loads(result.out)
    return data


def point_of(cli: CliRunner, archive: Path) -> Timestamp:
    """The cluster time a backup stands at (its manifest's ``point``)."""
    point = manifest_json(cli, archive)["point"]
    assert point is not None, f"{archive.name} records no point"
    stamp = point["cluster_time"]["$timestamp"]
    return Timestamp(stamp["t"], stamp["i"])


def as_pair(ts: Timestamp) -> str:
    """``SECONDS:INC``, the cluster-time spelling of ``restore --until``."""
    return f"{ts.time}:{ts.inc}"


def as_iso(seconds: int) -> str:
    """The ISO-8601 spelling of ``restore --until`` (it covers that whole second)."""
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def change_events(archive: Path) -> list[dict[str, Any]]:
    """The change events an archive captured, decoded, in order ([] if it has none)."""
    try:
        text = read_archive_member(archive, CHANGES_MEMBER)
    except KeyError:
        return []
    return [bson.decode(raw, codec_options=_READABLE) for raw in documents_of(text)]


def changes_count(manifest: dict[str, Any]) -> int:
    """Events in the manifest's ``$changes`` entry (0 without one: nothing changed)."""
    try:
        entry = manifest_entry(manifest, "$changes")
    except KeyError:
        return 0
    assert (entry["type"], entry["file"]) == ("changes", CHANGES_MEMBER)
    count: int = entry["count"]
    return count


def archive_id(archive: Path) -> str:
    """An archive's backup id: its name without the archive suffix."""
    name = archive.name
    for suffix in (".tar.zst", ".tar.gz", ".tar"):
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name
