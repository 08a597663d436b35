"""The backup core: a database to a folder of Extended JSON Lines, then to one archive.

Layout (the seed script's, kept exactly)::

    {out_dir}/backup_{YYYYmmdd_HHMMSS}/            while writing (UTC time stamp)
    {out_dir}/backup_data/backup_{ts}.tar[.gz|.zst] when done; the folder is removed

:func:`backup` returns a :class:`BackupResult`; it raises only for failures that leave
no archive (configuration, connection, an empty database, archiving itself). A
collection that fails is recorded in the manifest as failed, logged with its
traceback, and the run goes on (exit code 3).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from . import __version__
from .archive_writer import (
    COMPRESSIONS,
    SUFFIXES,
    private_file,
    remove_compressed,
    write_archive,
)
from .convert_worker import ConverterProcess
from .errors import EXIT_OK, EXIT_PARTIAL, ArchiveError, ConfigError, MongoBackupError
from .extjson import JSON_FORMATS, JsonFormat
from .manifest import MANIFEST_NAME, CollectionEntry, Manifest, manifest_bytes
from .mongo_source import Intent, MongoSource, connect
from .names import file_names
from .redact import hosts_of, scrub_text, uri_secrets

logger = logging.getLogger(__name__)

ARCHIVE_FOLDER = "backup_data"
FOLDER_PREFIX = "backup_"


class Progress(Protocol):
    """What the core reports while it works; the CLI draws it, tests may record it."""

    def start(self, name: str, total: int) -> None: ...
    def advance(self, name: str, documents: int) -> None: ...
    def finish(self, name: str) -> None: ...


class NoProgress:
    def start(self, name: str, total: int) -> None:
        pass

    def advance(self, name: str, documents: int) -> None:
        pass

    def finish(self, name: str) -> None:
        pass


@dataclass
class BackupResult:
    archive: Path | None
    folder: Path
    manifest: Manifest
    duration: float
    exit_code: int

    @property
    def collections(self) -> list[CollectionEntry]:
        return self.manifest.collections

    def to_json(self) -> dict[str, Any]:
        return {
            "archive": str(self.archive) if self.archive else None,
            "database": self.manifest.database,
            "collections": [
                {
                    "name": c.name,
                    "type": c.type,
                    "file": c.file,
                    "count": c.count,
                    "bytes": c.bytes,
                    "status": c.status,
                    "error": c.error,
                }
                for c in self.manifest.collections
            ],
            "duration_s": round(self.duration, 3),
            "exit_code": self.exit_code,
        }


@dataclass
class BackupOptions:
    uri: str
    db: str
    out_dir: Path = Path("backups")
    collections: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    json_format: JsonFormat = "canonical"
    pretty: bool = False
    compress: str = "zstd"
    batch_size: int = 1000
    keep_folder: bool = False
    allow_empty: bool = False
    timeout: float = 30.0
    nice: int = 10  # the converter's niceness: see convert_worker

    def check(self) -> None:
        if self.json_format not in JSON_FORMATS:
            raise ConfigError(f"--json-format must be one of {', '.join(JSON_FORMATS)}")
        if self.compress not in COMPRESSIONS:
            raise ConfigError(f"--compress must be one of {', '.join(COMPRESSIONS)}")
        if not 1 <= self.batch_size <= 100_000:
            raise ConfigError("--batch-size must be between 1 and 100000")
        if self.timeout <= 0:
            raise ConfigError("--timeout must be positive")
        if not 0 <= self.nice <= 19:
            raise ConfigError("--nice must be between 0 and 19")


def utc_stamp(now: dt.datetime | None = None) -> str:
    return (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%d_%H%M%S")


def claim_folder(out_dir: Path, stamp: str) -> Path:
    """Create a fresh working folder; a second run in the same second gets ``_1``, ..."""
    out_dir.mkdir(parents=True, exist_ok=True)
    archive_dir = out_dir / ARCHIVE_FOLDER
    for attempt in range(1000):
        name = f"{FOLDER_PREFIX}{stamp}" + (f"_{attempt}" if attempt else "")
        if any((archive_dir / f"{name}{suffix}").exists() for suffix in SUFFIXES.values()):
            continue
        try:
            os.mkdir(out_dir / name, 0o700)  # atomic: only one run can create it
        except FileExistsError:
            continue
        os.chmod(out_dir / name, 0o700)  # the umask may have narrowed or widened it
        return out_dir / name
    raise MongoBackupError(f"cannot create a working folder in {out_dir}")


def export_collection(
    source: MongoSource,
    intent: Intent,
    folder: Path,
    file_name: str,
    converter: ConverterProcess,
    opts: BackupOptions,
    progress: Progress,
) -> CollectionEntry:
    """Write one collection into ``folder``; returns its manifest entry with checksum."""
    progress.start(intent.name, source.estimated_count(intent.name))
    converter.open(
        folder, file_name, opts.compress, opts.keep_folder, opts.json_format, opts.pretty
    )
    try:
        for batch in source.raw_batches(intent.name, opts.batch_size):
            converter.write(batch)
            if not isinstance(progress, NoProgress):
                progress.advance(intent.name, _count_documents(batch))
        stats = converter.close()
    except BaseException:
        # No file for a failed collection: the manifest says it failed and why;
        # half a collection in the archive would only invite a partial restore.
        converter.discard()
        raise
    finally:
        progress.finish(intent.name)
    return _entry(
        intent,
        file=file_name,
        count=stats["count"],
        bytes=stats["bytes"],
        sha256=stats["sha256"],
        escaped=stats["escaped"],
    )


def _count_documents(batch: bytes) -> int:
    """Documents in a raw batch, for progress only: walks the length prefixes."""
    count = position = 0
    end = len(batch)
    while position < end:
        position += int.from_bytes(batch[position : position + 4], "little")
        count += 1
    return count


def _entry(intent: Intent, **fields: Any) -> CollectionEntry:
    """The manifest entry of a namespace: what the server said of it, plus ``fields``."""
    return CollectionEntry(
        name=intent.name,
        type=intent.type,
        options=intent.options,
        indexes=intent.indexes,
        uuid=intent.uuid,
        **{"file": None, **fields},
    )


def backup(
    uri: str,
    db: str,
    out_dir: str | os.PathLike[str] = "backups",
    *,
    progress: Progress | None = None,
    **options: Any,
) -> BackupResult:
    """Back up database ``db`` at ``uri`` into ``out_dir``; see :class:`BackupOptions`."""
    return run_backup(BackupOptions(uri=uri, db=db, out_dir=Path(out_dir), **options), progress)


def run_backup(opts: BackupOptions, progress: Progress | None = None) -> BackupResult:
    opts.check()
    progress = progress or NoProgress()
    secrets = uri_secrets(opts.uri)
    started = time.perf_counter()
    started_at = dt.datetime.now(dt.UTC)
    client = connect(opts.uri, timeout=opts.timeout)
    try:
        source = MongoSource(client, opts.db, secrets)
        server = source.server_info()
        intents = source.intents(opts.collections, opts.exclude)
        missing = sorted(set(opts.collections) - {intent.name for intent in intents})
        if missing:
            raise ConfigError(
                f"database {opts.db!r} has no collection named {', '.join(map(repr, missing))}"
            )
        if not intents and not opts.allow_empty:
            raise MongoBackupError(
                f"database {opts.db!r} has no collections to back up "
                "(wrong database name? pass --allow-empty to write an empty backup)"
            )
        if server["topology"] == "standalone":
            logger.warning(
                "standalone server: collections are read one after another, not at one moment"
            )
        folder = claim_folder(Path(opts.out_dir), utc_stamp(started_at))
        logger.info("backing up database %r (%d namespaces) into %s", opts.db, len(intents), folder)
        entries = _export_all(source, intents, folder, opts, progress)
    finally:
        client.close()

    manifest = Manifest(
        database=opts.db,
        tool_version=__version__,
        json_format=opts.json_format,
        pretty=opts.pretty,
        compression=opts.compress,
        started_at=started_at.isoformat(),
        finished_at=dt.datetime.now(dt.UTC).isoformat(),
        server=server,
        hosts=hosts_of(opts.uri),
        collections=entries,
    )
    with private_file(folder / MANIFEST_NAME) as handle:
        handle.write(manifest_bytes(manifest))
    archive = _archive(folder, manifest, opts)
    exit_code = EXIT_PARTIAL if manifest.failed else EXIT_OK
    return BackupResult(archive, folder, manifest, time.perf_counter() - started, exit_code)


def _export_all(
    source: MongoSource,
    intents: list[Intent],
    folder: Path,
    opts: BackupOptions,
    progress: Progress,
) -> list[CollectionEntry]:
    files = file_names(intent.name for intent in intents if intent.has_data)
    converter = ConverterProcess(opts.nice)
    try:
        return [
            _export_one(source, intent, folder, files, converter, opts, progress)
            for intent in intents
        ]
    finally:
        converter.shutdown()


def _export_one(
    source: MongoSource,
    intent: Intent,
    folder: Path,
    files: dict[str, str],
    converter: ConverterProcess,
    opts: BackupOptions,
    progress: Progress,
) -> CollectionEntry:
    if not intent.has_data:
        return _entry(intent)
    try:
        entry = export_collection(
            source, intent, folder, files[intent.name], converter, opts, progress
        )
    except (MongoBackupError, OSError, ValueError) as error:
        message = scrub_text(str(error), source.secrets)
        logger.error("collection %r failed: %s", intent.name, message, exc_info=True)
        return _entry(intent, status="failed", error=message)
    logger.info("%s: %d documents, %d bytes", intent.name, entry.count, entry.bytes)
    return entry


def _archive(folder: Path, manifest: Manifest, opts: BackupOptions) -> Path | None:
    archive_dir = Path(opts.out_dir) / ARCHIVE_FOLDER
    destination = archive_dir / f"{folder.name}{SUFFIXES[opts.compress]}"
    members = [(entry.file, entry.bytes) for entry in manifest.data_entries if entry.file]
    try:
        archive_dir.mkdir(parents=True, exist_ok=True)
        write_archive(folder, members, destination, opts.compress)
    except OSError as error:
        raise ArchiveError(
            f"archiving failed ({error.strerror or error}); the exported files are kept in {folder}"
        ) from error
    if opts.keep_folder:
        remove_compressed(folder, members)
    else:
        shutil.rmtree(folder, ignore_errors=True)
    logger.info("archive written: %s", destination)
    return destination


def backup_database(mongo_uri: str, db_name: str, out_root: str, pretty: bool = False) -> str:
    """The seed script's API: back up into ``out_root``, return the plain ``.tar``'s path."""
    result = backup(mongo_uri, db_name, out_root, pretty=pretty, compress="none")
    assert result.archive is not None
    return str(result.archive)


__all__ = ["BackupOptions", "BackupResult", "backup", "backup_database"]
