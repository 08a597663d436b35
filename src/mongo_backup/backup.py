"""The backup core: a database to a folder of Extended JSON Lines, then to one archive.

Layout (the seed script's, kept exactly)::

    {out_dir}/backup_{YYYYmmdd_HHMMSS}/            while writing (UTC time stamp)
    {out_dir}/backup_data/backup_{ts}.tar[.gz|.zst] when done; the folder is removed

:func:`backup` returns a :class:`BackupResult`; it raises only for failures that leave
no archive (configuration, connection, an empty database, archiving itself). A
collection that fails is recorded in the manifest as failed, logged with its
traceback, and the run goes on (exit code 3).

A backup is planned first (:mod:`.checkpoint`): namespaces, then *units* of work, a
collection each or, above ``split_threshold``, one per ``_id`` range. The plan is saved
in the working folder before any data is read, and the units are exported by
:class:`~mongo_backup.exporter.UnitRunner`. ``resume=True`` (or a folder) loads the plan
of an unfinished backup instead and exports only what is missing; the result is the
same archive an uninterrupted run would have written (same bytes in every member,
because every collection with an ``_id`` index is read in ``_id`` order).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import encryption
from .archive_writer import COMPRESSIONS, SUFFIXES, private_file, remove_compressed, write_archive
from .backup_manifest import build_manifest
from .chain import find_base
from .change_capture import HistoryLost
from .checkpoint import remove_checkpoints
from .cluster_time import SnapshotCheck
from .consistency import Outcome, capture_increment, finish, start_reads
from .delivery import deliver_file, deliver_stream
from .destinations import DestinationError, LocalFolder, open_destination
from .errors import (
    EXIT_OK,
    EXIT_PARTIAL,
    ArchiveError,
    ConfigError,
    Interrupted,
)
from .exporter import NoProgress, Progress, UnitRunner
from .extjson import JSON_FORMATS, JsonFormat
from .locking import location_lock
from .manifest import MANIFEST_NAME, CollectionEntry, Manifest, manifest_bytes
from .mongo_source import MongoSource, connect
from .names import ARCHIVE_FOLDER, collection_filter
from .planning import new_plan, resumable_plan
from .redact import uri_secrets
from .retry import RetryPolicy

logger = logging.getLogger(__name__)


@dataclass
class BackupResult:
    archive: Path | None
    folder: Path
    manifest: Manifest
    duration: float
    exit_code: int
    url: str | None = None  # where --dest uploaded the archive

    @property
    def location(self) -> str:
        """What the CLI prints: the archive's URL, or its path."""
        return self.url or str(self.archive)

    @property
    def collections(self) -> list[CollectionEntry]:
        return self.manifest.collections

    def to_json(self) -> dict[str, Any]:
        return {
            "archive": str(self.archive) if self.archive else None,
            "url": self.url,
            "database": self.manifest.database,
            "kind": self.manifest.kind,
            "consistency": self.manifest.consistency,
            "point": self.manifest.point,
            "parent": self.manifest.parent,
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
    jobs: int = field(default_factory=lambda: default_jobs())
    split_threshold: int | None = None  # None: DEFAULT_SPLIT_THRESHOLD, reported sizes only
    retries: int = 5
    retry_delay: float = 0.5
    checkpoint_interval: float = 1.0
    resume: bool | Path = False  # True: the newest unfinished backup in out_dir
    lock_wait: float = 0.0  # seconds to wait for another run on out_dir to finish
    incremental: bool = False  # changes since the base backup (see increments.py)
    since_field: str | None = None  # incremental by this field; a full records its marks
    base: Path | None = None  # the backup an increment continues (default: the newest)
    dest: str | None = None  # upload the archive there (folder or storage URL)
    endpoint_url: str | None = None  # S3-compatible endpoint for --dest
    keep_local: bool = False  # keep the local archive after --dest uploaded it
    stream: bool = False  # --dest without a local archive file
    encrypt_to: list[str] = field(default_factory=list)  # age / SSH recipients

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
        if not 1 <= self.jobs <= 64:
            raise ConfigError("--jobs must be between 1 and 64")
        if self.split_threshold is not None and self.split_threshold < 1:
            raise ConfigError("--split-threshold must be positive")
        if not 0 <= self.retries <= 100:
            raise ConfigError("--retries must be between 0 and 100")
        if self.retry_delay < 0:
            raise ConfigError("--retry-delay must not be negative")
        if self.checkpoint_interval <= 0:
            raise ConfigError("--checkpoint-interval must be positive")
        if self.stream and not self.dest:
            raise ConfigError("--stream uploads as it goes: it needs --dest")
        if self.keep_local and not self.dest:
            raise ConfigError("--keep-local keeps the local copy of an upload: it needs --dest")
        if self.stream and self.keep_local:
            raise ConfigError("--stream writes no local archive to keep: drop --keep-local")
        if self.endpoint_url and not self.dest:
            raise ConfigError("--endpoint-url applies to --dest")
        if self.encrypt_to:
            encryption.recipients(self.encrypt_to)  # refuse a bad key before any work
        if self.dest:
            target = open_destination(self.dest, endpoint_url=self.endpoint_url)  # bad URL: now
            here = (Path(self.out_dir) / ARCHIVE_FOLDER).absolute()
            if isinstance(target, LocalFolder) and target.root.resolve() == here.resolve():
                raise ConfigError(
                    f"--dest {self.dest} is where the archive is written anyway "
                    f"({here}): leave --dest out"
                )
        if self.base is not None and not self.incremental:
            raise ConfigError("--base names the backup an increment continues: add --incremental")
        if self.since_field is not None and (
            not self.since_field or self.since_field.startswith("$") or "\x00" in self.since_field
        ):
            raise ConfigError(f"--since-field {self.since_field!r} is not a field name")


def default_jobs() -> int:
    """Collections exported at once: 2 on a 2-core machine, half the cores up to 8
    beyond (a database server on the same machine needs its share)."""
    return max(2, min(8, (os.cpu_count() or 2) // 2))


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
    location = opts.resume.parent if isinstance(opts.resume, Path) else Path(opts.out_dir)
    with location_lock(location, f"a backup of {opts.db!r}", wait=opts.lock_wait):
        return _locked_backup(opts, progress or NoProgress())


def _locked_backup(opts: BackupOptions, progress: Progress) -> BackupResult:
    started = time.perf_counter()
    plan, folder = resumable_plan(opts)
    resumed = plan is not None
    check = SnapshotCheck()
    client = connect(opts.uri, timeout=opts.timeout, event_listeners=[check])
    try:
        source = MongoSource(client, opts.db, uri_secrets(opts.uri))
        if plan is None:
            base = find_base(Path(opts.out_dir), opts.db, opts.base) if opts.incremental else None
            plan, folder = new_plan(source, opts, base)
        assert folder is not None
        runner = UnitRunner(
            source,
            folder,
            plan,
            jobs=opts.jobs,
            nice=opts.nice,
            policy=RetryPolicy(opts.retries, opts.retry_delay),
            checkpoint_interval=opts.checkpoint_interval,
            progress=progress,
        )
        wanted = collection_filter(opts.collections, opts.exclude)
        if plan.increment and plan.increment["mode"] == "changes":
            try:
                outcome = capture_increment(source, folder, plan, wanted)
            except HistoryLost:
                shutil.rmtree(folder, ignore_errors=True)  # nothing a --resume could finish
                raise
        else:
            start_reads(plan, resumed, folder)
            runner.run([unit for unit in plan.units if unit.file not in plan.done])
            if plan.increment:  # a --since-field increment: no change capture
                honoured = check.honoured and not source.snapshot_lost and not resumed
                outcome = Outcome(
                    "snapshot" if honoured and plan.consistency else "none", None, None
                )
            else:
                outcome = finish(client, source, folder, plan, check, wanted)
    finally:
        client.close()
    try:
        manifest = build_manifest(folder, plan, runner, opts, outcome)
        with private_file(folder / MANIFEST_NAME) as handle:
            handle.write(manifest_bytes(manifest))
        archive, url = _archive(folder, manifest, opts)
    except KeyboardInterrupt:
        raise Interrupted(
            f"interrupted; the partial backup is kept in {folder}: "
            "run the same backup with --resume to continue it"
        ) from None
    exit_code = EXIT_PARTIAL if manifest.failed else EXIT_OK
    took = time.perf_counter() - started
    return BackupResult(archive, folder, manifest, took, exit_code, url)


def _archive(
    folder: Path, manifest: Manifest, opts: BackupOptions
) -> tuple[Path | None, str | None]:
    """Write (or stream) the archive, then encrypt and upload it as asked: the local
    archive left, and the URL it was uploaded to."""
    archive_dir = Path(opts.out_dir) / ARCHIVE_FOLDER
    destination = archive_dir / f"{folder.name}{SUFFIXES[opts.compress]}"
    members = [(entry.file, entry.bytes) for entry in manifest.data_entries if entry.file]
    recipients = encryption.recipients(opts.encrypt_to) if opts.encrypt_to else []
    url: str | None = None
    local: Path | None = destination
    try:
        if opts.stream and opts.dest:
            local, url = (
                None,
                deliver_stream(
                    folder,
                    members,
                    manifest,
                    compression=opts.compress,
                    dest=opts.dest,
                    endpoint_url=opts.endpoint_url,
                    recipients=recipients,
                ),
            )
        else:
            archive_dir.mkdir(parents=True, exist_ok=True)
            write_archive(folder, members, destination, opts.compress)
    except OSError as error:
        raise ArchiveError(
            f"archiving failed ({error.strerror or error}); the exported files are kept in "
            f"{folder}: run the same backup with --resume to archive them"
        ) from error
    except DestinationError as error:
        raise DestinationError(
            f"{error}; the exported files are kept in {folder}: run the same backup with "
            "--resume to upload them"
        ) from error
    if opts.keep_folder:
        remove_compressed(folder, members)
        remove_checkpoints(folder)  # a kept folder is not an unfinished backup
    else:
        remove_checkpoints(folder)  # first: a half-removed folder is no unfinished backup
        shutil.rmtree(folder, ignore_errors=True)
    if local is not None:
        logger.info("archive written: %s", local)
        if recipients or opts.dest:
            local, url = deliver_file(
                local,
                manifest,
                dest=opts.dest,
                endpoint_url=opts.endpoint_url,
                recipients=recipients,
                keep_local=opts.keep_local,
            )
    return local, url


def backup_database(mongo_uri: str, db_name: str, out_root: str, pretty: bool = False) -> str:
    """The seed script's API: back up into ``out_root``, return the plain ``.tar``'s path."""
    result = backup(mongo_uri, db_name, out_root, pretty=pretty, compress="none")
    assert result.archive is not None
    return str(result.archive)


__all__ = ["BackupOptions", "BackupResult", "NoProgress", "Progress", "backup", "backup_database"]
