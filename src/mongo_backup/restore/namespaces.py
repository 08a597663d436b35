"""Restoring one backup's namespaces into a database: create, insert, index, views.

:class:`Restorer` does the work for :func:`mongo_backup.restore.run.run_restore`, in
mongorestore's order: create every selected collection with its options, insert the
documents (raw BSON, several insert workers), build the indexes, then create the views,
those that read from other views last. With a :class:`RestoreState` it records its
progress as it goes and continues where a previous run stopped (see
:mod:`.state`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pymongo.errors
from bson.timestamp import Timestamp
from pymongo.database import Database

from ..archive.lines import read_documents
from ..archive.manifest import CollectionEntry
from ..archive.reader import BackupReader
from ..errors import ArchiveError, MongoBackupError
from ..mongo.change_apply import Replacement
from ..mongo.confirmed import confirmed_command
from ..mongo.inserter import BATCH_BYTES, InsertCounts, RawInserter
from ..mongo.source import from_extjson
from ..retry import RetryPolicy, driver_error_text
from .authz import Authz, read_authz_member
from .renames import NO_RENAMES, Renamer, views_in_order
from .replay import Replay, events_of, replay, spooled
from .state import CollectionState, RestoreState, Watermark, progress_hook

logger = logging.getLogger(__name__)

# The restore state is saved at least every SAVE_INTERVAL seconds, and before a batch
# goes past the saved bound, which then moves SAVE_STEP_BATCHES batches further.
SAVE_INTERVAL = 1.0
SAVE_STEP_BATCHES = 32
NAMESPACE_EXISTS = 48


@dataclass
class CollectionOutcome:
    name: str
    type: str
    expected: int | None  # None: the source records no count (a mongodump folder)
    inserted: int = 0
    already: int = 0  # restored by the interrupted run that --resume continued
    duplicates: int = 0
    rejected: int = 0
    failed: int = 0
    indexes_built: int = 0
    problems: list[str] = field(default_factory=list)
    action: str = "restore"  # what a dry run would do, or what was done

    @property
    def ok(self) -> bool:
        return not (self.problems or self.duplicates or self.rejected or self.failed)


@dataclass(frozen=True)
class WriteSettings:
    """How the namespaces are written: the part of RestoreOptions a Restorer reads."""

    wanted: Callable[[str], bool]  # --collection / --exclude-collection
    drop: bool = False
    indexes: bool = True
    options: bool = True  # create collections with their options
    dry_run: bool = False
    bypass_validation: bool = False
    jobs: int = 2  # insert workers
    batch_size: int = 1000
    checked: bool = True  # lines were verified first: parse them again only if not
    until: Timestamp | None = None  # captured changes later than this are left out
    users_and_roles: bool = False  # read the users and roles member (restore/authz.py)
    # Only into namespaces this restore creates: one that exists is an error, not a merge
    # (a stream restored as it arrives undoes its writes by dropping what it created).
    new_only: bool = False


class Restorer:
    def __init__(
        self,
        database: Database[Any],
        opts: WriteSettings,
        secrets: list[str],
        state: RestoreState | None,
        state_file: Path,
        inserts: Database[Any] | None = None,
        names: Renamer = NO_RENAMES,
    ) -> None:
        self.db = database
        self.names = names  # --ns-from/--ns-to: the entries arrive under the backup's names
        # Documents go through a client of their own: it fails an insert that stalls (see
        # --stall-timeout), while index builds on ``database`` may rightly take long.
        self.inserts = inserts if inserts is not None else database
        self.opts = opts
        self.secrets = secrets
        self.state = state
        self.state_file = state_file
        self.replays: list[Replay] = []
        self.authz: Authz | None = None  # --users-and-roles: the backup's users and roles
        self.created: list[str] = []  # the collections this restore created
        # --drop: what the captured changes (and a chain's increments) may write without
        # dropping it first: the selected namespaces, restored from the archive.
        self.replacement: Replacement | None = None
        # Which collections' change events are replayed: those restored, and those the
        # events create (unless --collection or --exclude leave them out).
        self.wanted = opts.wanted

    def _error(self, error: BaseException) -> str:
        return driver_error_text(error, self.secrets)

    def run(self, reader: BackupReader, selected: list[CollectionEntry]) -> list[CollectionOutcome]:
        # The backup's name of each selected entry -> the entry under its target name.
        renamed = {entry.name: self.names.entry(entry) for entry in selected}
        selected = list(renamed.values())
        if self.opts.drop:
            self.replacement = Replacement(entry.name for entry in selected)
        existing = set(self.db.list_collection_names())
        outcomes: dict[str, CollectionOutcome] = {}
        for entry in selected:
            # None: not known yet (a mongodump folder; a stream's plan, whose entries get
            # their counts and checksums with the manifest at its end).
            known = reader.manifest.counted and (entry.file is None or entry.sha256 is not None)
            count = entry.count if known else None
            outcome = CollectionOutcome(entry.name, entry.type, count)
            outcomes[entry.name] = outcome
            if entry.status != "ok":
                outcome.problems.append(
                    f"not in the backup: the backup failed for it ({entry.error})"
                )
            started = self.state.collections.get(entry.name) if self.state else None
            if started is not None and entry.type == "timeseries" and started.status != "done":
                # No unique _id in a timeseries collection: documents sent again would be
                # stored twice, so an interrupted one starts over.
                self.db.drop_collection(entry.name)
                existing.discard(entry.name)
                started = None
                del self.state.collections[entry.name]  # type: ignore[union-attr]
            if started is not None:
                outcome.action = "continue" if started.status != "done" else "already restored"
            elif entry.type != "view":
                self._prepare(entry, outcome, entry.name in existing)
                if self.state is not None:
                    # Prepared: a resumed restore must not drop or prepare it again.
                    self.state.collections[entry.name] = CollectionState()
        if self.state is not None:
            self.state.save(self.state_file)
        with contextlib.ExitStack() as stack:
            changes: IO[bytes] | None = None
            # Members stream in archive order; the unselected ones are read past, not held.
            for entry, stream in reader.members():
                if entry.type == "changes" and not self.opts.dry_run:
                    changes = stack.enter_context(spooled(stream))  # replayed after indexes
                    continue
                if entry.type == "users" and self.opts.users_and_roles:
                    self.authz = read_authz_member(stream)  # recreated after the data
                    continue
                target = renamed.get(entry.name)
                if target is None or entry.type == "view":
                    continue
                self._restore_member(target, stream, outcomes[target.name])
            for entry in selected:
                if entry.type != "view" and self.opts.indexes:
                    self._build_indexes(entry, outcomes[entry.name])
            for entry in views_in_order([e for e in selected if e.type == "view"]):
                self._create_view(entry, outcomes[entry.name], entry.name in existing)
            changes_entry = reader.manifest.changes
            if changes is not None and changes_entry is not None:
                # The changes' writes are acknowledged once durable, as the documents are.
                durable = self.db.with_options(write_concern=self.inserts.write_concern)
                self.replays.append(
                    replay(
                        durable,
                        reader.manifest.backup_id or "backup",
                        events_of(changes, changes_entry, self.opts.checked),
                        self.wanted,
                        self.opts.until,
                        self.names,
                        self.replacement,
                    )
                )
        return list(outcomes.values())

    def _restore_member(
        self, entry: CollectionEntry, stream: Any, outcome: CollectionOutcome
    ) -> None:
        if self.state is None:
            return  # a dry run
        saved = self.state.collections.setdefault(entry.name, CollectionState())
        if saved.status == "done":
            outcome.already = entry.count
            return
        self._insert(entry, stream, outcome, saved)
        saved.status = "done"
        self.state.note(self.state_file, entry.name)

    def _prepare(self, entry: CollectionEntry, outcome: CollectionOutcome, exists: bool) -> None:
        if exists and self.opts.new_only:
            raise _appeared(entry.name)
        if exists and self.opts.drop:
            outcome.action = "drop and restore"
            if not self.opts.dry_run:
                self.db.drop_collection(entry.name)
            exists = False
        elif exists:
            outcome.action = "add to existing collection"
        if exists or self.opts.dry_run:
            return
        options = entry.create_options
        if not self.opts.options:
            options = {k: v for k, v in options.items() if k in ("timeseries", "clusteredIndex")}
        if "clusteredIndex" in options and isinstance(options["clusteredIndex"], dict):
            options["clusteredIndex"] = {
                k: v for k, v in options["clusteredIndex"].items() if k != "v"
            }

        def create(options: dict[str, Any]) -> None:
            # Confirmed: a create rolled back would leave the inserts a plain collection.
            try:
                command = {"create": entry.name, **from_extjson(options)}
                confirmed_command(self.db, self.inserts.write_concern, command)
            except pymongo.errors.WriteConcernError as error:
                self.created.append(entry.name)  # applied: this restore's to undo
                raise MongoBackupError(f"{entry.name}: {self._error(error)}") from None
            self.created.append(entry.name)

        try:
            create(options)
        except pymongo.errors.OperationFailure as error:
            if self.opts.new_only and error.code == NAMESPACE_EXISTS:
                raise _appeared(entry.name) from None
            outcome.problems.append(f"collection options refused: {self._error(error)}")
            try:  # go on without the refused options, as a plain collection
                create({})
            except pymongo.errors.PyMongoError as second:
                if self.opts.new_only:
                    raise
                outcome.problems.append(f"cannot create collection: {self._error(second)}")

    def _insert(
        self,
        entry: CollectionEntry,
        stream: Any,
        outcome: CollectionOutcome,
        saved: CollectionState,
    ) -> None:
        assert entry.file is not None and self.state is not None
        collection = self.inserts.get_collection(entry.name)
        counts = InsertCounts(already=saved.acknowledged)
        skip, replay_until = saved.acknowledged, saved.limit
        if skip:
            logger.info("%s: continuing after %d documents", entry.name, skip)
        watermark = Watermark(skip)
        before_send = progress_hook(
            self.state,
            self.state_file,
            entry.name,
            watermark,
            SAVE_STEP_BATCHES * self.opts.batch_size,
            SAVE_INTERVAL,
        )
        position = 0

        def send(batch: list[bytes]) -> None:
            before_send(len(batch))
            replay = position - len(batch) < replay_until
            inserter.submit(batch, replay, watermark.send(len(batch)))

        try:
            with RawInserter(
                collection,
                self.opts.jobs,
                self.opts.bypass_validation,
                counts,
                self._error,
                watermark.answered,
            ) as inserter:
                batch: list[bytes] = []
                size = 0
                documents = read_documents(stream, entry.file, checked=self.opts.checked)
                for _number, raw in documents:
                    position += 1
                    if position <= skip:
                        continue
                    batch.append(raw)
                    size += len(raw)
                    if len(batch) >= self.opts.batch_size or size >= BATCH_BYTES:
                        send(batch)
                        batch, size = [], 0
                if batch:
                    send(batch)
                self._check_count(entry, outcome, position)
        finally:
            saved.acknowledged = watermark.acknowledged
            self.state.note(self.state_file, entry.name)
        outcome.already = counts.already
        outcome.inserted, outcome.duplicates = counts.inserted, counts.duplicates
        outcome.rejected, outcome.failed = counts.rejected, counts.failed
        outcome.problems.extend(counts.problems)
        if outcome.expected is None:
            logger.info("%s: %d documents inserted", entry.name, counts.inserted)
        else:
            logger.info("%s: %d of %d documents inserted", entry.name, counts.inserted, entry.count)
        if counts.duplicates:
            logger.warning(
                "%s: %d documents not inserted: their _id already exists (use --drop)",
                entry.name,
                counts.duplicates,
            )
        if counts.rejected:
            logger.warning(
                "%s: %d documents refused by the validator (--bypass-document-validation)",
                entry.name,
                counts.rejected,
            )

    def _check_count(self, entry: CollectionEntry, outcome: CollectionOutcome, read: int) -> None:
        """A member read once, unverified (restore/one_pass), is counted here, where a
        verify pass would have counted it (raised inside the inserter: its queue drops)."""
        if self.opts.new_only and outcome.expected not in (None, read):
            raise ArchiveError(
                f"{entry.file}: holds {read} documents, the manifest says {outcome.expected}"
            )

    def _build_indexes(self, entry: CollectionEntry, outcome: CollectionOutcome) -> None:
        specs = entry.secondary_indexes
        if not specs or self.opts.dry_run:
            return
        # Confirmed as the documents are (an unconfirmed index may roll back), on ``db``,
        # whose commands may rightly take long; built again after a step-down (an index
        # already built answers at once).
        concern = self.inserts.write_concern

        def build(indexes: list[Any]) -> None:
            command = {"createIndexes": entry.name, "indexes": indexes}
            confirmed_command(self.db, concern, command, RetryPolicy(), self.secrets)

        try:
            build(from_extjson(specs))
            outcome.indexes_built = len(specs)
            return
        except pymongo.errors.OperationFailure:
            pass  # find out which one: build them one at a time
        for spec in specs:
            try:
                build([from_extjson(spec)])
                outcome.indexes_built += 1
            except pymongo.errors.OperationFailure as error:
                unconfirmed = isinstance(error, pymongo.errors.WriteConcernError)
                name = f"index {spec.get('name')!r}" + ("" if unconfirmed else " refused")
                message = f"{name}: {self._error(error)}"
                outcome.problems.append(message)
                logger.warning("%s: %s", entry.name, message)

    def _create_view(
        self, entry: CollectionEntry, outcome: CollectionOutcome, exists: bool
    ) -> None:
        if exists and not self.opts.drop:
            outcome.action = "view exists, kept"
            return
        if self.opts.dry_run:
            outcome.action = "create view"
            return
        if exists:
            self.db.drop_collection(entry.name)
        options = from_extjson(entry.create_options)
        try:
            command = {"create": entry.name, **options}
            confirmed_command(self.db, self.inserts.write_concern, command)
            outcome.action = "create view"
        except pymongo.errors.OperationFailure as error:
            refused = "" if isinstance(error, pymongo.errors.WriteConcernError) else " refused"
            outcome.problems.append(f"view{refused}: {self._error(error)}")


def _appeared(name: str) -> MongoBackupError:
    """A namespace a new-only restore (restore/streamed.py) found there after all."""
    return MongoBackupError(f"{name!r} appeared in the target as the restore began")
