"""Retention policy for ``prune``: which backups to keep and which to remove.

:func:`decide` is a pure function (no I/O, no clock) that applies a :class:`Policy` to
the backups at one location, with the rules of restic's ``forget``:

- Backups are sorted newest first; equal times are broken by id (the greater id counts
  as newer), so the result never depends on the input order.
- ``last N`` keeps the N newest backups.
- ``hourly/daily/weekly/monthly/yearly N`` keep the newest backup of each of the N most
  recent buckets that hold a backup. Buckets are calendar units in **UTC** (restic
  uses local time): hour, date, ISO year and week (so 2021-01-01 is in 2020-W53),
  month, year.
- As in restic, when a count is not used up by the time the oldest backup is reached,
  the oldest backup is kept too, even if its bucket already has a kept backup (reason
  ``"oldest daily snapshot (...)"``): this keeps the longest history the counts allow.
- ``-1`` (:data:`UNLIMITED`) for a count means every bucket.
- ``within D`` keeps every backup strictly newer than ``R - D``, where ``R`` is the
  time of the newest backup, not the current time: a location whose backups stopped
  long ago keeps its last stretch instead of losing everything.
- ``now`` is used for one thing only, as in restic: ``R`` is the newest backup not
  dated after ``now``, and backups dated after ``now`` are always kept by ``within``
  (a wrong clock then shows up as extra kept backups, never as lost ones). The count
  options ignore ``now``.
- ``window D`` (beyond restic) keeps point-in-time coverage of the last D before
  ``now``: every backup dated after ``now - D``, and the newest one at or before it
  (its chain covers that moment; the ancestor rule below keeps the chain's start).
- A backup is kept if any option keeps it; an empty policy raises ValueError (restic
  refuses it too) instead of removing every backup.

One rule goes beyond restic: a backup that a kept incremental continues is never
removed. After the policy, every present ancestor (parent, its parent, ... up to the
full backup) of every kept incremental is kept, with the single reason ``"needed by
kept incremental <id>"`` naming the newest kept incremental that needs it; backups the
policy keeps anyway get no such line. A missing parent ends the walk: that chain is
already broken, and the incremental is kept or removed by the policy alone.

Durations (:func:`parse_duration`) use restic's syntax, ``1y2m3d4h``, where ``m`` is
months. restic subtracts years and months on the calendar; a timedelta cannot, so here
a year is 365 days and a month 30 days: ``1y`` misses a leap day, ``12m`` is 360 days
(restic: 365 or 366). ``d`` and ``h`` are exact.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

from ..names import id_order

__all__ = ["UNLIMITED", "BackupRef", "Decision", "Policy", "decide", "parse_duration"]

UNLIMITED = -1
_KINDS = ("full", "incremental")
_HOUR = datetime.timedelta(hours=1)


@dataclass(frozen=True)
class BackupRef:
    """One backup at a location, as ``list`` sees it."""

    id: str
    time: datetime.datetime  # timezone-aware: when the backup was taken
    kind: str = "full"  # "full" or "incremental"
    parent: str | None = None  # id of the backup an incremental continues

    def __post_init__(self) -> None:
        _require_aware(self.time, f"time of backup {self.id}")
        if self.kind not in _KINDS:
            raise ValueError(f"backup {self.id}: kind must be 'full' or 'incremental'")


@dataclass(frozen=True)
class Policy:
    """The ``--keep-*`` options: counts of buckets (-1: unlimited) and a duration."""

    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0
    within: datetime.timedelta | None = None
    window: datetime.timedelta | None = None  # point-in-time coverage before now

    def __post_init__(self) -> None:
        # restic forbids negative counts other than "unlimited": older versions
        # silently removed snapshots that should have been kept when given one.
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, int) and value < UNLIMITED:
                raise ValueError(f"keep-{field.name} must be -1 (unlimited) or >= 0")
        if self.within is not None and self.within < datetime.timedelta(0):
            raise ValueError("keep-within must not be negative")
        if self.window is not None and self.window < datetime.timedelta(0):
            raise ValueError("keep-window must not be negative")

    def is_empty(self) -> bool:
        """True if no option keeps anything; a zero duration counts as unset, as in restic."""
        counts = (self.last, self.hourly, self.daily, self.weekly, self.monthly, self.yearly)
        return not any(counts) and not self.within and not self.window


@dataclass
class Decision:
    """The outcome: both lists newest first; ``reasons`` has one entry per kept backup."""

    keep: list[BackupRef]
    remove: list[BackupRef]
    reasons: dict[str, list[str]]


def _hourly(t: datetime.datetime) -> str:
    return t.strftime("%Y-%m-%d %H:00")


def _weekly(t: datetime.datetime) -> str:
    year, week, _ = t.isocalendar()
    return f"{year}-W{week:02d}"


# Per option: the bucket label of a UTC time. Two backups share a bucket exactly when
# their labels are equal, and the label is what the reason shows.
_BUCKETS: tuple[tuple[str, Callable[[datetime.datetime], str]], ...] = (
    ("hourly", _hourly),
    ("daily", lambda t: t.strftime("%Y-%m-%d")),
    ("weekly", _weekly),
    ("monthly", lambda t: t.strftime("%Y-%m")),
    ("yearly", lambda t: t.strftime("%Y")),
)


def decide(backups: Sequence[BackupRef], policy: Policy, now: datetime.datetime) -> Decision:
    """Split ``backups`` into kept and removed by ``policy`` (see the module docstring).

    Raises ValueError for an empty policy, a naive ``now``, duplicated ids or parent
    links that form a cycle.
    """
    if policy.is_empty():
        raise ValueError("refusing to remove every backup: give at least one --keep option")
    _require_aware(now, "now")
    by_id: dict[str, BackupRef] = {}
    for backup in backups:
        if backup.id in by_id:
            raise ValueError(f"backup id {backup.id} appears twice")
        by_id[backup.id] = backup
    ordered = sorted(backups, key=lambda b: (b.time, id_order(b.id)), reverse=True)
    reasons: dict[str, list[str]] = {}

    def add(backup: BackupRef, reason: str) -> None:
        reasons.setdefault(backup.id, []).append(reason)

    # restic lists "within" before the counts in each snapshot's reasons.
    if policy.within:
        _apply_within(ordered, policy.within, now, add)
    if policy.window:
        _apply_window(ordered, policy.window, now, add)
    last = len(ordered) if policy.last == UNLIMITED else policy.last
    for position, backup in enumerate(ordered[:last]):
        add(backup, f"last snapshot #{position + 1}")
    for name, label_of in _BUCKETS:
        _apply_buckets(ordered, name, getattr(policy, name), label_of, add)
    _keep_ancestors(ordered, by_id, reasons)

    return Decision(
        keep=[b for b in ordered if b.id in reasons],
        remove=[b for b in ordered if b.id not in reasons],
        reasons=reasons,
    )


def _apply_within(
    ordered: list[BackupRef],
    within: datetime.timedelta,
    now: datetime.datetime,
    add: Callable[[BackupRef, str], None],
) -> None:
    text = format_duration(within)
    reference = next((b.time for b in ordered if b.time <= now), None)
    try:
        cutoff = None if reference is None else reference - within
    except OverflowError:
        cutoff = None  # reaches before year 1: every backup is within
    for backup in ordered:
        if backup.time > now:
            add(backup, f"dated after now: kept by keep-within {text}")
        elif cutoff is None or backup.time > cutoff:
            add(backup, f"within {text} of the newest backup")


def _apply_window(
    ordered: list[BackupRef],
    window: datetime.timedelta,
    now: datetime.datetime,
    add: Callable[[BackupRef, str], None],
) -> None:
    text = format_duration(window)
    try:
        cutoff = now - window
    except OverflowError:
        cutoff = datetime.datetime.min.replace(tzinfo=datetime.UTC)
    for backup in ordered:  # newest first
        if backup.time > cutoff:
            add(backup, f"in the point-in-time window of {text}")
        else:
            add(backup, f"starts the point-in-time window of {text}")
            return


def _apply_buckets(
    ordered: list[BackupRef],
    name: str,
    count: int,
    label_of: Callable[[datetime.datetime], str],
    add: Callable[[BackupRef, str], None],
) -> None:
    previous: str | None = None
    for position, backup in enumerate(ordered):
        if count == 0:
            return
        label = label_of(backup.time.astimezone(datetime.UTC))
        if label != previous:
            add(backup, f"{name} snapshot ({label})")
            previous = label
            count = count - 1 if count > 0 else count
        elif position == len(ordered) - 1:
            # Counts left over at the oldest backup: restic keeps it as well.
            add(backup, f"oldest {name} snapshot ({label})")


def _keep_ancestors(
    ordered: list[BackupRef], by_id: dict[str, BackupRef], reasons: dict[str, list[str]]
) -> None:
    # Newest first, so a needed backup names the newest kept incremental needing it.
    for backup in [b for b in ordered if b.id in reasons and b.kind == "incremental"]:
        seen = {backup.id}
        current = backup
        while current.kind == "incremental" and current.parent is not None:
            if current.parent not in by_id:
                break  # chain already broken: nothing further to protect
            current = by_id[current.parent]
            if current.id in seen:
                raise ValueError(f"parent links form a cycle through backup {current.id}")
            seen.add(current.id)
            reasons.setdefault(current.id, [f"needed by kept incremental {backup.id}"])


def _require_aware(value: datetime.datetime, what: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware")


_DURATION_PART = re.compile(r"([0-9]+)([ymdh])")
_DURATION_HELP = (
    "expected numbers each followed by y (years), m (months), d (days) or h (hours), "
    "e.g. '7d', '36h' or '1y2m3d4h'"
)


def parse_duration(text: str) -> datetime.timedelta:
    """Parse a restic-style duration such as ``1y2m3d4h``, ``7d`` or ``36h``.

    Units may come in any order, each at most once; ``m`` is months, not minutes. A
    year is 365 days and a month 30 days (see the module docstring). Raises ValueError
    with the expected form for anything else, including negative numbers.
    """
    stripped = text.strip()
    if not stripped:
        raise ValueError(f"empty duration: {_DURATION_HELP}")
    amounts: dict[str, int] = {}
    position = 0
    while position < len(stripped):
        match = _DURATION_PART.match(stripped, position)
        if match is None:
            raise ValueError(f"invalid duration {text!r}: {_DURATION_HELP}")
        number, unit = match.groups()
        if unit in amounts:
            # restic lets the last one win silently; a typo should not shorten retention.
            raise ValueError(f"invalid duration {text!r}: unit {unit!r} given twice")
        amounts[unit] = int(number)
        position = match.end()
    days = 365 * amounts.get("y", 0) + 30 * amounts.get("m", 0) + amounts.get("d", 0)
    try:
        return datetime.timedelta(days=days, hours=amounts.get("h", 0))
    except OverflowError:
        raise ValueError(f"duration {text!r} is too large") from None


def format_duration(duration: datetime.timedelta) -> str:
    """``7d``, ``1d12h`` or ``5h``; timedelta's own form if not whole hours."""
    if duration % _HOUR:
        return str(duration)
    days, hours = divmod(duration // _HOUR, 24)
    return (f"{days}d" if days else "") + (f"{hours}h" if hours or not days else "")
