"""``mongo-backup list LOCATION`` and ``mongo-backup prune LOCATION``: what a location
holds, and removing backups by a retention policy (restic's ``forget`` rules)."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from .options import duration
from .tables import print_table

if TYPE_CHECKING:
    from ..location.catalog import StoredBackup

KEEP_OPTIONS = ("last", "hourly", "daily", "weekly", "monthly", "yearly")


def add_parser(commands: Any, parent: argparse.ArgumentParser, epilog: str) -> None:
    listing = commands.add_parser(
        "list",
        parents=[parent],
        epilog=epilog,
        help="list the backups at a location",
        description="List the backups in a folder (an --out-dir or its backup_data) or at "
        "an object store URL (s3://bucket/prefix, gs://..., az://..., file://...), newest "
        "first: time, database, kind and parent, size, collections, status.",
    )
    _location_arguments(listing)
    listing.add_argument("--json", action="store_true", help="one JSON array on stdout")
    listing.set_defaults(handler=run_list)
    prune = commands.add_parser(
        "prune",
        parents=[parent],
        epilog=epilog,
        help="remove backups by a retention policy",
        description="Remove the backups at LOCATION that no --keep option keeps (restic's "
        "forget rules; time buckets in UTC). A backup that a kept increment needs is always "
        "kept. With --dry-run nothing is removed.",
    )
    _location_arguments(prune)
    for name in KEEP_OPTIONS:
        prune.add_argument(
            f"--keep-{name}",
            type=int,
            default=0,
            metavar="N",
            help=f"keep the newest backup of each of the last N {name} periods (-1: all)"
            if name != "last"
            else "keep the N newest backups",
        )
    prune.add_argument(
        "--keep-within",
        type=duration,
        metavar="DURATION",
        help="keep every backup within DURATION (1y2m3d4h) of the newest one",
    )
    prune.add_argument(
        "--keep-window",
        type=duration,
        metavar="DURATION",
        help="keep point-in-time coverage (restore --until) of the last DURATION before now: "
        "every backup since, and the chain that reaches back to its start",
    )
    prune.add_argument("--dry-run", action="store_true", help="show what would go, remove nothing")
    prune.add_argument("--lock-wait", type=float, default=0.0, metavar="SECONDS")
    prune.add_argument("--json", action="store_true", help="one JSON object on stdout")
    prune.set_defaults(handler=run_prune_command)


def _location_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("location", metavar="LOCATION", help="folder or storage URL")
    parser.add_argument(
        "--endpoint-url", metavar="URL", help="S3-compatible endpoint (MinIO, Ceph, ...)"
    )


def _size(value: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024  # type: ignore[assignment]
    return str(value)


def _row(backup: StoredBackup, extra: list[str] | None = None) -> list[str]:
    kind = backup.kind or "?"
    if backup.parent:
        kind += f" of {backup.parent}"
    return [
        backup.time.strftime("%Y-%m-%d %H:%M:%S"),
        backup.key,
        backup.database or "?",
        kind,
        _size(backup.size),
        "?" if backup.collections is None else str(backup.collections),
        ("encrypted, " if backup.encrypted else "") + backup.status,
        *(extra or []),
    ]


HEADERS = ["time (UTC)", "archive", "database", "kind", "size", "collections", "status"]


def run_list(args: argparse.Namespace) -> None:
    # Imported here: a command loads its own core alone (see exits._READINGS).
    from ..location.catalog import backups_at
    from ..location.transfer import open_location

    destination = open_location(args.location, args.endpoint_url)
    backups = backups_at(destination)
    if args.json:
        print(json.dumps([b.to_json() for b in backups], ensure_ascii=False))
        return None
    print_table(f"backups at {destination.url}", HEADERS, [_row(b) for b in backups])
    _print_windows(backups)
    return None


def _print_windows(backups: list[StoredBackup]) -> None:
    """The point-in-time windows (restore LOCATION --until TIME), gaps, broken chains."""
    from ..location.windows import broken, gaps, show_time, windows

    found = windows(backups)
    for window in found:
        print(
            f"window {window.database}: any second from {show_time(window.start)} to "
            f"{show_time(window.end)} ({window.backups} backups from {window.full})"
        )
    for gap in gaps(found):
        print(f"gap {gap.database}: nothing covers {show_time(gap.start)} to {show_time(gap.end)}")
    for backup in broken(backups):
        print(f"broken {backup.database}: {backup.key} misses a backup of its chain")


def run_prune_command(args: argparse.Namespace) -> None:
    # Imported here: a command loads its own core alone (see exits._READINGS).
    from ..location.prune import PruneOptions, run_prune
    from ..location.retention import Policy

    policy = Policy(
        **{name: getattr(args, f"keep_{name}") for name in KEEP_OPTIONS},
        within=args.keep_within,
        window=args.keep_window,
    )
    result = run_prune(
        PruneOptions(
            args.location,
            policy,
            dry_run=args.dry_run,
            lock_wait=args.lock_wait,
            endpoint_url=args.endpoint_url,
        )
    )
    if args.json:
        print(json.dumps(result.to_json(), ensure_ascii=False))
        return None
    verb = "would remove" if result.dry_run else "removed"
    rows = [_row(b, ["; ".join(result.reasons.get(b.id, [])) or verb]) for b in result.backups]
    print_table("prune" + (" (dry run)" if result.dry_run else ""), [*HEADERS, "why kept"], rows)
    print(f"{len(result.kept)} kept, {len(result.removed)} {verb}")
    return None
