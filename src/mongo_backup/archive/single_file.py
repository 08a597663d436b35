"""A lone JSON Lines file (``mongoexport`` output, or one member taken out of a backup)
read through the same interface as a backup: one collection, no checksums."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from .manifest import CollectionEntry, Manifest
from .reader import BackupReader

SINGLE_FILE_SUFFIXES = (".json", ".jsonl", ".ndjson")


def is_single_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in SINGLE_FILE_SUFFIXES


class SingleFileReader(BackupReader):
    def __init__(self, path: Path, database: str, collection: str) -> None:
        self.path = path
        self.location = str(path)
        now = dt.datetime.now(dt.UTC).isoformat()
        entry = CollectionEntry(
            name=collection,
            type="collection",
            file=path.name,
            count=0,
            bytes=path.stat().st_size,
            sha256=None,
        )
        self.manifest = Manifest(
            database=database,
            tool_version="",
            json_format="unknown",
            pretty=False,
            compression="none",
            started_at=now,
            finished_at=now,
            server={},
            hosts=[],
            collections=[entry],
        )

    def members(self) -> Iterator[tuple[CollectionEntry, IO[bytes]]]:
        with open(self.path, "rb") as handle:
            yield self.manifest.collections[0], handle
