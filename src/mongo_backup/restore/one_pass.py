"""Restoring into new namespaces in one pass, undone if the backup proves damaged.

A restore that verifies the whole backup before its first write reads and parses every
line twice. When none of the namespaces it restores exists in the target (a copy into a
new database or deployment, a restore into an emptied one), there is a cheaper way to
keep nothing of a damaged backup: write while reading, check each member against the
manifest as it ends (:class:`~mongo_backup.archive.checksummed.ChecksummedReader`; a
stream's members are checked against the manifest at its end,
:class:`~mongo_backup.archive.streamed.StreamedReader`), and drop what this restore
created if anything fails before every member has proved whole. Until then it writes
only into collections it creates: a namespace that appears in the target meanwhile is
an error, never a merge (``WriteSettings.new_only``).

What "fails" covers: a member that does not match its checksum, a count that does not
match the manifest, a line that does not parse, a cut or truncated archive. Each drops
every collection this restore created, so the target ends as it began, and the error
says so in one line. For a stream (which cannot be resumed) the server refusing a write
and Ctrl-C do the same. An archive file's restore keeps its progress for ``--resume``
instead: an interruption or a server's refusal leaves what was written, recorded as
``unverified``, and a later run that finds the backup damaged (its check comes first)
drops those collections then (``restore/run.py``). After every member has proved whole
(indexes, views, the captured changes, users and roles) a failure is what it is after a
verify pass: what was done stays. Unlike a restore verified first, the collections being
filled are visible under their names while it runs.

The reader is a :class:`~mongo_backup.archive.backup_reader.CheckedAsRead` (its contract
is there).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pymongo.errors

from ..archive.backup_reader import CheckedAsRead
from ..archive.manifest import CollectionEntry
from ..errors import ArchiveError, Interrupted, MongoBackupError
from ..mongo.connection import connect
from ..redact import hosts_of, uri_secrets
from ..retry import driver_error_text
from .authz import apply_authz
from .namespaces import CollectionOutcome, Restorer
from .options import RestoreOptions
from .renames import Renamer, target_database
from .result import RestoreResult
from .selection import check_users_and_roles, inserts_client, renames_of, write_settings
from .state import RestoreState, remove_state, state_path

logger = logging.getLogger(__name__)


def restore_if_new(
    opts: RestoreOptions,
    reader: CheckedAsRead,
    committed: Callable[[], None] = lambda: None,
    resumable: bool = False,
) -> RestoreResult | None:
    """Restore ``reader`` in one pass if none of the namespaces it restores exists in the
    target; None (nothing written) if one does. ``committed`` is called once this path
    is taken (a pipe's recorder then forgets the bytes it kept for a fallback).

    ``resumable`` (an archive file): the restore records its progress for ``--resume``
    where any restore of this backup into this target does. Then only damage undoes the
    writes; an interruption or a server's refusal leaves them, recorded, as a restore
    verified first does. Otherwise (a stream, which cannot be resumed) every failure
    before the end undoes them."""
    started = time.perf_counter()
    plan = reader.plan
    names, selected = renames_of(opts, plan)
    state_file = state_path(plan, hosts_of(opts.uri), names.target) if resumable else None
    check_users_and_roles(opts, plan, names.target)
    secrets = uri_secrets(opts.uri)
    client = connect(opts.uri, timeout=opts.timeout)
    try:
        database = target_database(client, names, selected)
        planned = [names.entry(entry).name for entry in selected]
        present = sorted(set(planned) & set(database.list_collection_names()))
        if present:
            logger.info(
                "the target already holds %r: the backup is checked whole before the first write",
                present[0],
            )
            return None
        committed()
        logger.info(
            "restoring into new namespaces while checking the backup (a damaged one drops "
            "them again)"
        )
        inserts = inserts_client(opts)
        try:
            result = _restore(opts, reader, (database, inserts), names, selected, state_file)
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
    reader: CheckedAsRead,
    clients: tuple[Any, Any],
    names: Renamer,
    selected: list[CollectionEntry],
    state_file: Path | None,
) -> RestoreResult:
    """Restore; a failure before the backup has proved whole drops what this restore
    created (see :func:`restore_if_new` for ``state_file``). ``clients``: the target
    database, and a client for the inserts (see restore/run.py)."""
    database, inserts = clients
    held = reader.plan.databases or [reader.plan.database]
    with contextlib.ExitStack() as stack:
        # The inserter records its progress as for any restore; a stream cannot be
        # resumed, so its record is private and goes with the run.
        path = state_file or (
            Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mongo-backup-")))
            / "state.json"
        )
        state = RestoreState(source=reader.location, database=names.target, unverified=True)
        restorer = Restorer(
            database,
            # The lines are parsed as they come (no verify pass went first), and only
            # namespaces it creates are written: what it must undo is what it created
            # (--drop then only applies to what the captured changes write, after).
            replace(write_settings(opts, reader.plan.database), checked=False, new_only=True),
            uri_secrets(opts.uri),
            state,
            path,
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
            if not reader.complete and (state_file is None or isinstance(error, ArchiveError)):
                _undo(database, restorer.created)
                if state_file is not None:
                    remove_state(state_file)
                raise _undone(error, len(restorer.created)) from None
            # A resumable restore, or a backup proved whole: as after a verify pass, what
            # was done stays (indexes, views, captured changes, users come after that).
            if isinstance(error, KeyboardInterrupt) and state_file is not None:
                raise Interrupted(
                    "interrupted; what was restored so far is recorded: run the same "
                    "restore with --resume to continue it"
                ) from None
            if isinstance(error, KeyboardInterrupt):
                raise Interrupted(
                    "interrupted after the backup was checked whole: what was restored so far stays"
                ) from None
            raise
    if state_file is not None:
        remove_state(state_file)
    _settle(outcomes, reader, names)
    return RestoreResult(
        reader.location, names.target, outcomes, False, 0.0, restorer.replays, authz
    )


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
        return MongoBackupError(f"restoring: {driver_error_text(error, [])}; {kept}")
    if isinstance(error, ArchiveError):  # LineFormatError's arguments are its own
        return ArchiveError(f"{error}; {kept}")
    if isinstance(error, MongoBackupError):
        return type(error)(f"{error}; {kept}")
    return error


def _settle(outcomes: list[CollectionOutcome], reader: CheckedAsRead, names: Renamer) -> None:
    """The counts and failures the manifest gives each restored namespace (a stream's
    comes last: its plan has none)."""
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
