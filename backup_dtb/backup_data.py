#!/usr/bin/env python3
"""The seed script, kept working exactly as its guide describes: a thin shim over mongo_backup.

    python backup_dtb/backup_data.py [--out-dir DIR] [--pretty] [--mongo-uri URI] [--mongo-db NAME]

Configuration comes from MONGO_URI / MONGO_DB in the environment or a ``.env`` file in
the working directory; the flags win. Every collection goes to ``{collection}.jsonl``
(one canonical Extended JSON document per line) in ``{out_dir}/backup_{ts}/`` (UTC),
then into the plain ``{out_dir}/backup_data/backup_{ts}.tar``; the folder is removed
after a good archive and kept if archiving fails. A failing collection is logged with
its traceback and the run goes on. Exit codes: 0 success, 1 failure, 2 missing
configuration. The archive's path is printed on stdout.

Importable as well: ``backup_database(mongo_uri, db_name, out_root, pretty=False)``
returns the archive's path.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

try:
    from mongo_backup import backup_database
except ImportError:  # run from a checkout without installing: use the source tree
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
    from mongo_backup import backup_database

from mongo_backup.cli.config import resolve_connection
from mongo_backup.cli.logs import configure_logging
from mongo_backup.errors import EXIT_CONFIG, EXIT_FAILURE, ConfigError, MongoBackupError
from mongo_backup.redact import scrub_text, uri_secrets

__all__ = ["backup_database", "main"]

logger = logging.getLogger("backup_data")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Back up a MongoDB database to a .tar of JSON Lines."
    )
    parser.add_argument(
        "--out-dir", default="backup_dtb", help="output folder (default: backup_dtb)"
    )
    parser.add_argument("--pretty", action="store_true", help="indented JSON documents")
    parser.add_argument("--mongo-uri", help="connection string (default: $MONGO_URI or .env)")
    parser.add_argument("--mongo-db", help="database name (default: $MONGO_DB or .env)")
    args = parser.parse_args(argv)
    secrets = uri_secrets(args.mongo_uri or "")
    configure_logging(0, "text", secrets)
    try:
        settings = resolve_connection(args.mongo_uri, args.mongo_db)
        secrets += uri_secrets(settings.uri)
        configure_logging(0, "text", secrets)
        archive = backup_database(settings.uri, settings.db, args.out_dir, pretty=args.pretty)
    except ConfigError as error:
        logger.error("%s", error)
        return EXIT_CONFIG
    except MongoBackupError as error:
        logger.error("backup failed: %s", scrub_text(str(error), secrets))
        return EXIT_FAILURE
    except Exception:
        logger.exception("backup failed")
        return EXIT_FAILURE
    print(archive)
    return 0


if __name__ == "__main__":
    sys.exit(main())
