"""``mongo-backup verify SOURCE``: checksums, sizes, counts, every line; optionally a live diff."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import resolve_connection
from .options import add_source_options
from .tables import print_table

if TYPE_CHECKING:
    from ..verify.run import VerifyResult


def add_parser(commands: Any, parent: argparse.ArgumentParser, epilog: str) -> None:
    parser = commands.add_parser(
        "verify",
        parents=[parent],
        epilog=epilog,
        help="check that a backup is intact (and matches a database)",
        description="Check the manifest, every member's SHA-256, size and document count, and "
        "that every line parses. Exit 0 when all is well, 1 on any mismatch.",
    )
    parser.add_argument(
        "source",
        metavar="SOURCE",
        help="archive (path or storage URL, maybe .age), backup folder, mongodump folder, or "
        "'-' for an archive on stdin (one from 'backup --archive -' is checked as it "
        "arrives, with no temporary copy)",
    )
    parser.add_argument(
        "--against-uri",
        metavar="URI",
        help="also compare with this live database (documents, options, indexes)",
    )
    parser.add_argument(
        "--against-db", metavar="NAME", help="database to compare with (default: the backup's)"
    )
    parser.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS")
    parser.add_argument("--json", action="store_true", help="print a JSON report on stdout")
    add_source_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> VerifyResult:
    # Imported here: a command loads its own core alone (see exits._READINGS).
    from ..verify.run import VerifyOptions, run_verify

    against = None
    if args.against_uri:
        against = resolve_connection(args.against_uri, args.against_db, require_db=False).uri
    result = run_verify(
        VerifyOptions(
            args.source,
            against_uri=against,
            against_db=args.against_db,
            timeout=args.timeout,
            identity=args.identity,
            endpoint_url=args.endpoint_url,
        )
    )
    if args.json:
        print(json.dumps(result.to_json(), ensure_ascii=False))
    elif not args.quiet or not result.ok:
        report(result)
    return result


def report(result: VerifyResult) -> None:
    rows = [
        [
            m.name,
            m.file,
            f"{m.count}" if m.expected_count is None else f"{m.count}/{m.expected_count}",
            f"{m.bytes}",
            "ok" if m.ok else "; ".join(m.problems),
        ]
        for m in result.members
    ]
    print_table(
        f"verify {result.location}", ["collection", "file", "documents", "bytes", "status"], rows
    )
    if result.against is not None:
        rows = [
            [
                a.name,
                str(a.missing),
                str(a.extra),
                str(a.different),
                "ok" if a.ok else "; ".join(a.metadata + a.examples),
            ]
            for a in result.against
        ]
        print_table(
            "compared with the database",
            ["collection", "missing", "extra", "different", "status"],
            rows,
        )
    if result.chain:
        print("chain: " + " -> ".join(Path(path).name for path in result.chain))
    for problem in result.chain_problems:
        print(problem)
    print("OK" if result.ok else f"FAILED: {len(result.problems)} problem(s)")
