"""The backup core: a database to a folder of Extended JSON Lines, then to one archive.

Layout (the seed script's, kept exactly)::

    {out_dir}/backup_{YYYYmmdd_HHMMSS}/            while writing (UTC time stamp)
    {out_dir}/backup_data/backup_{ts}.tar[.gz|.zst] when done; the folder is removed

:func:`run_backup` returns a :class:`BackupResult`; it raises only for failures that leave
no archive (configuration, connection, an empty database, archiving itself). A
collection that fails is recorded in the manifest as failed, logged with its
traceback, and the run goes on (exit code 3).

A backup is planned first (:mod:`.planning`, saved by :mod:`.checkpoint`): namespaces,
then *units* of work, a collection each or, above ``split_threshold``, one per ``_id``
range. The plan is saved
in the working folder before any data is read, and the units are exported by
:class:`~mongo_backup.backup.exporter.UnitRunner`. ``resume=True`` (or a folder) loads the plan
of an unfinished backup instead and exports only what is missing; the result is the
same archive an uninterrupted run would have written (same bytes in every member,
because every collection with an ``_id`` index is read in ``_id`` order).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pymongo import MongoClient

from ..archive.manifest import MANIFEST_NAME, CollectionEntry, Manifest, manifest_bytes
from ..archive.writer import remove_compressed, write_archive
from ..errors import (
    ArchiveError,
    DestinationError,
    HistoryLost,
    Interrupted,
    MongoBackupError,
)
from ..files import private_file
from ..location.locking import location_lock
from ..mongo.change_capture import ChangeFollower
from ..mongo.cluster_time import SnapshotCheck
from ..mongo.connection import connect
from ..mongo.deployment import DeploymentDatabase
from ..mongo.source import MongoSource
from ..names import ALL_DATABASES, ARCHIVE_FOLDER, SUFFIXES, collection_filter, scope_text
from ..redact import uri_secrets
from ..retry import RetryPolicy
from .checkpoint import Plan, remove_checkpoints
from .consistency import ListingCheck, Outcome, capture_increment, finish, start_reads
from .exporter import NoProgress, Progress, UnitRunner
from .manifest_builder import build_manifest
from .options import BackupOptions, BackupResult
from .planning import find_resumable, new_plan

if TYPE_CHECKING:
    from ..archive.chain import Link
    from .pipe_sender import PipeSender

# Imported where they are used, below: what only some backups need (an increment's base,
# users and roles, a destination, encryption, an archive sent as it is written) stays
# out of the start of every other backup, where each module is a wait before the first
# document is asked for.

logger = logging.getLogger(__name__)


def backup(
    uri: str,
    db: str,
    out_dir: str | os.PathLike[str] = "backups",
    *,
    progress: Progress | None = None,
    **options: Any,
) -> BackupResult:
    """Back up database ``db`` at ``uri`` into ``out_dir``; see :class:`BackupOptions`."""
    return run_backup(BackupOptions(uri=uri, db=db, out_dir=Path(out_dir), **options), progress)


@dataclass
class KeptConnection:
    """A client and a change stream kept from one increment to the next (``watch``): an
    increment every few seconds then costs no new connection, handshake or ``aggregate``.
    Connected on first use; the caller closes it. Used only by change-stream increments
    (a backup that reads documents needs a client with its own snapshot check)."""

    client: MongoClient[Any] | None = None
    follower: ChangeFollower = field(default_factory=ChangeFollower)
    server: dict[str, Any] | None = None  # MongoSource.server_info, asked once

    def connected(self, opts: BackupOptions) -> MongoClient[Any]:
        if self.client is None:
            self.client = connect(opts.uri, timeout=opts.timeout, stall_timeout=opts.stall_timeout)
        return self.client

    def close(self) -> None:
        self.follower.close()
        if self.client is not None:
            self.client.close()
            self.client, self.server = None, None


def run_backup(
    opts: BackupOptions,
    progress: Progress | None = None,
    base: Link | None = None,
    kept: KeptConnection | None = None,
) -> BackupResult:
    """Run one backup. ``base`` (with ``opts.incremental``) is the backup the increment
    continues, known to the caller (``watch`` keeps it: its archives may be encrypted or
    uploaded); by default it is ``opts.base`` or the newest archive in ``opts.out_dir``.
    ``kept``: the connection a change-stream increment uses (else one of its own)."""
    opts.check()
    location = opts.resume.parent if isinstance(opts.resume, Path) else Path(opts.out_dir)
    with location_lock(location, f"a backup of {scope_text(opts.db)}", wait=opts.lock_wait):
        return _locked_backup(opts, progress or NoProgress(), base, kept)


def _locked_backup(
    opts: BackupOptions, progress: Progress, base: Link | None, kept: KeptConnection | None
) -> BackupResult:
    started = time.perf_counter()
    resumable = find_resumable(opts.resume, Path(opts.out_dir), opts.db)
    if resumable is not None:
        opts = opts.resuming(*resumable)
    check = SnapshotCheck()
    kept = kept if _changes_only(opts, resumable) else None
    client = kept.connected(opts) if kept is not None else _connect(opts, check)
    sender: PipeSender | None = None
    try:
        policy = RetryPolicy(opts.retries, opts.retry_delay)
        known = kept.server if kept is not None else None
        source = MongoSource(
            client, opts.db, uri_secrets(opts.uri), policy, known, _deployment(client, opts)
        )
        if resumable is None:
            if not opts.incremental:
                base = None
            elif base is None:
                from ..archive.chain import find_base

                base = find_base(Path(opts.out_dir), opts.db, opts.base)
            plan, folder = new_plan(source, opts.plan_request(_ids_at(opts)), base)
            if kept is not None:
                kept.server = source.server
        else:
            plan, folder = resumable
        authz = _users_and_roles(opts, client, plan, folder)
        if opts.sent_while_exported:  # its module is loaded for those backups only
            from .live_archive import live_sender

            sender = live_sender(opts, folder, plan, authz)
        runner = UnitRunner(
            source,
            folder,
            plan,
            jobs=opts.jobs,
            nice=opts.nice,
            policy=policy,
            checkpoint_interval=opts.checkpoint_interval,
            progress=progress,
            on_done=sender.unit_done if sender is not None else None,
            reader_waits=opts.to_stdout,
        )
        if sender is not None:
            sender.on_failure = runner.abandon
            sender.raise_if_failed()  # a reader gone before the export began
        resumed = resumable is not None
        outcome = _export(opts, client, source, folder, plan, runner, check, resumed, kept)
    except BaseException as error:
        if sender is not None:
            sender.abort()  # the reader (or the store) sees a cut stream: it keeps nothing
            if isinstance(error, MongoBackupError) and error is sender.failure:
                raise _broken(error, folder) from None
        raise
    finally:
        if kept is None:
            client.close()
    try:
        manifest = build_manifest(folder, plan, runner, outcome)
        if authz is not None:
            manifest.collections.append(authz[0])
            manifest.credentials = authz[1]
        with private_file(folder / MANIFEST_NAME) as handle:
            handle.write(manifest_bytes(manifest))
        archive, url = _archive(folder, manifest, opts, sender)
    except BaseException as error:
        if sender is not None:
            sender.abort()
        if isinstance(error, KeyboardInterrupt):
            raise Interrupted(
                f"interrupted; the partial backup is kept in {folder}: "
                "run the same backup with --resume to continue it"
            ) from None
        raise
    took = time.perf_counter() - started
    return BackupResult(archive, folder, manifest, took, url)


def _export(
    opts: BackupOptions,
    client: MongoClient[Any],
    source: MongoSource,
    folder: Path,
    plan: Plan,
    runner: UnitRunner,
    check: SnapshotCheck,
    resumed: bool,
    kept: KeptConnection | None,
) -> Outcome:
    """Read the documents (or, for a change-stream increment, the changes); where the
    backup stands in the server's history."""
    wanted = collection_filter(
        opts.collections, opts.exclude, opts.db, opts.ns_include, opts.ns_exclude
    )
    if plan.increment and plan.increment["mode"] == "changes":
        try:
            follower = kept.follower if kept is not None else None
            return capture_increment(source, folder, plan, wanted, follower)
        except HistoryLost:
            shutil.rmtree(folder, ignore_errors=True)  # nothing a --resume could finish
            raise
    start_reads(plan, resumed, folder)
    listing = None
    if not plan.increment:  # checked beside the reads while they are still at the snapshot
        listing = ListingCheck(source, plan, lambda: check.honoured and not source.snapshot_lost)
        runner.after_first_unit = listing.start
    runner.run([unit for unit in plan.units if unit.file not in plan.done])
    if plan.increment:  # a --since-field increment: no change capture
        honoured = check.honoured and not source.snapshot_lost and not resumed
        return Outcome("snapshot" if honoured and plan.consistency else "none", None, None)
    return finish(client, source, folder, plan, check, wanted, listing)


def _users_and_roles(
    opts: BackupOptions, client: MongoClient[Any], plan: Plan, folder: Path
) -> tuple[CollectionEntry, bool] | None:
    """--users-and-roles: read them before any document (a refusal costs nothing), and
    write their member; its entry and whether it holds credentials."""
    if not opts.users_and_roles:
        return None
    try:
        # admin's users and roles are the server's, never a database's (--include-admin)
        databases = [db for db in plan.databases or [opts.db] if db != "admin"]
        from ..mongo.users import read_users_and_roles

        found = read_users_and_roles(client, databases, uri_secrets(opts.uri))
    except MongoBackupError:
        if not opts.resume:
            shutil.rmtree(folder, ignore_errors=True)  # nothing read yet: nothing to keep
        raise
    from .authz import write_authz_member

    layout = plan.layout
    return write_authz_member(
        folder, layout.compress, layout.keep_folder, found, encrypted=bool(opts.encrypt_to)
    )


def _deployment(client: MongoClient[Any], opts: BackupOptions) -> DeploymentDatabase | None:
    """The databases a backup of several reads, as one (None: a backup of one)."""
    if opts.db != ALL_DATABASES:
        return None
    return DeploymentDatabase(client, opts.databases or None, include_admin=opts.include_admin)


def _changes_only(opts: BackupOptions, resumable: tuple[Plan, Path] | None) -> bool:
    """A change-stream increment: it reads no documents (a backup that does needs a
    client of its own, with this backup's snapshot check)."""
    if resumable is not None:
        return (resumable[0].increment or {}).get("mode") == "changes"
    return bool(opts.incremental) and opts.since_field is None


def _connect(opts: BackupOptions, check: SnapshotCheck) -> MongoClient[Any]:
    return connect(
        opts.uri, timeout=opts.timeout, stall_timeout=opts.stall_timeout, event_listeners=[check]
    )


def _ids_at(opts: BackupOptions) -> frozenset[str]:
    """The backup ids at ``--dest``: a new backup must not take one (without a local copy,
    two backups in one second would otherwise get one name, and an upload never replaces
    an archive)."""
    if not opts.dest:
        return frozenset()
    from ..destinations import open_destination
    from ..location.catalog import archive_ids

    return archive_ids(open_destination(opts.dest, endpoint_url=opts.endpoint_url))


def _broken(error: MongoBackupError, folder: Path) -> MongoBackupError:
    """:func:`~mongo_backup.backup.live_archive.broken`, loaded when an archive failed."""
    from .live_archive import broken

    return broken(error, folder)


def _archive(
    folder: Path, manifest: Manifest, opts: BackupOptions, sender: PipeSender | None = None
) -> tuple[Path | None, str | None]:
    """Write (or stream) the archive, then encrypt and upload it as asked: the local
    archive left, and the URL it was uploaded to."""
    archive_dir = Path(opts.out_dir) / ARCHIVE_FOLDER
    destination = archive_dir / f"{folder.name}{SUFFIXES[opts.compress]}"
    members = [(entry.file, entry.bytes) for entry in manifest.data_entries if entry.file]
    recipients: list[Any] = []
    if opts.encrypt_to:
        from ..archive import encryption

        recipients = encryption.recipients(opts.encrypt_to)
    url: str | None = None
    local: Path | None = destination
    try:
        if sender is not None:
            from .live_archive import send_rest

            local = None
            try:
                url = send_rest(sender, members, manifest, bool(recipients))
            except ArchiveError as error:  # a store's error is told below
                raise _broken(error, folder) from None
        else:
            archive_dir.mkdir(parents=True, exist_ok=True)
            write_archive(folder, members, destination, opts.compress)
    except OSError as error:
        raise ArchiveError(
            f"archiving failed ({error.strerror or error}); the exported files are kept in "
            f"{folder}: run the same backup with --resume to archive them"
        ) from error
    except DestinationError as error:
        raise _broken(error, folder) from error
    if opts.keep_folder:
        remove_compressed(folder, members)
        remove_checkpoints(folder)  # a kept folder is not an unfinished backup
    else:
        remove_checkpoints(folder)  # first: a half-removed folder is no unfinished backup
        shutil.rmtree(folder, ignore_errors=True)
    if local is not None:
        logger.info("archive written: %s", local)
        if recipients or opts.dest:
            from .delivery import deliver_file

            local, url = deliver_file(
                local,
                manifest,
                dest=opts.dest,
                endpoint_url=opts.endpoint_url,
                recipients=recipients,
                keep_local=opts.keep_local,
            )
    return local, url


def backup_database(mongo_uri: str, db_name: str, out_root: str, pretty: bool = False) -> str:
    """The seed script's API: back up into ``out_root``, return the plain ``.tar``'s path."""
    result = backup(mongo_uri, db_name, out_root, pretty=pretty, compress="none")
    assert result.archive is not None
    return str(result.archive)


__all__ = ["BackupOptions", "BackupResult", "NoProgress", "Progress", "backup", "backup_database"]
