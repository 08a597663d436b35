"""The tests' own writer of mongodump output folders: ``DB/COLL.bson`` (or ``.bson.gz``)
and ``DB/COLL.metadata.json`` as mongodump writes them, from documents given here (BSON
by pymongo's encoder), so no dump is ever fetched from anywhere."""

from __future__ import annotations

import gzip
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bson
from bson import json_util
from bson.json_util import CANONICAL_JSON_OPTIONS


@dataclass
class Dumped:
    documents: list[dict[str, Any]] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    indexes: list[dict[str, Any]] = field(default_factory=list)
    type: str = "collection"
    gzip: bool = False


def write_dump(folder: Path, db: str, collections: dict[str, Dumped]) -> Path:
    """``folder/db`` holding each collection as mongodump would; returns that folder."""
    target = folder / db
    target.mkdir(parents=True, exist_ok=True)
    for name, dumped in collections.items():
        stem = urllib.parse.quote(name, safe="")  # mongodump escapes "/" and the like
        indexes = [{"v": 2, "key": {"_id": 1}, "name": "_id_"}, *dumped.indexes]
        metadata = {
            "indexes": indexes if dumped.type != "view" else [],
            "uuid": "0123456789abcdef0123456789abcdef",
            "collectionName": name,
            "type": dumped.type,
            "options": dumped.options,
        }
        (target / f"{stem}.metadata.json").write_text(
            json_util.dumps(metadata, json_options=CANONICAL_JSON_OPTIONS)
        )
        if dumped.type == "view":
            continue
        data = b"".join(bson.encode(document) for document in dumped.documents)
        if dumped.gzip:
            with gzip.open(target / f"{stem}.bson.gz", "wb") as handle:
                handle.write(data)
        else:
            (target / f"{stem}.bson").write_bytes(data)
    return target


def write_oplog(dump: Path, entries: list[dict[str, Any]]) -> Path:
    """``dump/oplog.bson`` as ``mongodump --oplog`` writes it: raw oplog entries."""
    path = dump / "oplog.bson"
    path.write_bytes(b"".join(bson.encode(entry) for entry in entries))
    return path
