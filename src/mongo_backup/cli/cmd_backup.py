"""``mongo-backup backup``: a database to one archive; stdout is the archive's path."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..names import ALL_DATABASES, COMPRESSIONS, JSON_FORMATS
from ..workers import default_jobs
from .config import READ_PREFERENCES, with_read_preference
from .exits import with_exit_code
from .monitoring import Monitor, add_monitoring_options
from .options import (
    add_collection_filters,
    add_connection_options,
    add_database_options,
    connection_from,
)

if TYPE_CHECKING:
    from ..backup.options import BackupOptions, BackupResult


def add_parser(commands: Any, parent: argparse.ArgumentParser, epilog: str) -> None:
    parser = commands.add_parser(
        "backup",
        parents=[parent],
        epilog=epilog,
        help="back up a database to an archive",
        description="Back up every collection of a database as Extended JSON Lines into "
        "OUT_DIR/backup_data/backup_YYYYmmdd_HHMMSS.tar[.gz|.zst]. Prints the archive path.",
    )
    connection = add_connection_options(
        parser,
        "database to back up (repeatable: several into one archive; default: $MONGO_DB, "
        "then .env, else all databases)",
        several=True,
    )
    add_database_options(connection)
    add_backup_groups(parser, resume=True)
    _add_increment_options(parser)
    destinations = add_destination_options(parser)
    destinations.add_argument(
        "--archive",
        type=_stdout_only,
        metavar="-",
        help="write the archive to stdout (as mongodump --archive; only '-'): nothing else "
        "goes to stdout, logs to stderr; each collection goes out once exported, the manifest "
        "last, so 'mongo-backup restore - --uri ...' restores while this reads",
    )
    add_monitoring_options(parser)
    parser.set_defaults(handler=run)


def _stdout_only(text: str) -> str:
    if text != "-":
        raise argparse.ArgumentTypeError(
            f"{text!r}: only '-' (stdout); an archive file goes to --out-dir or --dest"
        )
    return text


def add_backup_groups(parser: argparse.ArgumentParser, *, resume: bool) -> None:
    """What to back up, the output format and the performance options: the groups that
    ``backup`` and ``watch`` share (``watch`` always resumes, so it has no ``--resume``)."""
    _add_selection_options(parser)
    _add_output_options(parser)
    _add_performance_options(parser, resume)


def _add_selection_options(parser: argparse.ArgumentParser) -> None:
    group = add_collection_filters(
        parser,
        "what to back up",
        "the collections of the database (default: all of them); finding none is an error "
        "unless allowed",
    )
    group.add_argument(
        "--allow-empty",
        action="store_true",
        help="write a backup even when the database has no collections",
    )
    group.add_argument(
        "--query",
        metavar="JSON",
        help="only the documents matching this Extended JSON filter, in the collections "
        "named with --collection (a partial backup: the manifest says so)",
    )
    group.add_argument(
        "--query-file", type=Path, metavar="FILE", help="the --query filter, read from FILE"
    )
    group.add_argument(
        "--read-preference",
        choices=READ_PREFERENCES,
        metavar="MODE",
        help="which member to read from: " + ", ".join(READ_PREFERENCES) + " (default: the "
        "URI's, else primary, as mongodump); the manifest records the member read",
    )
    group.add_argument(
        "--read-preference-tags",
        action="append",
        default=[],
        metavar="TAGS",
        help="a tag set for the read preference, such as dc:ny,rack:1 (repeatable, in order "
        "of preference; an empty one means any member)",
    )


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "output format",
        "where the archive is written, how its documents are encoded, and how the result "
        "is printed",
    )
    group.add_argument(
        "--out-dir",
        "--out",
        "-o",
        type=Path,
        default=Path("backups"),
        help="where the backup goes (default: backups)",
    )
    group.add_argument(
        "--json-format",
        choices=JSON_FORMATS,
        default="canonical",
        help="canonical keeps every BSON type (default); relaxed is easier to "
        "read but loses some types (see README)",
    )
    group.add_argument("--pretty", action="store_true", help="indented, multi-line documents")
    group.add_argument(
        "--compress",
        choices=COMPRESSIONS,
        default="zstd",
        help="archive compression (default: zstd)",
    )
    group.add_argument(
        "--gzip",
        action="store_const",
        dest="compress",
        const="gzip",
        help="as mongodump's --gzip: the same as --compress gzip",
    )
    group.add_argument(
        "--batch-size",
        type=int,
        default=1000,
        metavar="N",
        help="documents per server batch (default: 1000)",
    )
    group.add_argument(
        "--keep-folder", action="store_true", help="keep the working folder next to the archive"
    )
    group.add_argument("--json", action="store_true", help="print a JSON result object on stdout")


def _add_performance_options(parser: argparse.ArgumentParser, resume: bool) -> None:
    group = parser.add_argument_group(
        "performance and faults",
        "how much work runs at once, and how a backup rides out errors and interruptions",
    )
    group.add_argument(
        "-j",
        "--jobs",
        "--numParallelCollections",
        type=int,
        default=default_jobs(),
        metavar="N",
        help=f"collections (or ranges) exported at once, largest first (default: {default_jobs()})",
    )
    group.add_argument(
        "--nice",
        type=int,
        default=10,
        metavar="N",
        help="priority of the conversion work, 0-19 (default 10: a database server on the "
        "same machine comes first)",
    )
    group.add_argument(
        "--split-threshold",
        type=byte_size,
        default=None,
        metavar="BYTES",
        help="read collections larger than this in parallel _id ranges (suffixes KB, MB, GB; "
        "default: 256MB, for collections whose size the server reports)",
    )
    group.add_argument(
        "--retries",
        type=int,
        default=5,
        metavar="N",
        help="retries after a transient server or network error, with backoff (default: 5)",
    )
    group.add_argument(
        "--retry-delay",
        type=float,
        default=0.5,
        metavar="SECONDS",
        help="wait before the first retry; doubles for each next one (default: 0.5)",
    )
    group.add_argument(
        "--checkpoint-interval",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="how often the progress of a collection is made durable for --resume (default: 1)",
    )
    group.add_argument(
        "--lock-wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait this long for another backup in OUT_DIR to finish (default: fail at once)",
    )
    if not resume:
        return
    group.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        type=Path,
        metavar="FOLDER",
        help="continue the newest unfinished backup of this database in OUT_DIR (or the "
        "working FOLDER given) instead of starting over; starts a new backup if there is none",
    )


def _add_increment_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "increments",
        "back up only what changed since an earlier backup "
        "(see README: Consistency and increments)",
    )
    group.add_argument(
        "--incremental",
        action="store_true",
        help="back up only what changed since the previous backup of this database in "
        "OUT_DIR (or --base): its change events (replica sets), or with --since-field the "
        "documents whose field moved on",
    )
    group.add_argument(
        "--since-field",
        metavar="FIELD",
        help="an updatedAt-style field: with --incremental, export the documents whose FIELD "
        "is at or after the previous backup's high-water mark (deletes are not captured); "
        "without, a full backup that records the marks",
    )
    group.add_argument(
        "--base",
        type=Path,
        metavar="ARCHIVE",
        help="the backup an --incremental continues (default: the newest in OUT_DIR)",
    )


def add_destination_options(parser: argparse.ArgumentParser) -> Any:
    group = parser.add_argument_group(
        "destinations and encryption",
        "where the finished archive is uploaded, and who can decrypt it",
    )
    group.add_argument(
        "--dest",
        metavar="URL",
        help="upload the archive there: a folder, file://, s3://bucket/prefix, "
        "gs://bucket/prefix or az://container/prefix (credentials from the provider's usual "
        "environment variables); stdout is then the archive's URL",
    )
    group.add_argument(
        "--endpoint-url", metavar="URL", help="S3-compatible endpoint (MinIO, Ceph, ...)"
    )
    group.add_argument(
        "--keep-local", action="store_true", help="keep the local archive after the upload"
    )
    group.add_argument(
        "--stream",
        action="store_true",
        help="with --dest: upload the archive while the backup runs (plan first, each "
        "collection as it is exported, manifest last), without writing it locally",
    )
    group.add_argument(
        "--encrypt-to",
        action="append",
        default=[],
        metavar="RECIPIENT",
        help="encrypt the archive with age to this age or SSH public key (or a file of "
        "them); repeatable; the archive becomes .tar.zst.age",
    )
    return group


def byte_size(text: str) -> int:
    """``256MB``, ``1GiB``, ``4096``: a size in bytes (K, M, G, T are binary multiples)."""
    cleaned = text.strip().upper().replace("IB", "B")
    digits = cleaned.rstrip("KMGTB")
    multiplier = {"": 1, "B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}
    try:
        value = float(digits) * multiplier[cleaned[len(digits) :]]
    except (KeyError, ValueError):
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 256MB)") from None
    if not 1 <= value < 1 << 62:  # also refuses inf and nan
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 256MB)")
    return int(value)


def run(args: argparse.Namespace) -> BackupResult:
    # Imported here: a command loads its own core alone (see exits._READINGS).
    from ..backup.run import run_backup
    from .progress import progress_for

    options = backup_options(args)
    if options.to_stdout and args.json:
        raise ConfigError("--archive - writes the archive to stdout: --json cannot share it")
    monitor = Monitor.from_args(args, "backup", options.db)
    try:
        with progress_for(args.quiet or args.json) as progress:
            result = run_backup(options, progress)
    except BaseException as error:
        monitor.failed(error)
        raise
    monitor.backup_done(result)
    if args.json:
        print(json.dumps(with_exit_code(result), ensure_ascii=False))
    elif not options.to_stdout:  # then stdout holds the archive alone
        print(result.location)
    return result


def backup_options(args: argparse.Namespace) -> BackupOptions:
    """The backup the flags ask for (``watch`` has no increment flags nor ``--resume``,
    and follows one database: its --db is not repeatable)."""
    from ..backup.options import BackupOptions  # the core, loaded by its commands only

    several_allowed = hasattr(args, "all_databases")  # backup's flags, not watch's
    named: list[str] = (args.db or []) if several_allowed else [args.db] if args.db else []
    named = list(dict.fromkeys(named))  # --db shop --db shop is one database
    all_databases = several_allowed and args.all_databases
    if all_databases and named:
        raise ConfigError("--all-databases backs up every database: leave --db out")
    one = argparse.Namespace(**{**vars(args), "db": named[0] if len(named) == 1 else None})
    settings = connection_from(one, require_db=not several_allowed)
    uri = with_read_preference(settings.uri, args.read_preference, args.read_preference_tags)
    several = all_databases or len(named) > 1 or not settings.db
    return BackupOptions(
        uri=uri,
        db=ALL_DATABASES if several else settings.db,
        databases=named if len(named) > 1 else [],
        include_admin=getattr(args, "include_admin", False),
        users_and_roles=getattr(args, "users_and_roles", False),
        out_dir=args.out_dir,
        collections=args.collection,
        exclude=args.exclude_collection,
        ns_include=args.ns_include,
        ns_exclude=args.ns_exclude,
        json_format=args.json_format,
        pretty=args.pretty,
        compress=args.compress,
        batch_size=args.batch_size,
        keep_folder=args.keep_folder,
        allow_empty=args.allow_empty,
        timeout=args.timeout,
        stall_timeout=args.stall_timeout,
        nice=args.nice,
        jobs=args.jobs,
        split_threshold=args.split_threshold,
        retries=args.retries,
        retry_delay=args.retry_delay,
        checkpoint_interval=args.checkpoint_interval,
        lock_wait=args.lock_wait,
        resume=getattr(args, "resume", False),
        incremental=getattr(args, "incremental", False),
        since_field=getattr(args, "since_field", None),
        base=getattr(args, "base", None),
        dest=args.dest,
        endpoint_url=args.endpoint_url,
        keep_local=args.keep_local,
        stream=args.stream,
        to_stdout=getattr(args, "archive", None) == "-",
        encrypt_to=args.encrypt_to,
        query=query_text(args),
    )


def query_text(args: argparse.Namespace) -> str | None:
    """``--query``, or the contents of ``--query-file`` (not both)."""
    if args.query_file is None:
        return args.query  # type: ignore[no-any-return]
    if args.query is not None:
        raise ConfigError("give --query or --query-file, not both")
    try:
        return args.query_file.read_text(encoding="utf-8")  # type: ignore[no-any-return]
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read --query-file {args.query_file}: {error}") from None
