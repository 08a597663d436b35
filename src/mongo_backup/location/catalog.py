"""What a location holds: the backups there (``list``), and removing them by a retention
policy (``prune``).

A backup at a location is an object named ``backup_{YYYYmmdd_HHMMSS}[_N].tar[.gz|.zst][.age]``
at its top level. What is shown of it comes from the object's metadata (written by
``backup --dest``) and, for an archive in a local folder without metadata (a plain
``backup``), from its manifest. An encrypted archive shows only what its name and metadata
carry. The time of a backup is the UTC time in its name.

``prune`` keeps what :func:`mongo_backup.location.retention.decide` keeps (never the parent of a
kept increment) and removes the rest with their ``.sha256`` sidecars; in a local folder
it holds the folder's lock (see :mod:`.locking`) so that no backup runs meanwhile.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from ..archive.manifest import ClusterTime
from ..archive.reader import open_backup
from ..destinations import Destination, LocalFolder
from ..errors import MongoBackupError
from ..names import ARCHIVE_NAME, id_order
from .locking import location_lock
from .retention import BackupRef, Decision, Policy, decide
from .transfer import SHA_SUFFIX, recorded_digest

logger = logging.getLogger(__name__)


@dataclass
class StoredBackup:
    key: str
    id: str
    time: dt.datetime
    size: int
    database: str | None = None
    kind: str | None = None
    parent: str | None = None
    collections: int | None = None
    consistency: str | None = None
    encrypted: bool = False
    status: str = "unknown"
    window: tuple[ClusterTime, ClusterTime] | None = None  # see Manifest.window

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"time": self.time.isoformat()}


def _time_of(stamp: str) -> dt.datetime:
    return dt.datetime.strptime(stamp, "%Y%m%d_%H%M%S").replace(tzinfo=dt.UTC)


def backups_at(destination: Destination) -> list[StoredBackup]:
    """The backups at ``destination``, newest first."""
    found: list[StoredBackup] = []
    for info in destination.list():
        match = ARCHIVE_NAME.match(info.key)
        if match is None:
            continue  # another object, a sidecar, a sub-folder, an upload in progress
        backup = StoredBackup(
            key=info.key,
            id=match.group(1),
            time=_time_of(match.group(2)),
            size=info.size,
            encrypted=info.key.endswith(".age"),
        )
        _describe(destination, backup)
        found.append(backup)
    return sorted(found, key=lambda b: (b.time, id_order(b.id)), reverse=True)


def archive_ids(destination: Destination) -> frozenset[str]:
    """The ids of the archives at ``destination`` (names only: one listing)."""
    return frozenset(
        match.group(1)
        for info in destination.list()
        if (match := ARCHIVE_NAME.match(info.key)) is not None
    )


def _metadata(destination: Destination, key: str) -> dict[str, str]:
    """What the upload recorded of ``key``: its sidecar's metadata (the final word: see
    :mod:`.transfer`), else the object's own (uploads before the sidecar carried it)."""
    for described in (key + SHA_SUFFIX, key):
        stat = destination.stat(described)
        if stat is not None and stat.metadata and "mb_kind" in stat.metadata:
            return stat.metadata
    return {}


def _describe(destination: Destination, backup: StoredBackup) -> None:
    metadata = _metadata(destination, backup.key)
    if "mb_kind" in metadata:
        backup.database = unquote(metadata.get("mb_database", "")) or None
        backup.kind = metadata["mb_kind"]
        backup.parent = metadata.get("mb_parent") or None
        backup.collections = int(metadata.get("mb_collections", "0") or 0)
        backup.consistency = metadata.get("mb_consistency")
        backup.window = _window_of(metadata.get("mb_from"), metadata.get("mb_to"))
        verified = recorded_digest(destination, backup.key) is not None
        failed = int(metadata.get("mb_failed", "0") or 0)
        backup.status = (
            f"{failed} collection(s) failed" if failed else "ok" if verified else "no checksum"
        )
        return
    if isinstance(destination, LocalFolder) and not backup.encrypted:
        try:
            with open_backup(destination.root / backup.key) as reader:
                manifest = reader.manifest
        except MongoBackupError as error:
            backup.status = f"unreadable: {error}"
            return
        backup.database, backup.kind = manifest.database, manifest.kind
        backup.parent = (manifest.parent or {}).get("id")
        backup.collections = sum(e.is_collection for e in manifest.collections)
        backup.consistency = manifest.consistency
        backup.window = manifest.window
        backup.status = f"{len(manifest.failed)} collection(s) failed" if manifest.failed else "ok"


def _window_of(start: str | None, end: str | None) -> tuple[ClusterTime, ClusterTime] | None:
    try:
        first, last = (tuple(int(n) for n in str(text).split(":", 1)) for text in (start, end))
    except ValueError:
        return None
    if len(first) != 2 or len(last) != 2:
        return None
    return (first[0], first[1]), (last[0], last[1])


def plan_prune(backups: list[StoredBackup], policy: Policy, now: dt.datetime) -> Decision:
    """Which backups a policy keeps; ValueError for an empty policy. A backup whose kind
    is not known (no metadata) counts as a full backup."""
    refs = [
        BackupRef(
            id=b.id,
            time=b.time,
            kind=b.kind if b.kind in ("full", "incremental") else "full",
            parent=b.parent if b.kind == "incremental" else None,
        )
        for b in backups
    ]
    return decide(refs, policy, now)


def remove(destination: Destination, backups: list[StoredBackup]) -> None:
    """Remove ``backups`` (and their sidecars): the archive first, so that a stop in
    between leaves a sidecar without its archive, never an unverifiable archive."""
    for backup in backups:
        destination.delete(backup.key)
        destination.delete(backup.key + SHA_SUFFIX)
        logger.info("removed %s", backup.key)


@contextlib.contextmanager
def locked(destination: Destination, wait: float) -> Iterator[None]:
    """The location's lock for a local folder; object stores have none."""
    if isinstance(destination, LocalFolder):
        # The lock lives in the --out-dir, the parent of backup_data, where backups take it.
        folder = destination.root
        lock_folder = folder.parent if folder.name == "backup_data" else folder
        with location_lock(Path(lock_folder), "a prune", wait=wait):
            yield
    else:
        yield


__all__ = [
    "StoredBackup",
    "backups_at",
    "locked",
    "plan_prune",
    "remove",
]
