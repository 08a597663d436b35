"""The status core (``mongo-backup status``): is a location's newest good backup fresh,
and can its chain be restored? A ready check for Nagios-style monitors and cron.

A backup is *good* when its status is ``ok`` (every collection backed up, checksum
recorded), or when it is encrypted and carries no metadata to say otherwise. The report
is healthy when there is a good backup, the newest good one is younger than ``max_age``
(when given), the newest backup did not fail, and no increment at the location misses a
link of its chain.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from .catalog import StoredBackup, backups_at
from .retention import format_duration
from .transfer import open_location
from .windows import Gap, Window, broken, gaps, root_of, windows


@dataclass
class StatusOptions:
    location: str  # a folder (an --out-dir or its backup_data) or a storage URL
    db: str | None = None  # only the backups of this database
    max_age: dt.timedelta | None = None  # older than this: stale
    endpoint_url: str | None = None


@dataclass
class StatusReport:
    url: str
    database: str | None
    newest_good: StoredBackup | None
    age: dt.timedelta | None
    chain: int  # backups in the newest good backup's chain (0: broken or none)
    windows: list[Window] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        newest = self.newest_good
        return {
            "location": self.url,
            "database": self.database,
            "ok": self.ok,
            "problems": self.problems,
            "newest_good": newest.to_json() if newest else None,
            "age_s": self.age.total_seconds() if self.age is not None else None,
            "chain_length": self.chain,
            "windows": [window.to_json() for window in self.windows],
            "gaps": [gap.to_json() for gap in self.gaps],
        }


def run_status(options: StatusOptions, now: dt.datetime | None = None) -> StatusReport:
    destination = open_location(options.location, options.endpoint_url)
    backups = backups_at(destination)  # newest first
    return judge(backups, options, destination.url, now or dt.datetime.now(dt.UTC))


def judge(
    backups: list[StoredBackup], options: StatusOptions, url: str, now: dt.datetime
) -> StatusReport:
    """The report on ``backups`` (newest first); pure, for the tests."""
    if options.db is not None:
        backups = [b for b in backups if b.database == options.db]
    by_id = {backup.id: backup for backup in backups}
    good = [b for b in backups if _good(b)]
    newest = good[0] if good else None
    report = StatusReport(url, options.db, newest, None, 0)
    report.windows = windows(backups)
    report.gaps = gaps(report.windows)
    if newest is None:
        report.problems.append("no good backup" + (" of that database" if options.db else ""))
    else:
        report.age = now - newest.time
        root = root_of(newest, by_id)
        if root is None:
            report.problems.append(f"{newest.key}: its chain misses a backup")
        else:
            report.chain = _chain_length(newest, by_id)
        if options.max_age is not None and report.age > options.max_age:
            report.problems.append(
                f"the newest good backup is {_format_age(report.age)} old "
                f"(more than {format_duration(options.max_age)})"
            )
    if backups and backups[0] is not newest and not _good(backups[0]):
        report.problems.append(
            f"the newest backup {backups[0].key} is not good: {backups[0].status}"
        )
    for backup in broken(backups):
        if backup is not newest:
            report.problems.append(f"{backup.key}: its chain misses a backup")
    return report


def _good(backup: StoredBackup) -> bool:
    # An encrypted archive written without --dest carries no metadata: its name and its
    # atomic rename are all there is to go by.
    return backup.status == "ok" or (backup.encrypted and backup.status == "unknown")


def _chain_length(backup: StoredBackup, by_id: dict[str, StoredBackup]) -> int:
    length, current = 1, backup
    while current.kind == "incremental" and current.parent in by_id:
        current = by_id[str(current.parent)]
        length += 1
    return length


def _format_age(age: dt.timedelta) -> str:
    seconds = int(age.total_seconds())
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
