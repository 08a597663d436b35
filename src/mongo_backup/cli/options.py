"""Option groups that several commands share."""

from __future__ import annotations

import argparse

from ..config import ConnectionSettings, resolve_connection


def add_connection_options(parser: argparse.ArgumentParser, db_help: str) -> None:
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--uri",
        "--mongo-uri",
        dest="uri",
        metavar="URI",
        help="MongoDB connection string (default: $MONGO_URI, then .env)",
    )
    group.add_argument("--db", "--mongo-db", dest="db", metavar="NAME", help=db_help)
    group.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="give up on an unreachable server after this long (default: 30)",
    )


def connection_from(args: argparse.Namespace, require_db: bool = True) -> ConnectionSettings:
    return resolve_connection(args.uri, args.db, require_db=require_db)


def add_collection_filters(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("collections")
    group.add_argument(
        "--collection",
        action="append",
        default=[],
        metavar="NAME",
        help="only this collection (repeatable)",
    )
    group.add_argument(
        "--exclude-collection",
        action="append",
        default=[],
        metavar="NAME",
        help="skip this collection (repeatable)",
    )
