"""Applying captured change events to a database, in order, idempotently.

Restore replays the events a backup captured (the changes made while a full backup ran,
or an incremental backup's changes) after the documents are in. Replaying must give the
source's state at the last event even when a document already reflects some of the
events (a full backup read it after they happened), as mongorestore's oplog replay
does: inserts and replaces become upserts of the whole document, updates set and unset
fields, deletes and drops of what is already gone are no-ops.

Document events of one collection go to the server as ordered bulk writes of up to
:data:`BULK_OPS` operations; collection events (create, drop, rename, indexes) are
applied between them, in the order they happened. Events later than ``until`` are not
applied (restore ``--until``).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import pymongo.errors
from bson import decode, encode
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp
from pymongo import DeleteOne, ReplaceOne, UpdateOne
from pymongo.database import Database

from ..retry import NO_RETRIES, RetryPolicy, driver_error_text
from .confirmed import confirmed_command
from .deployment import DeploymentDatabase, namespace_in

logger = logging.getLogger(__name__)

BULK_OPS = 1000
_RAW = CodecOptions(document_class=RawBSONDocument)
# Decoding for the rare update that must be applied here: every value kept as it was.
_EXACT: CodecOptions[dict[str, Any]] = CodecOptions(
    datetime_conversion=DatetimeConversion.DATETIME_AUTO
)
_IGNORED_CODES = {
    26,  # NamespaceNotFound: renaming or indexing what a later event dropped
    27,  # IndexNotFound
    48,  # NamespaceExists: created by the full backup already
    85,  # IndexOptionsConflict: the index is there already
    86,  # IndexKeySpecsConflict
}
_DOCUMENT_EVENTS = {"insert", "replace", "update", "delete"}


class Names(Protocol):
    """How the events' collections are named in the target (restore --ns-from/--ns-to)."""

    def collection(self, name: str) -> str:
        """The target's name of the source's collection ``name``."""

    def source(self, name: str) -> str | None:
        """The source's collection the target's ``name`` holds, if any."""

    def pipeline(self, value: Any) -> Any:
        """A view's pipeline reading the target's collections."""


class SameNames:
    def collection(self, name: str) -> str:
        return name

    def source(self, name: str) -> str | None:
        return name

    def pipeline(self, value: Any) -> Any:
        return value


class Replacement:
    """``restore --drop`` through the replays of one restore: the target collections
    already replaced (restored from the archive, or dropped once before a replay's first
    write to them). Any other collection a replay writes is dropped first if the target
    holds it, never merged into; one a replay never reaches (past ``--until``, a
    rename's destination) is left alone."""

    def __init__(self, restored: Iterable[str]) -> None:
        self.done = set(restored)
        self._present: set[str] | None = None

    def before_write(self, db: Database[Any], target: str) -> None:
        if target in self.done:
            return
        self.done.add(target)
        if self._present is None:
            self._present = set(db.list_collection_names())
        if target in self._present:
            logger.info("%s: dropped (--drop) before the changes write it anew", target)
            db.drop_collection(target)


class ChangeApplier:
    """Applies raw change events to ``db``; ``counts`` tallies what was done. ``wanted``
    is asked with the source's collection names; ``names`` gives the target's."""

    def __init__(
        self,
        db: Database[Any],
        *,
        wanted: Callable[[str], bool],
        until: Timestamp | None = None,
        names: Names | None = None,
        replacement: Replacement | None = None,
    ) -> None:
        self.db = db
        self.replacement = replacement  # --drop (see Replacement)
        # A deployment's events name their collections DB.COLLECTION (see deployment.py).
        self.namespaced = isinstance(db, DeploymentDatabase)
        self.wanted = wanted
        self.names = names or SameNames()
        self.until = until
        self.counts: Counter[str] = Counter()
        self.last_time: Timestamp | None = None
        self.stopped = False  # an event later than ``until`` was reached
        self.problems: list[str] = []  # what could not be applied as it happened
        self._pending: list[Any] = []
        self._pending_collection: str | None = None

    def apply_all(self, events: Iterable[bytes]) -> None:
        for raw in events:
            if not self.apply(raw):
                break
        self.flush()

    def apply(self, raw: bytes) -> bool:
        """Apply one event; False once an event is later than ``until``."""
        event = RawBSONDocument(raw, _RAW)
        cluster_time = event["clusterTime"]
        if self.until is not None and cluster_time > self.until:
            self.stopped = True
            return False
        kind = event["operationType"]
        collection = self._name(event.get("ns"))
        renamed_to = self._name(event.get("to"))
        if not self._wanted(collection) and not (renamed_to and self._wanted(renamed_to)):
            self.counts["skipped"] += 1
            return True
        if self.replacement is not None and collection and self._wanted(collection):
            target = self.names.collection(collection)
            if target not in self.replacement.done:
                self.flush()  # the pending writes first, to the collections they were for
                self.replacement.before_write(self.db, target)
        if kind in _DOCUMENT_EVENTS:
            self._document_event(kind, self.names.collection(collection), event)
        else:
            self.flush()
            self._collection_event(kind, collection, event)
        self.counts[kind] += 1
        self.last_time = cluster_time
        return True

    def _name(self, namespace: Any) -> str:
        """The event's collection (DB.COLLECTION for a deployment); "" if none."""
        collection = str((namespace or {}).get("coll") or "")
        if self.namespaced and collection:
            return f"{namespace['db']}.{collection}"
        return collection

    def _wanted(self, collection: str) -> bool:
        local = collection.partition(".")[2] if self.namespaced else collection
        if local.startswith("system.") and local != "system.js":
            return False
        return collection == "" or self.wanted(collection)

    def _document_event(self, kind: str, collection: str, event: RawBSONDocument) -> None:
        if collection != self._pending_collection or len(self._pending) >= BULK_OPS:
            self.flush()
            self._pending_collection = collection
        key = {"_id": event["documentKey"]["_id"]}
        if kind in ("insert", "replace"):
            self._pending.append(ReplaceOne(key, event["fullDocument"], upsert=True))
        elif kind == "delete":
            self._pending.append(DeleteOne(key))
        else:
            self._update(collection, key, event["updateDescription"])

    def _update(self, collection: str, key: dict[str, Any], description: Any) -> None:
        if description.get("disambiguatedPaths"):
            # Field names with dots or digits that a dotted path would misread.
            self.flush()
            self._update_exactly(collection, key, description)
            return
        for truncated in description.get("truncatedArrays") or []:
            push = {"$push": {truncated["field"]: {"$each": [], "$slice": truncated["newSize"]}}}
            self._pending.append(UpdateOne(key, push))
        update: dict[str, Any] = {}
        if len(description["updatedFields"]):
            update["$set"] = description["updatedFields"]
        removed = description.get("removedFields") or []
        if removed:
            update["$unset"] = {field: "" for field in removed}
        if update:
            self._pending.append(UpdateOne(key, update))

    def _update_exactly(self, collection: str, key: dict[str, Any], description: Any) -> None:
        """Apply an update whose paths need the exact field names, on the document as
        the target holds it."""
        target = self.db[collection]
        raw = target.with_options(codec_options=_RAW).find_one(key)
        if raw is None:
            return  # deleted by a later event: the replay will get there
        document = decode(raw.raw, _EXACT)
        updated = decode(description["updatedFields"].raw, _EXACT)
        paths = decode(description["disambiguatedPaths"].raw, _EXACT)
        for truncated in description.get("truncatedArrays") or []:
            name = truncated["field"]
            path = paths.get(name) or name.split(".")
            holder, last = _walk(document, path)
            if holder is not None:
                holder[last] = holder[last][: truncated["newSize"]]
        for name, value in updated.items():
            holder, last = _walk(document, paths.get(name) or name.split("."), create=True)
            if holder is not None:
                if isinstance(holder, list) and isinstance(last, int) and last >= len(holder):
                    holder.extend([None] * (last + 1 - len(holder)))
                holder[last] = value
        for name in description.get("removedFields") or []:
            holder, last = _walk(document, paths.get(name) or name.split("."))
            if isinstance(holder, dict):
                holder.pop(last, None)
        target.replace_one(key, RawBSONDocument(encode(document, codec_options=_EXACT)))

    def _collection_event(self, kind: str, source: str, event: RawBSONDocument) -> None:
        description = event.get("operationDescription")
        described = decode(description.raw, _EXACT) if description is not None else {}
        collection = self.names.collection(source)  # the target's name
        try:
            if kind == "create":
                described.pop("idIndex", None)
                if "viewPipeline" in described:  # some servers' name for a view's pipeline
                    described["pipeline"] = described.pop("viewPipeline")
                described.pop("nsType", None)
                if isinstance(described.get("viewOn"), str):
                    described["viewOn"] = self._view_source(event, described["viewOn"])
                if "pipeline" in described:
                    described["pipeline"] = self.names.pipeline(described["pipeline"])
                self._confirmed(self.db, {"create": collection, **described})
            elif kind == "drop":
                self.db.drop_collection(collection)
            elif kind == "rename":
                target = self._name(event["to"])
                moved = not self.namespaced and event["to"]["db"] != event["ns"]["db"]
                if moved or not self._wanted(target):
                    self.db.drop_collection(collection)  # moved out of what is restored
                elif not self._wanted(source):
                    self.problems.append(
                        f"{target!r} was renamed from {source!r}, which is not "
                        f"restored, so it is incomplete (add --collection {source})"
                    )
                else:
                    rename = {
                        "renameCollection": namespace_in(self.db, collection),
                        "to": namespace_in(self.db, self.names.collection(target)),
                        "dropTarget": True,
                    }
                    self._confirmed(self.db.client.admin, rename)
            elif kind == "createIndexes":
                indexes = {"createIndexes": collection, "indexes": described["indexes"]}
                self._confirmed(self.db, indexes, RetryPolicy())  # may run twice
            elif kind == "dropIndexes":
                for index in described.get("indexes", []):
                    self.db[collection].drop_index(index["name"])
            elif kind == "modify":
                described.pop("index", None)
                if described:
                    self._confirmed(self.db, {"collMod": collection, **described})
            elif kind == "dropDatabase":
                prefix = f"{event['ns']['db']}." if self.namespaced else ""
                for name in self.db.list_collection_names():
                    original = self.names.source(name)  # the dropped database's?
                    if original and original.startswith(prefix) and self._wanted(original):
                        self.db.drop_collection(name)
            else:
                logger.warning("a %r event on %r is not applied (not supported)", kind, collection)
        except pymongo.errors.OperationFailure as error:
            if error.code not in _IGNORED_CODES:
                # One collection event the target refuses must not abort the replay of
                # everything after it: report it (restore exits 3).
                refused = (
                    "" if isinstance(error, pymongo.errors.WriteConcernError) else " was refused"
                )
                reason = driver_error_text(error, [])
                self.problems.append(f"a {kind!r} event on {collection!r}{refused}: {reason}")

    def _confirmed(
        self, db: Database[Any], command: dict[str, Any], policy: RetryPolicy = NO_RETRIES
    ) -> None:
        """A collection event's command, with the write concern of the replay's writes."""
        confirmed_command(db, self.db.write_concern, command, policy)

    def _view_source(self, event: RawBSONDocument, view_on: str) -> str:
        """A created view's ``viewOn`` (a collection of the view's own database), renamed."""
        if not self.namespaced:
            return self.names.collection(view_on)
        return self.names.collection(f"{event['ns']['db']}.{view_on}").partition(".")[2]

    def flush(self) -> None:
        if not self._pending:
            return
        assert self._pending_collection is not None
        self.db[self._pending_collection].bulk_write(self._pending, ordered=True)
        self._pending = []


def _walk(document: Any, path: list[Any], create: bool = False) -> tuple[Any, Any]:
    """The container holding the last step of ``path`` and that step (a field name or
    an array index), or (None, None) when the path leads nowhere."""
    holder = document
    for step in path[:-1]:
        if isinstance(holder, dict):
            if step not in holder:
                if not create:
                    return None, None
                holder[step] = {}
            holder = holder[step]
        elif isinstance(holder, list) and (index := _index(step)) is not None:
            if index >= len(holder):
                return None, None
            holder = holder[index]
        else:
            return None, None
    last = path[-1]
    if isinstance(holder, list):
        last = _index(last)
    return (holder, last) if last is not None else (None, None)


def _index(step: Any) -> int | None:
    if isinstance(step, int):
        return step
    return int(step) if isinstance(step, str) and step.isdigit() else None
