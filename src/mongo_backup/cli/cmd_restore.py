"""``mongo-backup restore SOURCE``: a backup (archive, folder or JSON file) into a database."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..names import ALL_DATABASES
from ..workers import default_insert_workers
from .exits import with_exit_code
from .options import (
    add_collection_filters,
    add_connection_options,
    add_source_options,
    connection_from,
)
from .tables import print_table

if TYPE_CHECKING:
    from bson.timestamp import Timestamp

    from ..restore.result import RestoreResult


def add_parser(commands: Any, parent: argparse.ArgumentParser, epilog: str) -> None:
    parser = commands.add_parser(
        "restore",
        parents=[parent],
        epilog=epilog,
        help="restore a backup into a database",
        description="Restore an archive (.tar, .tar.gz, .tar.zst), a backup folder, a "
        "location (an --out-dir or a storage URL: its newest backup, or with --until the "
        "one whose chain covers that time), or a JSON Lines file (mongoexport; needs --db and "
        "one --collection). A damaged backup is never half restored: into a target that "
        "holds one of its namespaces it is verified first and nothing is written; into "
        "namespaces the target lacks it is checked while it is written, and what the "
        "restore created is dropped again if it proves damaged.",
    )
    parser.add_argument(
        "source",
        metavar="SOURCE",
        help="archive (path or storage URL, maybe .age), backup folder, location (folder or "
        "URL of archives), .json/.jsonl file, or '-' for an archive on stdin (from 'backup "
        "--archive -': restored as it arrives into namespaces the target lacks, dropped again "
        "if the stream is cut; otherwise kept in a temporary file and checked first)",
    )
    add_connection_options(
        parser,
        "target database (default: the backup's database); of a backup of several "
        "databases, the one to restore (default: all)",
    )
    filters = add_collection_filters(parser)
    _add_renames(filters)
    add_source_options(parser)
    group = parser.add_argument_group("restore")
    _add_writes(group)
    group.add_argument("--json", action="store_true", help="print a JSON result object on stdout")
    parser.set_defaults(handler=run)


def _add_writes(group: Any) -> None:
    """What is written and how."""
    group.add_argument("--drop", action="store_true", help="drop each target collection first")
    group.add_argument("--no-indexes", action="store_true", help="do not build indexes")
    group.add_argument(
        "--users-and-roles",
        "--restoreDbUsersAndRoles",
        action="store_true",
        help="also recreate the backup's users (with their passwords) and custom roles, "
        "in their own databases; existing ones are kept unless --drop",
    )
    group.add_argument(
        "--no-options",
        action="store_true",
        help="create collections without their options (validator, collation, ...)",
    )
    group.add_argument(
        "--dry-run", action="store_true", help="report what would happen, write nothing"
    )
    group.add_argument(
        "--bypass-document-validation",
        action="store_true",
        help="insert documents even where the target's validator refuses them",
    )
    group.add_argument(
        "-j",
        "--jobs",
        "--insert-workers",
        "--numInsertionWorkersPerCollection",
        type=int,
        default=default_insert_workers(),
        help="parallel insert workers per collection (default: one per core, 2 to 8; "
        f"here {default_insert_workers()})",
    )
    group.add_argument(
        "--gzip",
        action="store_true",
        help="accepted as mongorestore's: the compression of SOURCE is detected anyway",
    )
    group.add_argument(
        "--batch-size", type=int, default=1000, help="documents per insert (default 1000)"
    )
    group.add_argument(
        "--no-verify",
        action="store_true",
        help="skip the check of the whole backup (checksums, every line) before the first "
        "write or while writing",
    )
    group.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted restore of this backup into this database: finished "
        "collections are kept, the one in progress goes on after its last answered batch",
    )
    group.add_argument(
        "--until",
        type=until_time,
        metavar="TIME",
        help="restore the chain only up to TIME: ISO-8601 (2026-11-26T12:00:00Z) or a "
        "cluster time SECONDS:INCREMENT; an increment SOURCE brings its whole chain anyway, "
        "a location SOURCE the chain that covers TIME",
    )


def _add_renames(filters: Any) -> None:
    """--ns-from/--ns-to, beside the other namespace patterns."""
    filters.add_argument(
        "--ns-from",
        "--nsFrom",
        action="append",
        default=[],
        metavar="DB.COLL",
        help="restore the namespaces matching this pattern under the name --ns-to gives "
        "(repeatable, in pairs; * or $name$ wildcards): --ns-from 'shop.*' --ns-to "
        "'shop_copy.*', --ns-from '*.orders' --ns-to '*.orders_2026'; views follow",
    )
    filters.add_argument(
        "--ns-to",
        "--nsTo",
        action="append",
        default=[],
        metavar="DB.COLL",
        help="the new name of the namespaces the --ns-from before it matches",
    )


def until_time(text: str) -> Timestamp:
    from ..mongo.cluster_time import parse_until  # the command line loads no cores

    try:
        return parse_until(text)
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix(f"--until {text!r}: ")) from None


def run(args: argparse.Namespace) -> RestoreResult:
    # Imported here: a command loads its own core alone (see exits._READINGS).
    from ..restore.options import RestoreOptions
    from ..restore.run import run_restore

    settings = connection_from(args, require_db=False)
    result = run_restore(
        RestoreOptions(
            source=args.source,
            uri=settings.uri,
            db=args.db or None,
            collections=args.collection,
            exclude=args.exclude_collection,
            ns_include=args.ns_include,
            ns_exclude=args.ns_exclude,
            ns_from=args.ns_from,
            ns_to=args.ns_to,
            drop=args.drop,
            users_and_roles=args.users_and_roles,
            indexes=not args.no_indexes,
            options=not args.no_options,
            dry_run=args.dry_run,
            bypass_validation=args.bypass_document_validation,
            jobs=args.jobs,
            batch_size=args.batch_size,
            verify_first=not args.no_verify,
            timeout=args.timeout,
            stall_timeout=args.stall_timeout,
            resume=args.resume,
            until=args.until,
            identity=args.identity,
            endpoint_url=args.endpoint_url,
        )
    )
    if args.json:
        print(json.dumps(with_exit_code(result), ensure_ascii=False))
    elif not args.quiet or args.dry_run:
        report(result)
    return result


def report(result: RestoreResult) -> None:
    where = "their databases" if result.database == ALL_DATABASES else repr(result.database)
    title = f"{'dry run: ' if result.dry_run else ''}restore into {where}"
    rows = [
        [
            c.name,
            c.type,
            c.action,
            "?" if c.expected is None else str(c.expected),
            str(c.inserted),
            str(c.duplicates),
            str(c.rejected),
            str(c.indexes_built),
            "ok" if c.ok else "; ".join(c.problems) or "incomplete",
        ]
        for c in result.collections
    ]
    print_table(
        title,
        [
            "collection",
            "type",
            "action",
            "in backup",
            "inserted",
            "dup _id",
            "refused",
            "indexes",
            "status",
        ],
        rows,
    )
    a = result.authz
    if a is not None and result.dry_run:
        print(
            f"users and roles: would restore {a.roles_created} roles and {a.users_restored} "
            "users (those that exist are kept, or replaced with --drop)"
        )
    elif a is not None:
        print(
            f"users and roles: {a.roles_created} roles created, {a.roles_replaced} replaced, "
            f"{a.roles_kept} kept; {a.users_restored} users restored, {a.users_kept} kept"
        )
        for problem in a.problems:
            print(f"users and roles: problem: {problem}")
    for replay in result.replays:
        if result.dry_run:
            print(f"{replay.backup}: increment that would be applied")
            continue
        applied = ", ".join(f"{n} {kind}" for kind, n in sorted(replay.counts.items()) if n)
        what = "change events" if replay.mode == "changes" else "documents upserted"
        until = " (stopped at --until)" if replay.stopped_at_until else ""
        print(f"{replay.backup}: {what}: {applied or 'none'}{until}")
        for problem in replay.problems:
            print(f"{replay.backup}: problem: {problem}")
