"""Point-in-time windows: the stretches of a database's history a location can restore to
any second of (``restore LOCATION --until TIME``), and the gaps between them.

A window is one chain: a full backup's point, then each increment's ``(from, to]`` up to
the newest increment that reaches it through its parents. A chain whose full backup (or
any link) is missing from the location covers nothing: its increments are *broken*.
Two windows of one database that do not touch leave a *gap*: history no backup holds
(a ``watch`` that was down, or history the server had lost).

Pure functions over :class:`~mongo_backup.location.catalog.StoredBackup` rows: ``list``
prints them, ``status`` judges them, ``prune --keep-window`` keeps them; and
:func:`archive_at`, which lists a location to pick the backup a restore starts from.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..archive.manifest import MANIFEST_NAME, ClusterTime
from ..archive.mongodump import is_mongodump
from ..destinations import LocalFolder, is_url
from ..errors import ConfigError
from ..names import ARCHIVE_FOLDER, ARCHIVE_NAME, id_order
from .catalog import StoredBackup, backups_at
from .transfer import open_location

logger = logging.getLogger(__name__)


@dataclass
class Window:
    database: str | None
    start: ClusterTime  # the full backup's point
    end: ClusterTime  # the newest point the chain reaches
    full: str  # the id of the chain's full backup
    newest: str  # the id of the backup that ends the window
    backups: int  # in the chain, full backup included

    def to_json(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "from": show_time(self.start),
            "to": show_time(self.end),
            "full": self.full,
            "newest": self.newest,
            "backups": self.backups,
        }


@dataclass
class Gap:
    database: str | None
    start: ClusterTime  # the end of the window before
    end: ClusterTime  # the start of the window after

    def to_json(self) -> dict[str, Any]:
        return {"database": self.database, "from": show_time(self.start), "to": show_time(self.end)}


def show_time(point: ClusterTime) -> str:
    when = dt.datetime.fromtimestamp(point[0], dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return f"{when} ({point[0]}:{point[1]})"


def root_of(backup: StoredBackup, by_id: dict[str, StoredBackup]) -> StoredBackup | None:
    """The full backup a backup's chain starts with; None if a link is missing."""
    current, seen = backup, set()
    while current.kind == "incremental":
        if current.parent is None or current.parent not in by_id or current.id in seen:
            return None
        seen.add(current.id)
        current = by_id[current.parent]
    return current


def windows(backups: Sequence[StoredBackup]) -> list[Window]:
    """One window per chain with known points, oldest first (by database, then start)."""
    by_id = {backup.id: backup for backup in backups}
    found: dict[str, Window] = {}
    for backup in sorted(backups, key=lambda b: (b.time, id_order(b.id))):
        root = root_of(backup, by_id)
        if root is None or root.window is None or backup.window is None:
            continue
        window = found.get(root.id)
        if window is None:
            window = found[root.id] = Window(
                backup.database, root.window[1], root.window[1], root.id, root.id, 0
            )
        window.backups += 1
        if backup.window[1] > window.end:
            window.end, window.newest = backup.window[1], backup.id
    return sorted(found.values(), key=lambda w: (w.database or "", w.start))


def gaps(found: Sequence[Window]) -> list[Gap]:
    """History between two windows of one database that neither covers."""
    holes: list[Gap] = []
    reached: dict[str | None, ClusterTime] = {}
    for window in found:
        before = reached.get(window.database)
        if before is not None and window.start > before:
            holes.append(Gap(window.database, before, window.start))
        if before is None or window.end > before:
            reached[window.database] = window.end
    return holes


def broken(backups: Sequence[StoredBackup]) -> list[StoredBackup]:
    """Increments whose chain misses a link: nothing restores them."""
    by_id = {backup.id: backup for backup in backups}
    return [b for b in backups if b.kind == "incremental" and root_of(b, by_id) is None]


def is_location(source: str) -> bool:
    """A folder of archives (an ``--out-dir`` or its ``backup_data``) or a storage URL
    that names no archive: ``restore`` then picks the backup (see :func:`backup_for`)."""
    if is_url(source):
        return ARCHIVE_NAME.match(source.rstrip("/").rsplit("/", 1)[-1]) is None
    path = Path(source)
    if not path.is_dir() or (path / MANIFEST_NAME).exists() or is_mongodump(path):
        return False  # a backup folder (maybe damaged: its reader says so), or a dump
    folder = path / ARCHIVE_FOLDER if (path / ARCHIVE_FOLDER).is_dir() else path
    return any(ARCHIVE_NAME.match(child.name) for child in folder.iterdir())


def archive_at(
    location: str, db: str | None, until: ClusterTime | None, endpoint_url: str | None
) -> str:
    """The path or URL of the archive a restore of ``location`` starts from."""
    destination = open_location(location, endpoint_url)
    chosen = backup_for(backups_at(destination), db, until, location)
    logger.info("restoring %s from %s", chosen.key, destination.url)
    if isinstance(destination, LocalFolder):
        return str(destination.root / chosen.key)
    return f"{destination.url.rstrip('/')}/{chosen.key}"


def backup_for(
    backups: Sequence[StoredBackup], db: str | None, until: ClusterTime | None, where: str
) -> StoredBackup:
    """The backup a restore of a location starts from: with ``until``, the oldest whose
    point is at or after it (its chain covers that moment, or a gap says so later);
    without, the newest. ``db`` picks among several databases (any other name is the
    target of a restore of a location with one database)."""
    databases = sorted({b.database for b in backups if b.database})
    if db is not None and db in databases:
        backups = [b for b in backups if b.database == db]
    elif len(databases) > 1:
        raise ConfigError(
            f"{where} holds backups of several databases ({', '.join(databases)}): "
            "name one with --db"
        )
    if not backups:
        raise ConfigError(f"{where} holds no backup to restore")
    if until is None:
        return backups[0]  # newest first
    for backup in sorted(backups, key=lambda b: (b.time, id_order(b.id))):
        if backup.window is not None and backup.window[1] >= until:
            return backup
    if all(backup.window is None for backup in backups):
        raise ConfigError(
            f"the backups in {where} record no point in time (encrypted without metadata, "
            "or taken on a standalone server): name the archive to restore"
        )
    newest = max((b for b in backups if b.window), key=lambda b: b.window or ((0, 0), (0, 0)))
    assert newest.window is not None
    raise ConfigError(
        f"--until {show_time(until)} is after the newest backup in {where} "
        f"({newest.key}, consistent at {show_time(newest.window[1])})"
    )
