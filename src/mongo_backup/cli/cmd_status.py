"""``mongo-backup status LOCATION``: when did the last good backup finish, and can its
chain be restored? Exit 0 when healthy, 1 when stale (``--max-age``) or broken."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from .options import duration

if TYPE_CHECKING:
    from ..location.status import StatusReport


def add_parser(commands: Any, parent: argparse.ArgumentParser, epilog: str) -> None:
    parser = commands.add_parser(
        "status",
        parents=[parent],
        epilog=epilog,
        help="is the newest good backup fresh and its chain whole? (a monitoring check)",
        description="Print the newest good backup at LOCATION (a folder or storage URL), its "
        "age, its chain and the point-in-time windows covered. Exits 0 when healthy, 1 when "
        "the newest good backup is older than --max-age, the newest backup failed, or a "
        "chain misses a backup: ready for Nagios-style checks and cron.",
    )
    parser.add_argument("location", metavar="LOCATION", help="folder or storage URL")
    parser.add_argument("--db", metavar="NAME", help="only the backups of this database")
    parser.add_argument(
        "--max-age",
        type=duration,
        metavar="DURATION",
        help="unhealthy when the newest good backup is older, e.g. 26h or 8d",
    )
    parser.add_argument(
        "--endpoint-url", metavar="URL", help="S3-compatible endpoint (MinIO, Ceph, ...)"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> StatusReport:
    # Imported here: a command loads its own core alone (see exits._READINGS).
    from ..location.status import StatusOptions, run_status
    from ..location.windows import show_time

    report = run_status(
        StatusOptions(args.location, args.db, args.max_age, endpoint_url=args.endpoint_url)
    )
    if args.json:
        print(json.dumps(report.to_json(), ensure_ascii=False))
        return report
    newest = report.newest_good
    if newest is not None and report.age is not None:
        minutes = int(report.age.total_seconds() // 60)
        print(
            f"newest good backup: {newest.key} ({newest.database or '?'}, {newest.kind or '?'}), "
            f"taken {newest.time:%Y-%m-%d %H:%M:%S} UTC, {minutes // 60}h{minutes % 60:02d}m ago"
        )
        if report.chain:
            print(f"chain: {report.chain} backup(s), whole")
    for window in report.windows:
        print(
            f"window {window.database}: any second from {show_time(window.start)} "
            f"to {show_time(window.end)}"
        )
    for gap in report.gaps:
        print(f"gap {gap.database}: nothing covers {show_time(gap.start)} to {show_time(gap.end)}")
    print("status: OK" if report.ok else "status: " + "; ".join(report.problems))
    return report
