"""The restore core: a backup back into a database, byte for byte.

Order of work, as mongorestore's: check the whole backup first (unless told not to),
then per collection create it with its options, insert its documents, build its
indexes; views last, in dependency order. Documents go from the archive stream through
libbson straight to raw BSON and into ``insert_many`` as ``RawBSONDocument``: no Python
dicts, no unpacking to disk, never a whole collection in memory.

A collection that cannot be restored completely (duplicate ``_id``, documents the
validator refuses, an index or option the server refuses) is reported with counts and
the run goes on; the result's exit code is then 3.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymongo.errors
from pymongo.database import Database

from .archive import BackupReader, open_backup
from .errors import EXIT_OK, EXIT_PARTIAL, ArchiveError, ConfigError
from .extjson import iter_documents, iter_lines
from .manifest import CollectionEntry, Manifest
from .mongo_source import connect, from_extjson
from .redact import uri_secrets
from .restore_writer import InsertCounts, RawInserter
from .retry import driver_error_text
from .single_file import SingleFileReader, is_single_file
from .verify import verify

logger = logging.getLogger(__name__)

# Options the server reports that create() does not take back.
_NOT_CREATE_OPTIONS = {"uuid"}


@dataclass
class RestoreOptions:
    source: str
    uri: str
    db: str | None = None
    collections: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    drop: bool = False
    indexes: bool = True
    options: bool = True
    dry_run: bool = False
    bypass_validation: bool = False
    jobs: int = 2
    batch_size: int = 1000
    verify_first: bool = True
    timeout: float = 30.0

    def check(self) -> None:
        if not 1 <= self.jobs <= 64:
            raise ConfigError("-j must be between 1 and 64")
        if not 1 <= self.batch_size <= 100_000:
            raise ConfigError("--batch-size must be between 1 and 100000")


@dataclass
class CollectionOutcome:
    name: str
    type: str
    expected: int
    inserted: int = 0
    duplicates: int = 0
    rejected: int = 0
    failed: int = 0
    indexes_built: int = 0
    problems: list[str] = field(default_factory=list)
    action: str = "restore"  # what a dry run would do, or what was done

    @property
    def ok(self) -> bool:
        return not (self.problems or self.duplicates or self.rejected or self.failed)


@dataclass
class RestoreResult:
    source: str
    database: str
    collections: list[CollectionOutcome]
    dry_run: bool
    duration: float

    @property
    def exit_code(self) -> int:
        return EXIT_OK if all(c.ok for c in self.collections) else EXIT_PARTIAL

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "database": self.database,
            "dry_run": self.dry_run,
            "collections": [vars(c) | {"ok": c.ok} for c in self.collections],
            "duration_s": round(self.duration, 3),
            "exit_code": self.exit_code,
        }


def restore(source: str, uri: str, db: str | None = None, **options: Any) -> RestoreResult:
    """Restore the backup at ``source`` into database ``db`` (default: the backup's)."""
    return run_restore(RestoreOptions(source=str(source), uri=uri, db=db, **options))


def _open(opts: RestoreOptions) -> BackupReader:
    if is_single_file(Path(opts.source)):
        if len(opts.collections) != 1 or not opts.db:
            raise ConfigError(
                "restoring a single JSON file needs --db and exactly one --collection"
            )
        return SingleFileReader(Path(opts.source), opts.db, opts.collections[0])
    return open_backup(opts.source)


def run_restore(opts: RestoreOptions) -> RestoreResult:
    opts.check()
    started = time.perf_counter()
    if opts.verify_first:
        _verify_first(opts)
    with _open(opts) as reader:
        manifest = reader.manifest
        target = opts.db or manifest.database
        selected = _select(manifest, opts)
        client = connect(opts.uri, timeout=opts.timeout)
        try:
            database = client[target]
            restorer = _Restorer(database, opts, uri_secrets(opts.uri))
            outcomes = restorer.run(reader, selected)
        finally:
            client.close()
    return RestoreResult(opts.source, target, outcomes, opts.dry_run, time.perf_counter() - started)


def _verify_first(opts: RestoreOptions) -> None:
    """Refuse a damaged backup before a single document is written."""
    if is_single_file(Path(opts.source)):
        with _open(opts) as reader:
            for entry, stream in reader.members():
                for _ in iter_documents(iter_lines(stream, entry.file or ""), entry.file or ""):
                    pass
        return
    report = verify(opts.source)
    if not report.ok:
        raise ArchiveError(
            f"{opts.source}: {report.problems[0]} "
            "(nothing was restored; --no-verify skips this check)"
        )


def _select(manifest: Manifest, opts: RestoreOptions) -> list[CollectionEntry]:
    names = {entry.name for entry in manifest.collections}
    unknown = sorted(set(opts.collections) - names)
    if unknown:
        raise ConfigError(f"the backup has no collection named {', '.join(map(repr, unknown))}")
    return [
        entry
        for entry in manifest.collections
        if (not opts.collections or entry.name in opts.collections)
        and entry.name not in opts.exclude
    ]


class _Restorer:
    def __init__(self, database: Database[Any], opts: RestoreOptions, secrets: list[str]) -> None:
        self.db = database
        self.opts = opts
        self.secrets = secrets

    def _error(self, error: BaseException) -> str:
        return driver_error_text(error, self.secrets)

    def run(self, reader: BackupReader, selected: list[CollectionEntry]) -> list[CollectionOutcome]:
        chosen = {entry.name for entry in selected}
        existing = set(self.db.list_collection_names())
        outcomes: dict[str, CollectionOutcome] = {}
        for entry in selected:
            outcome = CollectionOutcome(entry.name, entry.type, entry.count)
            outcomes[entry.name] = outcome
            if entry.status != "ok":
                outcome.problems.append(
                    f"not in the backup: the backup failed for it ({entry.error})"
                )
            if entry.type != "view":
                self._prepare(entry, outcome, entry.name in existing)
        # Members stream in archive order; the unselected ones are read past, not held.
        for entry, stream in reader.members():
            if entry.name not in chosen or entry.type == "view":
                continue
            outcome = outcomes[entry.name]
            if not self.opts.dry_run:
                self._insert(entry, stream, outcome)
        for entry in selected:
            if entry.type != "view" and self.opts.indexes:
                self._build_indexes(entry, outcomes[entry.name])
        for entry in _views_in_order([e for e in selected if e.type == "view"]):
            self._create_view(entry, outcomes[entry.name], entry.name in existing)
        return list(outcomes.values())

    def _prepare(self, entry: CollectionEntry, outcome: CollectionOutcome, exists: bool) -> None:
        if exists and self.opts.drop:
            outcome.action = "drop and restore"
            if not self.opts.dry_run:
                self.db.drop_collection(entry.name)
            exists = False
        elif exists:
            outcome.action = "add to existing collection"
        if exists or self.opts.dry_run:
            return
        options = {k: v for k, v in entry.options.items() if k not in _NOT_CREATE_OPTIONS}
        if not self.opts.options:
            options = {k: v for k, v in options.items() if k in ("timeseries", "clusteredIndex")}
        if "clusteredIndex" in options and isinstance(options["clusteredIndex"], dict):
            options["clusteredIndex"] = {
                k: v for k, v in options["clusteredIndex"].items() if k != "v"
            }
        try:
            self.db.command("create", entry.name, **from_extjson(options))
        except pymongo.errors.OperationFailure as error:
            outcome.problems.append(f"collection options refused: {self._error(error)}")
            try:  # go on without the refused options, as a plain collection
                self.db.command("create", entry.name)
            except pymongo.errors.PyMongoError as second:
                outcome.problems.append(f"cannot create collection: {self._error(second)}")

    def _insert(self, entry: CollectionEntry, stream: Any, outcome: CollectionOutcome) -> None:
        assert entry.file is not None
        collection = self.db.get_collection(entry.name)
        counts = InsertCounts()
        with RawInserter(
            collection, self.opts.jobs, self.opts.bypass_validation, counts, self._error
        ) as inserter:
            batch: list[bytes] = []
            lines = iter_lines(stream, entry.file)
            for _number, raw in iter_documents(lines, entry.file, checked=self.opts.verify_first):
                batch.append(raw)
                if len(batch) >= self.opts.batch_size:
                    inserter.submit(batch)
                    batch = []
            if batch:
                inserter.submit(batch)
        outcome.inserted, outcome.duplicates = counts.inserted, counts.duplicates
        outcome.rejected, outcome.failed = counts.rejected, counts.failed
        outcome.problems.extend(counts.problems)
        logger.info("%s: %d of %d documents inserted", entry.name, counts.inserted, entry.count)
        if counts.duplicates:
            logger.warning(
                "%s: %d documents not inserted: their _id already exists (use --drop)",
                entry.name,
                counts.duplicates,
            )
        if counts.rejected:
            logger.warning(
                "%s: %d documents refused by the validator (--bypass-document-validation)",
                entry.name,
                counts.rejected,
            )

    def _build_indexes(self, entry: CollectionEntry, outcome: CollectionOutcome) -> None:
        specs = [
            {k: v for k, v in ix.items() if k != "ns"}
            for ix in entry.indexes
            if ix.get("name") != "_id_"
        ]
        if not specs or self.opts.dry_run:
            return
        try:
            self.db.command("createIndexes", entry.name, indexes=from_extjson(specs))
            outcome.indexes_built = len(specs)
            return
        except pymongo.errors.OperationFailure:
            pass  # find out which one: build them one at a time
        for spec in specs:
            try:
                self.db.command("createIndexes", entry.name, indexes=[from_extjson(spec)])
                outcome.indexes_built += 1
            except pymongo.errors.OperationFailure as error:
                message = f"index {spec.get('name')!r} refused: {self._error(error)}"
                outcome.problems.append(message)
                logger.warning("%s: %s", entry.name, message)

    def _create_view(
        self, entry: CollectionEntry, outcome: CollectionOutcome, exists: bool
    ) -> None:
        if exists and not self.opts.drop:
            outcome.action = "view exists, kept"
            return
        if self.opts.dry_run:
            outcome.action = "create view"
            return
        if exists:
            self.db.drop_collection(entry.name)
        options = from_extjson(
            {k: v for k, v in entry.options.items() if k not in _NOT_CREATE_OPTIONS}
        )
        try:
            self.db.command("create", entry.name, **options)
            outcome.action = "create view"
        except pymongo.errors.OperationFailure as error:
            outcome.problems.append(f"view refused: {self._error(error)}")


def _views_in_order(views: list[CollectionEntry]) -> list[CollectionEntry]:
    """Views on views after the views they read from; cycles cannot exist on a server."""
    by_name = {view.name: view for view in views}
    ordered: list[CollectionEntry] = []
    placed: set[str] = set()

    def place(view: CollectionEntry, depth: int = 0) -> None:
        if view.name in placed or depth > len(views):
            return
        parent = by_name.get(str(view.options.get("viewOn", "")))
        if parent is not None:
            place(parent, depth + 1)
        placed.add(view.name)
        ordered.append(view)

    for view in sorted(views, key=lambda v: v.name):
        place(view)
    return ordered


__all__ = ["RestoreOptions", "RestoreResult", "restore"]
