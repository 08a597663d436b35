"""``restore -``: a piped backup restored while it arrives, when that can keep nothing.

``backup --archive -`` sends its archive in the streamed form
(:mod:`mongo_backup.archive.streamed`): the plan, each member as the backup finishes it,
the manifest last. Read as it arrives, this restore creates the collections from the
plan and inserts a member's documents while the backup is still reading the next one:
the two sides overlap, and no temporary file holds the stream.

A stream is only known to be whole at its end, and a restore must keep nothing of one
that is cut or damaged. Here keeping nothing means removing what this restore created,
so this path is taken only when that is all it writes until the end: when none of the
namespaces it restores exists in the target (a copy into a new database or deployment),
and a namespace that appears there meanwhile is an error, never a merge. Any failure
before the stream has proved whole (a cut stream, a member that does not match its
checksum, the server refusing, Ctrl-C) drops every collection it created, so the target
ends as it began, and the error says so. After that point (indexes, views, the captured
changes, users and roles) a failure is what it is after an archive file's check: what
was done stays. Unlike an archive file, whose first write waits for the check of the
whole archive, the collections being filled are visible under their names while it runs.

An age-encrypted stream is decrypted as it is read (``--identity``). Everything else
falls back to the archive's path, verified before the first write: a stream in the
archive-file form (a saved archive piped in), an encrypted one without ``--identity`` or
with a wrong key (the error comes from there), a target that already holds one of the
namespaces (``--drop`` must not drop them for a stream that may yet be cut), a dry run,
``--resume``, ``--until``, an increment. For that,
:func:`restore_piped` returns the bytes it read from stdin, which the temporary copy
(:func:`~mongo_backup.location.pipe.spooled_stdin`) begins with.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pymongo.errors

from ..archive.manifest import CollectionEntry
from ..archive.streamed import StreamedReader
from ..errors import ArchiveError, Interrupted, MongoBackupError
from ..location.pipe import RecordedStdin, open_streamed_stdin
from ..mongo.connection import connect
from ..redact import uri_secrets
from ..retry import driver_error_text
from .authz import apply_authz
from .namespaces import CollectionOutcome, Restorer
from .options import RestoreOptions
from .renames import Renamer, target_database
from .result import RestoreResult
from .selection import check_users_and_roles, inserts_client, renames_of, write_settings
from .state import RestoreState

logger = logging.getLogger(__name__)


def restore_piped(opts: RestoreOptions) -> tuple[RestoreResult | None, bytes]:
    """Restore stdin as it arrives if this path applies: (the result, b""); else
    (None, the bytes read from stdin so far), nothing written."""
    if opts.dry_run or opts.resume or opts.until is not None:
        return None, b""
    reader, stdin = open_streamed_stdin(opts.identity)
    if reader is None:
        return None, bytes(stdin.head)
    with reader:  # closing it stops the decryption before stdin is read on
        result = _restore_if_new(opts, reader, stdin) if reader.plan.kind == "full" else None
    return (result, b"") if result is not None else (None, bytes(stdin.head))


def _restore_if_new(
    opts: RestoreOptions, reader: StreamedReader, stdin: RecordedStdin
) -> RestoreResult | None:
    started = time.perf_counter()
    plan = reader.plan
    names, selected = renames_of(opts, plan)
    check_users_and_roles(opts, plan, names.target)
    secrets = uri_secrets(opts.uri)
    client = connect(opts.uri, timeout=opts.timeout)
    try:
        database = target_database(client, names, selected)
        planned = [names.entry(entry).name for entry in selected]
        present = sorted(set(planned) & set(database.list_collection_names()))
        if present:
            logger.info(
                "the target already holds %r: the stream is kept in a temporary file and "
                "checked whole before the first write",
                present[0],
            )
            return None
        stdin.forget()
        logger.info(
            "restoring the stream as it arrives into new namespaces (a cut or damaged "
            "stream drops them again)"
        )
        inserts = inserts_client(opts)
        try:
            result = _restore(opts, reader, (database, inserts), names, selected)
        finally:
            inserts.close()
    except pymongo.errors.PyMongoError as error:
        raise MongoBackupError(
            f"restore into {names.target!r}: {driver_error_text(error, secrets)}"
        ) from None
    finally:
        client.close()
    result.duration = time.perf_counter() - started
    return result


def _restore(
    opts: RestoreOptions,
    reader: StreamedReader,
    clients: tuple[Any, Any],
    names: Renamer,
    selected: list[CollectionEntry],
) -> RestoreResult:
    """Restore; a failure before the stream has proved whole drops what this restore
    created. ``clients``: the target database, and a client for the inserts (see
    restore/run.py)."""
    database, inserts = clients
    held = reader.plan.databases or [reader.plan.database]
    with tempfile.TemporaryDirectory(prefix="mongo-backup-pipe-") as work:
        # The inserter records its progress as for any restore; a stream cannot be
        # resumed, so the record is private and goes with the run.
        state = RestoreState(source="-", database=names.target)
        restorer = Restorer(
            database,
            # The lines are parsed as they come (no verify pass went first), and only
            # namespaces it creates are written: what it must undo is what it created
            # (--drop then only applies to what the captured changes write, after).
            replace(write_settings(opts, reader.plan.database), checked=False, new_only=True),
            uri_secrets(opts.uri),
            state,
            Path(work) / "state.json",
            target_database(inserts, names, selected),
            names,
        )
        try:
            outcomes = restorer.run(reader, selected)
            authz = None
            if restorer.authz is not None:
                authz = apply_authz(
                    database.client, restorer.authz, held, opts.drop, uri_secrets(opts.uri)
                )
        except BaseException as error:
            if not reader.complete:
                _undo(database, restorer.created)
                raise _undone(error, len(restorer.created)) from None
            # The stream was whole: as after an archive file's check, what was done
            # stays (indexes, views, captured changes, users come after that point).
            if isinstance(error, KeyboardInterrupt):
                raise Interrupted(
                    "interrupted after the stream was checked whole: what was restored so "
                    "far stays (a stream cannot be resumed)"
                ) from None
            raise
    _settle(outcomes, reader, names)
    return RestoreResult("-", names.target, outcomes, False, 0.0, restorer.replays, authz)


def _undo(database: Any, created: list[str]) -> None:
    for name in created:
        try:
            database.drop_collection(name)
        except pymongo.errors.PyMongoError as error:
            logger.warning("could not drop %r again: %s", name, error)


def _undone(error: BaseException, count: int) -> BaseException:
    kept = f"nothing was kept (the {count} collections it had created are dropped again)"
    if isinstance(error, KeyboardInterrupt):
        return Interrupted(f"interrupted; {kept}")
    if isinstance(error, pymongo.errors.PyMongoError):
        return MongoBackupError(f"restoring the stream: {driver_error_text(error, [])}; {kept}")
    if isinstance(error, ArchiveError):  # LineFormatError's arguments are its own
        return ArchiveError(f"{error}; {kept}")
    if isinstance(error, MongoBackupError):
        return type(error)(f"{error}; {kept}")
    return error


def _settle(outcomes: list[CollectionOutcome], reader: StreamedReader, names: Renamer) -> None:
    """The counts and failures the manifest, read last, gives each restored namespace."""
    final = {
        names.entry(entry).name: entry
        for entry in reader.manifest.collections
        if entry.is_collection
    }
    for outcome in outcomes:
        entry = final.get(outcome.name)
        if entry is None:
            continue
        outcome.expected = entry.count
        if entry.status != "ok":
            outcome.problems.append(f"not in the backup: the backup failed for it ({entry.error})")
