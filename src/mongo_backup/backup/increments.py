"""Incremental backups: what an increment reads, and from where.

Two modes (``backup --incremental``):

- **changes** (no ``--since-field``; replica sets and sharded clusters): the change
  events since the base backup's point: inserts, updates, replaces, deletes and
  collection events. Read by :mod:`mongo_backup.mongo.change_capture`; the increment
  holds them as one member, ``~changes.jsonl``.
- **field** (``--since-field FIELD``, the seed's idea): for each collection, the
  documents whose FIELD is at or after the base's *high-water mark* for it. The mark is
  the largest FIELD value the collection held when the base was *planned*, read before
  any of its documents, so a document written while the base ran (whatever its place
  in the scan) carries a FIELD at or after it, and ``$gte`` (not ``$gt``) keeps every
  document that shares the mark's value. Deletes are not seen in this mode, nor are
  documents without the field; restore upserts the documents by ``_id``.

A full backup taken with ``--since-field`` records the marks, so that the first
increment is small; a base without a mark for a collection gives the whole collection.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import pymongo.errors

from ..errors import ConfigError, MongoBackupError
from ..mongo.cluster_time import from_json
from ..mongo.source import Intent, MongoSource, from_extjson, to_extjson
from ..retry import driver_error_text
from .checkpoint import Plan

if TYPE_CHECKING:
    from ..archive.chain import Link

logger = logging.getLogger(__name__)


def _value_at(document: Any, path: str) -> Any:
    value = document
    for step in path.split("."):
        if not isinstance(value, dict) or step not in value:
            return None
        value = value[step]
    return value


def watermark_of(source: MongoSource, name: str, field: str, floor: Any = None) -> Any:
    """The largest value of ``field`` in collection ``name`` (canonical Extended JSON),
    or None if no document has it. ``floor``, the previous mark, bounds the search to the
    documents an increment reads anyway: a range an index on the field answers on every
    server (some do not walk an index backwards for a plain sort)."""
    condition = {"$gte": from_extjson(floor)} if floor is not None else {"$exists": True}
    try:
        with source.snapshot_session() as session:  # at the time the documents are read
            document = source.db[name].find_one(
                {field: condition}, {field: 1, "_id": 0}, sort=[(field, -1)], session=session
            )
    except pymongo.errors.PyMongoError as error:
        raise MongoBackupError(
            f"reading the high-water mark of {name!r}.{field}: "
            f"{driver_error_text(error, source.secrets)}"
        ) from None
    value = _value_at(document, field) if document is not None else None
    return to_extjson(value) if value is not None else None


def watermarks(
    source: MongoSource, intents: list[Intent], field: str, floors: dict[str, Any]
) -> dict[str, Any]:
    return {
        intent.name: watermark_of(source, intent.name, field, floors.get(intent.name))
        for intent in intents
        if intent.has_data
    }


def plan_increment(base: Link, field: str | None, intents: list[Intent]) -> dict[str, Any]:
    """The ``increment`` part of an incremental backup's plan, continuing ``base``."""
    # Imported here: the chain's readers serve increments, not the start of every backup.
    from ..archive.chain import parent_link

    manifest = base.manifest
    increment: dict[str, Any] = {
        "mode": "field" if field else "changes",
        "field": field,
        "parent": parent_link(base),
    }
    if field is None:
        point = manifest.point or {}
        if "cluster_time" not in point or "resume_token" not in point:
            raise ConfigError(
                f"{base.path.name} records no point in the server's history (a standalone "
                "server, or a --since-field increment): a change-stream increment needs a "
                "base taken on a replica set; use --since-field FIELD, or take a full backup"
            )
        from_json(point["cluster_time"])
        increment["from"] = point["cluster_time"]
        increment["start_token"] = point["resume_token"]
        return increment
    if (manifest.increment or {}).get("mode") == "changes":
        raise ConfigError(
            f"{base.path.name} is a change-stream increment: a --since-field increment "
            "needs a full backup or a --since-field increment as its base"
        )
    marks = {
        entry.name: entry.watermark["value"]
        for entry in manifest.collections
        if entry.watermark and entry.watermark.get("field") == field
    }
    since: dict[str, Any] = {}
    for intent in intents:
        if not intent.has_data:
            continue
        since[intent.name] = marks.get(intent.name)
        # A mark of None was recorded for a collection without the field: all of it
        # is new since. No mark at all: the base was not taken with this field.
        if intent.name not in marks:
            logger.warning(
                "%s: %s recorded no high-water mark for %r: all its documents are "
                "exported (a backup with --since-field %s records one)",
                intent.name,
                base.path.name,
                field,
                field,
            )
    increment["since"] = since
    return increment


def query_for(plan: Plan, collection: str) -> dict[str, Any] | None:
    """The filter of ``collection``'s reads: ``--query``, the range of a field
    increment, both, or None (every document)."""
    filters: list[dict[str, Any]] = []
    if plan.query is not None and collection in plan.query["collections"]:
        filters.append(from_extjson(plan.query["filter"]))
    increment = plan.increment
    if increment and increment.get("mode") == "field":
        since = increment["since"].get(collection)
        if since is not None:
            filters.append({increment["field"]: {"$gte": from_extjson(since)}})
    if len(filters) > 1:
        return {"$and": filters}
    return filters[0] if filters else None


def kept_query(
    base: Link | None, asked: dict[str, Any] | None, collections: list[str]
) -> dict[str, Any] | None:
    """The ``query`` of a plan: ``--query`` for the named collections; an increment
    keeps its base's (asking for another one is refused)."""
    inherited = base.manifest.query if base is not None else None
    if inherited is not None:
        if asked is not None and asked != inherited["filter"]:
            raise ConfigError(
                f"--query differs from the filter of {base.path.name if base else 'the base'}: "
                "an increment keeps its base's filter (leave --query out)"
            )
        return inherited
    if asked is None:
        return None
    return {"filter": asked, "collections": sorted(set(collections))}


def entry_fields(plan: Plan, collection: str) -> dict[str, Any]:
    """The manifest fields a collection gets from ``--since-field``."""
    fields: dict[str, Any] = {}
    if plan.since_field is not None:
        fields["watermark"] = {
            "field": plan.since_field,
            "value": plan.watermarks.get(collection),
        }
    increment = plan.increment
    if increment and increment.get("mode") == "field":
        value = increment["since"].get(collection)
        fields["since"] = {"field": increment["field"], "value": value}
    return fields
