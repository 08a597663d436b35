"""``mongodump --oplog``'s ``oplog.bson`` as change events, so that it is replayed as ours.

mongodump --oplog writes the oplog entries made while it read the collections; mongorestore
--oplogReplay applies them after the documents, bringing the data to the moment the dump
ended. Our restore already replays the change events a backup captured (idempotently:
inserts and replaces are upserts, updates set and unset paths, drops of what is gone do
nothing), so each oplog entry of the dumped database becomes the change event a change
stream would have shown for it, and the dump's reader presents them as the ``$changes``
member: ``restore``, ``verify`` and ``convert`` need nothing more.

Contract: :func:`oplog_events` turns a batch of raw oplog entries of ``databases`` (others
are left out, as are no-ops) into raw change events in the same order; a transaction's
``applyOps`` gives one event per inner operation, at the transaction's time. An entry it cannot read
(unknown operation, a command it does not know, malformed fields) is a ValueError naming
the entry's time, never a silently skipped write.

Update entries carry the server's own format: a replacement document, ``$set``/``$unset``
(``$v: 1``), or the delta of MongoDB 5.0+ (``$v: 2``, ``diff``: ``u`` set, ``i`` insert,
``d`` delete, ``s<field>`` a nested diff, arrays with ``a: true``, ``u<index>``,
``s<index>`` and ``l`` the new length), turned into ``updatedFields`` (dotted paths),
``removedFields`` and ``truncatedArrays``.
"""

from __future__ import annotations

from collections.abc import Iterator
from collections.abc import Set as AbstractSet
from typing import Any

import bson
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.raw_bson import RawBSONDocument

# Values kept exactly as stored (dates outside Python's range, Int64, binary subtypes).
_EXACT: CodecOptions[dict[str, Any]] = CodecOptions(
    datetime_conversion=DatetimeConversion.DATETIME_AUTO
)
_RAW = CodecOptions(document_class=RawBSONDocument)
_DROP_INDEX_COMMANDS = ("dropIndexes", "deleteIndexes")


def oplog_events(batch: bytes, databases: AbstractSet[str]) -> Iterator[bytes]:
    """The change events (raw BSON) of ``databases`` in ``batch``, raw oplog entries one
    after another."""
    for entry in bson.decode_all(batch, _RAW):
        yield from _events(entry, databases, entry.get("ts"))


def _events(entry: Any, databases: AbstractSet[str], when: Any) -> Iterator[bytes]:
    op, namespace = entry.get("op"), str(entry.get("ns") or "")
    if op == "n":
        return
    if op == "c" and "applyOps" in entry["o"]:  # a transaction: its operations, in order
        for inner in entry["o"]["applyOps"]:
            yield from _events(inner, databases, when)
        return
    db, _, collection = namespace.partition(".")
    if db not in databases:
        return
    if when is None:
        raise ValueError(f"an oplog entry on {namespace!r} has no ts")
    event: dict[str, Any] = {"clusterTime": when, "ns": {"db": db, "coll": collection}}
    if op == "i":
        document = entry["o"]
        event |= {"operationType": "insert", "documentKey": {"_id": document["_id"]},
                  "fullDocument": document}  # fmt: skip
    elif op == "d":
        event |= {"operationType": "delete", "documentKey": {"_id": entry["o"]["_id"]}}
    elif op == "u":
        event |= _update(entry, when)
    elif op == "c":
        described = _command(bson.decode(entry["o"].raw, _EXACT), when)
        if described is None:
            return
        event |= described
        if event["operationType"] != "dropDatabase":
            event["ns"]["coll"] = event.pop("collection")
        else:
            event["ns"] = {"db": db}
    else:
        raise ValueError(f"oplog entry at {_show(when)}: unknown operation {op!r}")
    yield bson.encode(event)


def _update(entry: Any, when: Any) -> dict[str, Any]:
    change, key = entry["o"], {"_id": entry["o2"]["_id"]}
    fields = list(change.keys())
    if "$v" not in change and not any(name.startswith("$") for name in fields):
        return {"operationType": "replace", "documentKey": key, "fullDocument": change}
    decoded = bson.decode(change.raw, _EXACT)
    updated: dict[str, Any] = {}
    removed: list[str] = []
    truncated: list[dict[str, Any]] = []
    if "diff" in decoded:
        _diff(decoded["diff"], "", updated, removed, truncated)
    else:
        unknown = set(decoded) - {"$v", "$set", "$unset"}
        if unknown:
            raise ValueError(f"oplog entry at {_show(when)}: unknown update {sorted(unknown)}")
        updated.update(decoded.get("$set") or {})
        removed.extend(decoded.get("$unset") or {})
    description = {"updatedFields": updated, "removedFields": removed,
                   "truncatedArrays": truncated}  # fmt: skip
    return {"operationType": "update", "documentKey": key, "updateDescription": description}


def _diff(
    diff: dict[str, Any],
    prefix: str,
    updated: dict[str, Any],
    removed: list[str],
    truncated: list[dict[str, Any]],
) -> None:
    """A ``$v: 2`` delta at ``prefix`` as dotted paths."""
    if diff.get("a") is True:  # an array: u<index> set, s<index> nested, l new length
        for key, value in diff.items():
            if key == "l":
                truncated.append({"field": prefix.rstrip("."), "newSize": value})
            elif key.startswith("u"):
                updated[prefix + key[1:]] = value
            elif key.startswith("s"):
                _diff(value, f"{prefix}{key[1:]}.", updated, removed, truncated)
        return
    for section, value in diff.items():
        if section in ("u", "i"):
            updated.update({prefix + name: item for name, item in value.items()})
        elif section == "d":
            removed.extend(prefix + name for name in value)
        elif section.startswith("s"):
            _diff(value, f"{prefix}{section[1:]}.", updated, removed, truncated)
        else:
            raise ValueError(f"an update delta with an unknown part {section!r}")


def _command(command: dict[str, Any], when: Any) -> dict[str, Any] | None:
    """The event of a command entry; None for one that changes no data (the start or the
    abort of a two-phase index build: its commit builds it)."""
    name = next(iter(command), "")
    target = command.get(name)
    if name in ("startIndexBuild", "abortIndexBuild"):
        return None
    if name == "commitIndexBuild":
        return {"operationType": "createIndexes", "collection": target,
                "operationDescription": {"indexes": command.get("indexes") or []}}  # fmt: skip
    if name == "create":
        options = {k: v for k, v in command.items() if k not in ("create", "idIndex")}
        return {"operationType": "create", "collection": target, "operationDescription": options}
    if name == "drop":
        return {"operationType": "drop", "collection": target}
    if name == "dropDatabase":
        return {"operationType": "dropDatabase"}
    if name == "renameCollection":
        to_db, _, to_collection = str(command.get("to") or "").partition(".")
        return {"operationType": "rename", "collection": str(target).partition(".")[2],
                "to": {"db": to_db, "coll": to_collection}}  # fmt: skip
    if name == "createIndexes":
        spec = {k: v for k, v in command.items() if k != name}
        indexes = spec.pop("indexes", None) or [spec]
        return {"operationType": "createIndexes", "collection": target,
                "operationDescription": {"indexes": indexes}}  # fmt: skip
    if name in _DROP_INDEX_COMMANDS:
        index = command.get("index")
        names = index if isinstance(index, list) else [index]
        return {"operationType": "dropIndexes", "collection": target,
                "operationDescription": {"indexes": [{"name": n} for n in names]}}  # fmt: skip
    if name == "collMod":
        options = {k: v for k, v in command.items() if k != "collMod"}
        return {"operationType": "modify", "collection": target, "operationDescription": options}
    raise ValueError(f"oplog entry at {_show(when)}: the command {name!r} cannot be replayed")


def _show(when: Any) -> str:
    return f"{when.time}:{when.inc}" if hasattr(when, "time") else repr(when)
