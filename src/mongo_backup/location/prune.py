"""The list and prune cores: what a location holds, and removing backups by a policy.

:func:`run_prune` is restic's ``forget --prune`` for mongo-backup archives: it locks the
location (a local folder; object stores have no lock), lists what is there, lets the
pure :func:`~mongo_backup.location.retention.decide` choose, and removes the rest
(unless ``dry_run``). The parent chain of a kept increment is always kept.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from .catalog import StoredBackup, backups_at, locked, plan_prune, remove
from .retention import Decision, Policy
from .transfer import open_location


@dataclass
class PruneOptions:
    location: str  # a folder (an --out-dir or its backup_data) or a storage URL
    policy: Policy
    dry_run: bool = False
    lock_wait: float = 0.0  # seconds to wait for another run on the location
    endpoint_url: str | None = None  # S3-compatible endpoint for s3:// URLs


@dataclass
class PruneResult:
    url: str  # the location as the destination names it
    dry_run: bool
    backups: list[StoredBackup]  # all that were there, newest first
    removed: list[StoredBackup]  # removed (or, with dry_run, that would be)
    reasons: dict[str, list[str]] = field(default_factory=dict)  # id -> why it is kept

    @property
    def kept(self) -> list[StoredBackup]:
        gone = {backup.id for backup in self.removed}
        return [backup for backup in self.backups if backup.id not in gone]

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "keep": [{"id": b.id, "reasons": self.reasons.get(b.id, [])} for b in self.kept],
            "remove": [b.key for b in self.removed],
        }


def list_backups(location: str, endpoint_url: str | None = None) -> list[StoredBackup]:
    """The backups at ``location`` (a folder or a storage URL), newest first."""
    return backups_at(open_location(location, endpoint_url))


def run_prune(options: PruneOptions, now: dt.datetime | None = None) -> PruneResult:
    """Remove what ``options.policy`` does not keep; an empty policy is a ConfigError."""
    destination = open_location(options.location, options.endpoint_url)
    with locked(destination, options.lock_wait):
        backups = backups_at(destination)
        try:
            decision: Decision = plan_prune(backups, options.policy, now or dt.datetime.now(dt.UTC))
        except ValueError as error:
            raise ConfigError(str(error)) from None
        gone = {ref.id for ref in decision.remove}
        removed = [backup for backup in backups if backup.id in gone]
        if not options.dry_run:
            remove(destination, removed)
    return PruneResult(destination.url, options.dry_run, backups, removed, decision.reasons)
