"""``mongo-backup convert DIR``: a mongodump output folder as a verified mongo-backup
archive; stdout is the archive's path."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from .._version import __version__
from ..names import COMPRESSIONS

logger = logging.getLogger(__name__)


def add_parser(commands: Any, parent: argparse.ArgumentParser, epilog: str) -> None:
    parser = commands.add_parser(
        "convert",
        parents=[parent],
        epilog=epilog,
        help="turn a mongodump output folder into a mongo-backup archive",
        description="Read a mongodump output folder (DB/COLL.bson[.gz] with .metadata.json; "
        "a dump of one database) and write it as a mongo-backup archive in "
        "OUT_DIR/backup_data/: readable Extended JSON Lines, every member checksummed, "
        "verified after writing. Prints the archive path.",
    )
    parser.add_argument("source", metavar="DIR", help="mongodump's output folder")
    parser.add_argument(
        "--out-dir", "--out", "-o", type=Path, default=Path("backups"),
        help="where the archive goes (default: backups)",
    )  # fmt: skip
    parser.add_argument("--compress", choices=COMPRESSIONS, default="zstd", help="default: zstd")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> bool:
    # Imported here: a command loads its own core alone (see exits._READINGS).
    from ..archive.convert import convert_mongodump
    from ..verify.run import verify

    archive, manifest = convert_mongodump(
        Path(args.source), args.out_dir, args.compress, tool_version=__version__
    )
    report = verify(str(archive))
    documents = sum(entry.count for entry in manifest.data_entries)
    logger.info(
        "%s: database %r, %d collections, %d documents; verify %s",
        archive, manifest.database, len(manifest.collections), documents,
        "ok" if report.ok else "FAILED",
    )  # fmt: skip
    if args.json:
        print(json.dumps({"archive": str(archive), "database": manifest.database,
                          "documents": documents, "verified": report.ok}))  # fmt: skip
    else:
        print(archive)
    return report.ok
