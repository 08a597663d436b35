"""``mongo-backup convert``: a mongodump output folder written as a mongo-backup archive.

The documents go through the same libbson conversion as a backup's (exact-bytes escape
lines included), every member gets its size, document count and SHA-256, and the
manifest records the options and index specs of mongodump's metadata. The archive is
assembled in a hidden working folder in ``out_dir`` and renamed into
``out_dir/backup_data/`` only when whole, so a failed conversion leaves nothing under an
archive's name. Its consistency is ``none`` (mongodump without ``--oplog`` reads the
collections one after another), or ``oplog`` with the dump's ``oplog.bson`` as the
``$changes`` member.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from pathlib import Path

from ..names import ARCHIVE_FOLDER, SUFFIXES, file_names
from .manifest import (
    CHANGES_FILE,
    CHANGES_NAME,
    MANIFEST_NAME,
    CollectionEntry,
    Manifest,
    manifest_bytes,
)
from .mongodump import MongodumpReader
from .writer import MemberWriter, write_archive

COPY_CHUNK = 1 << 20


def convert_mongodump(
    source: Path, out_dir: Path, compression: str = "zstd", tool_version: str = ""
) -> tuple[Path, Manifest]:
    """Write the mongodump folder ``source`` as an archive in ``out_dir``; returns the
    archive's path and its manifest. ArchiveError for a damaged or unsupported dump."""
    reader = MongodumpReader(source)
    dumped = reader.manifest
    archive_dir = Path(out_dir) / ARCHIVE_FOLDER
    archive_dir.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d_%H%M%S")
    name = _free_name(archive_dir, f"backup_{stamp}", compression)
    work = Path(tempfile.mkdtemp(prefix=".convert-", dir=out_dir))
    try:
        files = file_names(e.name for e in dumped.data_entries if e.type != "changes")
        files[CHANGES_NAME] = CHANGES_FILE  # mongodump --oplog: its entries as change events
        entries: list[CollectionEntry] = []
        converted = {}
        for entry, stream in reader.members():
            writer = MemberWriter(work, files[entry.name], compression, False)
            try:
                while chunk := stream.read(COPY_CHUNK):
                    writer.write(chunk)
                writer.close()
            except BaseException:
                writer.discard()
                raise
            documents = getattr(stream, "documents", 0)
            converted[entry.name] = (files[entry.name], documents, writer.bytes, writer.sha256)
        for entry in dumped.collections:
            if entry.name in converted:
                file, count, size, sha256 = converted[entry.name]
                entry = CollectionEntry(
                    entry.name, entry.type, file, entry.options, entry.indexes, entry.uuid,
                    count=count, bytes=size, sha256=sha256,
                )  # fmt: skip
            entries.append(entry)
        now = dt.datetime.now(dt.UTC).isoformat()
        manifest = Manifest(
            database=dumped.database,
            databases=dumped.databases,
            tool_version=tool_version,
            json_format="canonical",
            pretty=False,
            compression=compression,
            started_at=dumped.started_at,
            finished_at=now,
            server={"converted_from": "mongodump", "source": str(reader.folder)},
            hosts=[],
            collections=entries,
            consistency=dumped.consistency,
            backup_id=name,
        )
        (work / MANIFEST_NAME).write_bytes(manifest_bytes(manifest))
        members = [(e.file, e.bytes) for e in manifest.data_entries if e.file]
        destination = archive_dir / f"{name}{SUFFIXES[compression]}"
        write_archive(work, members, destination, compression)
        return destination, manifest
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _free_name(folder: Path, stem: str, compression: str) -> str:
    for attempt in range(1000):
        name = stem + (f"_{attempt}" if attempt else "")
        if not any((folder / f"{name}{suffix}").exists() for suffix in SUFFIXES.values()):
            return name
    return f"{stem}_{dt.datetime.now(dt.UTC).microsecond}"
