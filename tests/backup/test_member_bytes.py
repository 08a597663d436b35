"""Every member keeps its bytes: what the converter writes is part of the format.

Issue 15's rule: no speed-up may change what is kept. ``golden/member_bytes.json`` holds,
for a fixed dataset, the SHA-256 and counts of every data member's uncompressed bytes as
written by commit 4d38456, before the C converter (archive/_canonical.c) existed. Today's
backups must match it with the converter and without it (``MONGO_BACKUP_NO_ACCELERATOR=1``).
Re-record only for a deliberate format change: ``MONGO_BACKUP_RECORD_GOLDEN=1``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
from pathlib import Path
from typing import Any

import bson
import pytest
from bson import Binary, Code, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp
from bson.raw_bson import RawBSONDocument

from conftest import CliRunner
from mongo_backup.archive.reader import open_backup
from restoretools import backup_archive

GOLDEN = Path(__file__).parent / "golden" / "member_bytes.json"
WORDS = [
    "alpha",
    "Zoë",
    "naïve",
    "日本語",
    "emoji 😀",
    "tab\there",
    'quote"',
    "back\\slash",
    "line\u2028break",
    "next\u0085line",
    "ctl\x01\x1f",
    "slash/",
    "del\x7f",
]


def _orders(rng: random.Random) -> list[dict[str, Any]]:
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    return [
        {
            "_id": ObjectId(rng.randbytes(12)),
            "customer": f"{rng.choice(WORDS)} {index}",
            "status": rng.choice(["new", "paid", "shipped"]),
            "total": round(rng.uniform(0, 1000), 2),
            "ratio": rng.random(),
            "qty": rng.randint(-(2**31), 2**31 - 1),
            "big": Int64(rng.randint(-(2**63), 2**63 - 1)),
            "created": start + dt.timedelta(milliseconds=rng.randint(0, 10**10)),
            "items": [
                {"sku": rng.randbytes(4).hex(), "price": rng.uniform(-5, 5), "n": rng.randint(1, 9)}
                for _ in range(rng.randint(0, 4))
            ],
            "flags": {"gift": rng.random() < 0.5, "note": None, "tags": []},
            "blob": Binary(rng.randbytes(rng.randint(0, 40)), rng.choice([0, 4, 5, 0x80])),
            "ts": Timestamp(rng.randint(0, 2**32 - 1), rng.randint(0, 2**32 - 1)),
        }
        for index in range(3000)
    ]


def _oddities() -> list[dict[str, Any]]:
    values: list[Any] = [
        float("nan"),
        float("inf"),
        float("-inf"),
        -0.0,
        1e21,
        5e-324,
        3.0,
        Regex("a.b", "xi"),
        Code("f()"),
        Code("g()", {"s": 1}),
        Decimal128("-0"),
        Decimal128("1.50"),
        MinKey(),
        MaxKey(),
        Binary(b"old", 2),
        "nul\x00inside",
        {"$numberLong": "5"},
        {"$set": {"a": 1}},
        {"a": {"b": {"c": [[], {}]}}},
    ]
    return [{"_id": index, "v": value} for index, value in enumerate(values)]


def load(client: Any, db: str) -> None:
    rng = random.Random(15)
    for name, documents in (("orders", _orders(rng)), ("oddities", _oddities())):
        raws = [RawBSONDocument(bson.encode(document)) for document in documents]
        client[db][name].insert_many(raws)


def member_digests(archive: Path) -> dict[str, Any]:
    reader = open_backup(archive)
    try:
        return {
            entry.name: {"sha256": entry.sha256, "count": entry.count, "escaped": entry.escaped}
            for entry in reader.manifest.data_entries
        }
    finally:
        reader.close()


def test_members_keep_the_bytes_written_before_the_c_converter(
    cli: CliRunner,
    client: Any,
    mongo_uri: str,
    db_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    load(client, db_name)
    accelerated = member_digests(backup_archive(cli, mongo_uri, db_name, tmp_path / "a"))
    monkeypatch.setenv("MONGO_BACKUP_NO_ACCELERATOR", "1")
    pure = member_digests(backup_archive(cli, mongo_uri, db_name, tmp_path / "b"))
    if os.environ.get("MONGO_BACKUP_RECORD_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps(pure, indent=2, sort_keys=True) + "\n")
    assert accelerated == pure
    assert pure == json.loads(GOLDEN.read_text())
