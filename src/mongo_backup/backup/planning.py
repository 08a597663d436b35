"""Planning a backup: the working folder, the namespaces, and the units of work.

A new backup claims a fresh working folder, lists the namespaces, cuts collections
larger than ``split_threshold`` into ``_id`` ranges, and saves the plan in the folder
(:mod:`.checkpoint`) before any data is read. ``--resume`` instead finds the newest
unfinished folder of the same database and loads its plan.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CheckpointError, ConfigError, MongoBackupError
from ..mongo.source import CollectionSize, Intent, MongoSource
from ..names import (
    ALL_DATABASES,
    ARCHIVE_FOLDER,
    FOLDER_PREFIX,
    SUFFIXES,
    collection_filter,
    file_names,
    scope_text,
    unmatched_patterns,
)
from .checkpoint import PLAN_NAME, Layout, Plan, Unit, encode_key, load_plan, save_plan
from .consistency import begin, mark_listed
from .increments import kept_query, plan_increment, watermarks

if TYPE_CHECKING:
    from ..archive.chain import Link

logger = logging.getLogger(__name__)

DEFAULT_SPLIT_THRESHOLD = 256 * 1024 * 1024
MAX_PARTS = 64


def utc_stamp(now: dt.datetime | None = None) -> str:
    return (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%d_%H%M%S")


def claim_folder(out_dir: Path, stamp: str, taken: frozenset[str] = frozenset()) -> Path:
    """Create a fresh working folder; a second run in the same second gets ``_1``, ...
    Names in ``taken`` (backups at the ``--dest``, which keeps no local copy) are skipped."""
    out_dir.mkdir(parents=True, exist_ok=True)
    archive_dir = out_dir / ARCHIVE_FOLDER
    for attempt in range(1000):
        name = f"{FOLDER_PREFIX}{stamp}" + (f"_{attempt}" if attempt else "")
        if name in taken or any(
            (archive_dir / f"{name}{suffix}").exists() for suffix in SUFFIXES.values()
        ):
            continue
        try:
            os.mkdir(out_dir / name, 0o700)  # atomic: only one run can create it
        except FileExistsError:
            continue
        os.chmod(out_dir / name, 0o700)  # the umask may have narrowed or widened it
        return out_dir / name
    raise MongoBackupError(f"cannot create a working folder in {out_dir}")


@dataclass(frozen=True)
class PlanRequest:
    """What planning needs to know of a backup request (see BackupOptions.plan_request)."""

    db: str
    hosts: list[str]  # where the data comes from, without credentials
    out_dir: Path
    layout: Layout
    collections: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    ns_include: list[str] = field(default_factory=list)  # DB.COLLECTION patterns
    ns_exclude: list[str] = field(default_factory=list)
    allow_empty: bool = False
    split_threshold: int | None = None
    since_field: str | None = None
    max_increment_bytes: int | None = None  # a change-stream increment stops near this size
    taken: frozenset[str] = frozenset()  # backup ids already at the destination
    query: dict[str, Any] | None = None  # --query, canonical Extended JSON
    databases: list[str] = field(default_factory=list)  # several named (db ALL_DATABASES)


def find_resumable(resume: bool | Path, out_dir: Path, db: str) -> tuple[Plan, Path] | None:
    """The plan and folder of the unfinished backup of ``db`` to continue: the folder
    ``resume`` names, or with ``resume=True`` the newest in ``out_dir``; None if none."""
    if not resume:
        return None
    folder: Path | None = resume if isinstance(resume, Path) else None
    if folder is None:
        folder = newest_unfinished(out_dir, db)
        if folder is None:
            logger.info("no unfinished backup of %r in %s: starting a new one", db, out_dir)
            return None
    try:
        plan = load_plan(folder)
    except CheckpointError as error:
        raise ConfigError(f"cannot resume: {error}") from None
    if plan.database != db:
        raise ConfigError(
            f"cannot resume: {folder} is a backup of database {plan.database!r}, not {db!r}"
        )
    done = sum(unit.file in plan.done for unit in plan.units)
    logger.info("resuming %s: %d of %d units already done", folder, done, len(plan.units))
    return plan, folder


def newest_unfinished(out_dir: Path, db: str) -> Path | None:
    """The newest working folder in ``out_dir`` with a checkpoint for database ``db``."""
    candidates = sorted(
        (path for path in out_dir.glob(f"{FOLDER_PREFIX}*") if (path / PLAN_NAME).is_file()),
        key=lambda path: path.name,
        reverse=True,
    )
    for folder in candidates:
        with contextlib.suppress(CheckpointError):
            if load_plan(folder).database == db:
                return folder
    return None


def new_plan(
    source: MongoSource, request: PlanRequest, base: Link | None = None
) -> tuple[Plan, Path]:
    """Plan a full backup, or with ``base`` an increment continuing it. Everything that
    must come before the first document is read happens here: the start of the
    backup's place in the server's history, and the ``--since-field`` marks."""
    started_at = dt.datetime.now(dt.UTC)
    server = source.server_info()
    if base is not None and request.since_field is None:
        return _changes_plan(source, request, base, started_at, server)
    # The start point first: a collection created or dropped after it is then either in
    # the listing or in the changes read from it (see consistency.finish).
    consistency, problem = begin(source.client, source, server["topology"])
    intents = source.intents(request.collections, request.exclude)
    missing = sorted(set(request.collections) - {intent.name for intent in intents})
    scope = scope_text(request.db)
    if missing:
        raise ConfigError(f"{scope} has no collection named {', '.join(map(repr, missing))}")
    if request.ns_include or request.ns_exclude:
        # A pattern that matches nothing is a mistake to say, not an empty backup.
        unmatched = unmatched_patterns(request.ns_include, request.db, [i.name for i in intents])
        if unmatched:
            raise ConfigError(
                f"--ns-include {', '.join(map(repr, unmatched))} matches no namespace of {scope}"
            )
        wanted = collection_filter([], [], request.db, request.ns_include, request.ns_exclude)
        intents = [intent for intent in intents if wanted(intent.name)]
    databases = _databases(request, intents)
    if not intents and not request.allow_empty:
        raise MongoBackupError(
            f"{scope} {'have' if request.db == ALL_DATABASES else 'has'} no collections to "
            "back up (wrong database name? pass --allow-empty to write an empty backup)"
        )
    if server["topology"] == "standalone":
        logger.warning(
            "standalone server: collections are read one after another, not at one moment"
        )
    if problem:
        logger.warning("%s", problem)
    mark_listed(source, consistency)
    increment = plan_increment(base, request.since_field, intents) if base is not None else None
    query = kept_query(base, request.query, request.collections)
    floors = increment["since"] if increment else {}
    # Read at the start point, as the documents will be: a write the reads do not see
    # then carries a value at or after the mark.
    marks = watermarks(source, intents, request.since_field, floors) if request.since_field else {}
    files = file_names(intent.name for intent in intents if intent.has_data)
    units = _units(source, intents, files, increment, request.split_threshold)
    plan, folder = _saved_plan(
        request,
        started_at,
        server,
        intents=[asdict(intent) for intent in intents],
        files=files,
        units=units,
        consistency=consistency,
        increment=increment,
        since_field=request.since_field,
        watermarks=marks,
        query=query,
        read={"preference": source.read_preference()},
        databases=databases,
    )
    what = "an increment of" if increment else "backing up"
    if databases is not None:
        plural = "s" * (len(databases) != 1)
        scope = f"{len(databases)} database{plural} ({', '.join(databases)})"
    logger.info("%s %s (%d namespaces) into %s", what, scope, len(intents), folder)
    return plan, folder


def _databases(request: PlanRequest, intents: list[Intent]) -> list[str] | None:
    """The databases a backup of several holds (None: a backup of one). Each one named
    must have something to back up: a typo is said, not an empty part."""
    if request.db != ALL_DATABASES:
        return None
    found = sorted({intent.name.partition(".")[0] for intent in intents})
    empty = sorted(set(request.databases) - set(found))
    if empty and not request.allow_empty:
        raise MongoBackupError(
            f"database {', '.join(map(repr, empty))} has no collections to back up "
            "(wrong database name? pass --allow-empty to write an empty backup)"
        )
    return sorted(set(found) | set(request.databases))


def _changes_plan(
    source: MongoSource,
    request: PlanRequest,
    base: Link,
    started_at: dt.datetime,
    server: dict[str, Any],
) -> tuple[Plan, Path]:
    """A change-stream increment: no collections are read, only the change events."""
    if server["topology"] == "standalone":
        raise ConfigError(
            "a change-stream increment needs a replica set or sharded cluster "
            "(on a standalone server use --since-field FIELD)"
        )
    if base.manifest.query is not None:
        raise ConfigError(
            f"{base.path.name} is a partial backup (--query): its increments are "
            "--since-field ones (a change stream cannot tell which documents match)"
        )
    increment = plan_increment(base, None, [])
    if request.max_increment_bytes is not None:
        increment["max_bytes"] = request.max_increment_bytes
    plan, folder = _saved_plan(
        request,
        started_at,
        server,
        intents=[],
        files={},
        units=[],
        increment=increment,
        databases=base.manifest.databases,  # several: the change stream covers them all
    )
    scope = scope_text(request.db)
    logger.info("the changes to %s since %s, into %s", scope, base.path.name, folder)
    return plan, folder


def _saved_plan(
    request: PlanRequest, started_at: dt.datetime, server: dict[str, Any], **fields: Any
) -> tuple[Plan, Path]:
    """A new working folder with the plan saved in it, before any data is read."""
    folder = claim_folder(Path(request.out_dir), utc_stamp(started_at), request.taken)
    plan = Plan(
        database=request.db,
        hosts=request.hosts,
        started_at=started_at.isoformat(),
        options=asdict(request.layout),
        server=server,
        **fields,
    )
    save_plan(folder, plan)
    return plan, folder


def _units(
    source: MongoSource,
    intents: list[Intent],
    files: dict[str, str],
    increment: dict[str, Any] | None,
    split_threshold: int | None,
) -> list[Unit]:
    # A --since-field increment reads few documents, through whatever plan the server
    # picks for the filter (an index on the field): one unordered unit, no size asked.
    since = increment["since"] if increment is not None else {}
    with_data = [intent for intent in intents if intent.has_data]
    filtered = {intent.name for intent in with_data if since.get(intent.name) is not None}
    planned = [intent.name for intent in with_data if intent.name not in filtered]
    sizes = source.sizes(planned, split_threshold is not None)
    units: list[Unit] = []
    for intent in with_data:
        file = files[intent.name]
        if intent.name in filtered:
            units.append(Unit(intent.name, file, file, ordered=False))
        else:
            units += plan_units(source, intent, sizes[intent.name], file, split_threshold)
    return units


def plan_units(
    source: MongoSource,
    intent: Intent,
    stats: CollectionSize,
    file: str,
    split_threshold: int | None,
) -> list[Unit]:
    """One unit for the collection, or one per ``_id`` range when it is larger than
    ``split_threshold`` bytes and can be read in ``_id`` order. With the default
    threshold (None) only sizes the server reports count: a guess from the document
    count does not split a collection unless a threshold was asked for."""
    size, known = stats.bytes, stats.known
    whole = Unit(intent.name, file, file, ordered=intent.ordered, size=size, average=stats.average)
    threshold = split_threshold or DEFAULT_SPLIT_THRESHOLD
    if not intent.ordered or size <= threshold or (split_threshold is None and not known):
        return [whole]
    parts = min(MAX_PARTS, -(-size // threshold))
    cuts = source.split_points(intent.name, parts)
    if not cuts:
        return [whole]
    bounds = [None, *map(encode_key, cuts), None]
    count = len(bounds) - 1
    logger.info("%s: %d bytes, read as %d _id ranges", intent.name, size, count)
    return [
        Unit(
            intent.name,
            f"{file}.part{index}",
            file,
            part=index,
            parts=count,
            lower=bounds[index],
            upper=bounds[index + 1],
            size=size // count,
            average=stats.average,
        )
        for index in range(count)
    ]
