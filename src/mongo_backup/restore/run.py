"""The restore core: a backup back into a database, byte for byte.

Order of work, as mongorestore's: check the whole backup first (unless told not to),
then per collection create it with its options, insert its documents, build its
indexes; views last, in dependency order. Into namespaces the target does not hold,
the check runs while the documents are written instead, and a damaged backup drops
what it created (:mod:`.one_pass`): one read of the archive instead of two. Documents
go from the archive stream through libbson straight to raw BSON and into
``insert_many`` as ``RawBSONDocument``: no Python dicts, no unpacking to disk, never a
whole collection in memory.

A collection that cannot be restored completely (duplicate ``_id``, documents the
validator refuses, an index or option the server refuses) is reported with counts and
the run goes on; the result's exit code is then 3.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pymongo.errors

from ..archive.chain import Link, read_manifest, resolve_chain
from ..archive.checksummed import ChecksummedReader, can_check
from ..archive.lines import read_documents
from ..archive.reader import BackupReader, open_backup
from ..archive.single_file import SingleFileReader, is_single_file
from ..errors import (
    ArchiveError,
    ConfigError,
    Interrupted,
    MongoBackupError,
)
from ..location.pipe import is_stdio
from ..location.transfer import local_copy
from ..location.windows import archive_at, is_location
from ..mongo.change_apply import Replacement
from ..mongo.connection import connect, durable_writes
from ..redact import hosts_of, uri_secrets
from ..retry import driver_error_text
from ..verify.run import verify
from .authz import apply_authz, planned_authz
from .namespaces import Restorer
from .one_pass import restore_if_new
from .options import RestoreOptions
from .renames import target_database
from .replay import Replay, apply_increment, plan_chain
from .result import RestoreResult
from .selection import (
    check_users_and_roles,
    inserts_client,
    renames_of,
    wanted_namespaces,
    write_settings,
)
from .state import (
    RestoreState,
    load_state,
    remove_state,
    state_path,
)
from .streamed import restore_piped

logger = logging.getLogger(__name__)


def restore(source: str, uri: str, db: str | None = None, **options: Any) -> RestoreResult:
    """Restore the backup at ``source`` into database ``db`` (default: the backup's)."""
    return run_restore(RestoreOptions(source=str(source), uri=uri, db=db, **options))


def _open(opts: RestoreOptions) -> BackupReader:
    if is_single_file(Path(opts.source)):
        if len(opts.collections) != 1 or not opts.db:
            raise ConfigError(
                "restoring a single JSON file needs --db and exactly one --collection"
            )
        return SingleFileReader(Path(opts.source), opts.db, opts.collections[0])
    return open_backup(opts.source)


def run_restore(opts: RestoreOptions) -> RestoreResult:
    """Restore ``opts.source``: a local backup, or a storage URL or encrypted archive,
    fetched (checked, decrypted) into a temporary folder first."""
    opts.check()
    if is_location(opts.source):
        opts = replace(opts, source=_archive_in(opts))
    head = b""
    if is_stdio(opts.source):  # restored as it arrives, when that can keep nothing
        piped, head = restore_piped(opts)
        if piped is not None:
            return piped
    with local_copy(opts.source, opts.identity, opts.endpoint_url, head) as local:
        result = _run_restore(replace(opts, source=str(local)))
    result.source = opts.source
    return result


def _run_restore(opts: RestoreOptions) -> RestoreResult:
    started = time.perf_counter()
    chain = _chain(opts)
    if not chain and (one_pass := _restore_in_one_pass(opts)) is not None:
        return one_pass
    if opts.verify_first:
        for source in [str(link.path) for link in chain] or [opts.source]:
            _verify_first(replace(opts, source=source))
    if chain:  # the full backup first, then each increment
        result = _restore_one(replace(opts, source=str(chain[0].path)), started)
        if opts.dry_run:
            result.replays.extend(Replay(link.id, "would apply") for link in chain[1:])
        else:
            result.replays.extend(_apply_increments(opts, chain[0], chain[1:], result.replacement))
        result.source = opts.source
        result.duration = time.perf_counter() - started
        return result
    return _restore_one(opts, started)


def _restore_in_one_pass(opts: RestoreOptions) -> RestoreResult | None:
    """A full backup restored into namespaces the target does not hold: checked while it
    is written, instead of a verify pass before (see :mod:`.one_pass`); None where that
    does not apply (nothing written then)."""
    if not opts.verify_first or opts.dry_run or opts.resume or is_single_file(Path(opts.source)):
        return None
    with _open(opts) as reader:
        manifest = reader.manifest
        if manifest.kind != "full" or not can_check(manifest):
            return None  # an increment's chain, a mongodump folder: verified first
        return restore_if_new(opts, ChecksummedReader(reader), resumable=True)


def _chain(opts: RestoreOptions) -> list[Link]:
    """The backups to apply when ``source`` is an increment or ``--until`` is given;
    [] for a plain restore of one backup. Refuses a broken chain before any write."""
    path = Path(opts.source)
    if not path.is_file() or is_single_file(path):
        if opts.until is not None:
            raise ConfigError("--until needs a backup archive (a chain of them)")
        return []
    manifest = read_manifest(path)
    if manifest.kind == "full" and opts.until is None:
        return []
    chain = plan_chain(resolve_chain(path, manifest), opts.until)
    names = " -> ".join(link.path.name for link in chain)
    logger.info("restoring the chain %s", names)
    return chain


def _archive_in(opts: RestoreOptions) -> str:
    """The archive of the location ``opts.source`` to restore (path or URL)."""
    until = (opts.until.time, opts.until.inc) if opts.until is not None else None
    return archive_at(opts.source, opts.db, until, opts.endpoint_url)


def _apply_increments(
    opts: RestoreOptions, full: Link, links: list[Link], replacement: Replacement | None
) -> list[Replay]:
    wanted = wanted_namespaces(opts, full.manifest.database)
    names, _ = renames_of(opts, full.manifest)
    target = names.target
    # The increments' writes are acknowledged once durable, as the documents are.
    client = connect(opts.uri, timeout=opts.timeout, **durable_writes(opts.uri))
    try:
        database = target_database(client, names, full.manifest.collections)
        return [
            apply_increment(
                database, link, wanted, opts.until, opts.verify_first, names, replacement
            )
            for link in links
        ]
    except pymongo.errors.PyMongoError as error:
        raise MongoBackupError(
            f"applying an increment to {target!r}: "
            f"{driver_error_text(error, uri_secrets(opts.uri))}"
        ) from None
    finally:
        client.close()


def _restore_one(opts: RestoreOptions, started: float) -> RestoreResult:
    with _open(opts) as reader:
        manifest = reader.manifest
        names, selected = renames_of(opts, manifest)
        target = names.target
        check_users_and_roles(opts, manifest, target)
        state_file = state_path(manifest, hosts_of(opts.uri), target)
        state = _starting_state(opts, state_file, target)
        client = connect(opts.uri, timeout=opts.timeout)
        try:
            inserts = inserts_client(opts)
        except BaseException:
            client.close()
            raise
        try:
            secrets = uri_secrets(opts.uri)
            restorer = Restorer(
                target_database(client, names, selected),
                write_settings(opts, manifest.database),
                secrets,
                state,
                state_file,
                target_database(inserts, names, selected),
                names,
            )
            outcomes = restorer.run(reader, selected)
            authz, held = None, manifest.databases or [manifest.database]
            if restorer.authz is not None and opts.dry_run:
                authz = planned_authz(restorer.authz, held)
            elif restorer.authz is not None:
                authz = apply_authz(client, restorer.authz, held, opts.drop, secrets)
        except pymongo.errors.PyMongoError as error:  # refused by the server: one clear line
            raise MongoBackupError(
                f"restore into {target!r}: {driver_error_text(error, uri_secrets(opts.uri))}"
            ) from None
        except KeyboardInterrupt:
            raise Interrupted(
                "interrupted; what was restored so far is recorded: run the same restore "
                "with --resume to continue it"
            ) from None
        finally:
            inserts.close()
            client.close()
    if state is not None:
        remove_state(state_file)
    return RestoreResult(
        opts.source,
        target,
        outcomes,
        opts.dry_run,
        time.perf_counter() - started,
        restorer.replays,
        authz,
        restorer.replacement,
    )


def _starting_state(opts: RestoreOptions, path: Path, target: str) -> RestoreState | None:
    """The state to continue (``--resume``), or a fresh one; None for a dry run."""
    if opts.dry_run:
        return None
    saved = load_state(path)
    if opts.resume and saved is not None:
        done = sum(c.status == "done" for c in saved.collections.values())
        logger.info("resuming the restore into %r: %d collections already done", target, done)
        return saved
    if opts.resume:
        logger.info("no interrupted restore of this backup into %r: starting from the top", target)
    elif saved is not None:
        logger.info(
            "an interrupted restore of this backup into %r was recorded; starting over "
            "(--resume would continue it)",
            target,
        )
    return RestoreState(source=opts.source, database=target)


def _verify_first(opts: RestoreOptions) -> None:
    """Refuse a damaged backup before a single document is written."""
    if is_single_file(Path(opts.source)):
        with _open(opts) as reader:
            for entry, stream in reader.members():
                for _ in read_documents(stream, entry.file or ""):
                    pass
        return
    report = verify(opts.source)
    if not report.ok:
        raise ArchiveError(
            f"{opts.source}: {report.problems[0]} "
            f"(nothing was restored; --no-verify skips this check){_undo_unverified(opts)}"
        )


def _undo_unverified(opts: RestoreOptions) -> str:
    """After a failed check: drop what an interrupted one-pass restore of this damaged
    backup into this target had created (its state says which); what to add to the error."""
    with _open(opts) as reader:
        manifest = reader.manifest
    names, _ = renames_of(opts, manifest)
    path = state_path(manifest, hosts_of(opts.uri), names.target)
    saved = load_state(path)
    if saved is None or not saved.unverified or opts.dry_run:
        return ""
    client = connect(opts.uri, timeout=opts.timeout)
    try:
        database = target_database(client, names, manifest.collections)
        for name in saved.collections:
            database.drop_collection(name)
    except pymongo.errors.PyMongoError as error:
        text = driver_error_text(error, uri_secrets(opts.uri))
        return f"; an interrupted restore of it into {names.target!r} left collections: {text}"
    finally:
        client.close()
    remove_state(path)
    count = len(saved.collections)
    return f"; the {count} collections an interrupted restore of it had created are dropped"


__all__ = ["RestoreOptions", "RestoreResult", "restore"]
