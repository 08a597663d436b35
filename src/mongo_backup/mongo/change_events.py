"""The few fields a capture needs from a change event, read from its raw BSON.

A capture looks at every event: its kind (an ``invalidate`` ends a stream, a ``rename``
may bring a wanted collection in), its cluster time (is it inside the window?) and its
collection (is it wanted?). Item access on a ``RawBSONDocument`` decodes the event's
whole top level into Python objects (sub-documents, the timestamp, the wall time) and
cost ~0.1 ms per event: most of a ``watch``'s CPU under a steady write load. Walking the
top-level elements of the bytes to those three fields costs a few microseconds.

Contract: :func:`event_fields` returns the operation type, the cluster time as one
comparable integer (the BSON timestamp's 64 bits: ``seconds << 32 | increment``, see
:func:`time_key`) and the collection name (``b""`` when the event has none, such as
``dropDatabase``; ``namespaced``: ``DB.COLLECTION``) for a well-formed change event;
``ValueError`` for malformed bytes.
:func:`event_kind_and_time` returns the first two alone, faster (a capture that keeps
every collection needs no more).
"""

from __future__ import annotations

from typing import Any

from bson.timestamp import Timestamp

# Value sizes of the fixed-size BSON types (type byte -> bytes).
_FIXED = {
    0x01: 8,  # double
    0x06: 0,  # undefined
    0x07: 12,  # ObjectId
    0x08: 1,  # bool
    0x09: 8,  # UTC datetime
    0x0A: 0,  # null
    0x10: 4,  # int32
    0x11: 8,  # timestamp
    0x12: 8,  # int64
    0x13: 16,  # decimal128
    0xFF: 0,  # MinKey
    0x7F: 0,  # MaxKey
}
_SIZED = {0x03, 0x04, 0x0F}  # document, array, code with scope: an int32 total size
_STRINGS = {0x02, 0x0D, 0x0E}  # string, code, symbol: int32 length, bytes, NUL

OPERATION_TYPE, CLUSTER_TIME, NAMESPACE = b"operationType", b"clusterTime", b"ns"


def time_key(value: Timestamp) -> int:
    """A timestamp as :func:`event_fields` gives cluster times."""
    return (value.time << 32) | value.inc


def value_end(raw: bytes, kind: int, start: int) -> int:
    """Where the value of type ``kind`` starting at ``raw[start]`` ends."""
    size = _FIXED.get(kind)
    if size is not None:
        return start + size
    if kind in _SIZED:
        return start + int.from_bytes(raw[start : start + 4], "little")
    if kind in _STRINGS:
        return start + 4 + int.from_bytes(raw[start : start + 4], "little")
    if kind == 0x05:  # binary: int32 length, subtype byte, bytes
        return start + 5 + int.from_bytes(raw[start : start + 4], "little")
    if kind == 0x0B:  # regex: pattern and options, two C strings
        return raw.index(0, raw.index(0, start) + 1) + 1
    if kind == 0x0C:  # DBPointer: a string, then an ObjectId
        return start + 4 + int.from_bytes(raw[start : start + 4], "little") + 12
    raise ValueError(f"unknown BSON type 0x{kind:02x}")


def _collection(raw: bytes, start: int, stop: int, namespaced: bool) -> bytes:
    """``coll`` of the ``ns`` document ``raw[start:stop]`` (``db.coll`` if ``namespaced``;
    b"" without a collection)."""
    pos, end = start + 4, stop - 1
    db = collection = b""
    while pos < end:
        kind = raw[pos]
        name_end = raw.index(0, pos + 1)
        value = name_end + 1
        value_stop = value_end(raw, kind, value)
        if kind == 0x02 and raw[pos + 1 : name_end] == b"db":
            db = raw[value + 4 : value_stop - 1]
        elif kind == 0x02 and raw[pos + 1 : name_end] == b"coll":
            collection = raw[value + 4 : value_stop - 1]
            if not namespaced:
                return collection
        pos = value_stop
    return db + b"." + collection if collection else b""


def token_time(token: Any) -> Timestamp | None:
    """The cluster time a MongoDB resume token stands at, or None if its format is not
    MongoDB's (hex KeyString, starting with the Timestamp type byte 0x82)."""
    data = token.get("_data") if hasattr(token, "get") else None
    if not isinstance(data, str) or len(data) < 18 or not data.startswith("82"):
        return None
    try:
        value = int(data[2:18], 16)
    except ValueError:
        return None
    return Timestamp(value >> 32, value & 0xFFFFFFFF)


_ID = b"\x03_id\x00"
_OPERATION = b"\x02operationType\x00"
_CLUSTER_TIME = b"\x11clusterTime\x00"


def event_kind_and_time(raw: bytes) -> tuple[bytes, int]:
    """(operation type, cluster time key) of one change event. The servers send ``_id``,
    ``operationType`` and ``clusterTime`` first, in that order: read in place; any other
    layout is walked (:func:`event_fields`)."""
    if raw.startswith(_ID, 4):
        pos = 9 + int.from_bytes(raw[9:13], "little")
        if raw.startswith(_OPERATION, pos):
            start = pos + len(_OPERATION)
            end = start + 4 + int.from_bytes(raw[start : start + 4], "little")
            if raw.startswith(_CLUSTER_TIME, end) and end + 22 <= len(raw):
                when = int.from_bytes(raw[end + 13 : end + 21], "little")
                return raw[start + 4 : end - 1], when
    operation, when, _ = event_fields(raw)
    return operation, when


def event_fields(raw: bytes, namespaced: bool = False) -> tuple[bytes, int, bytes]:
    """(operation type, cluster time key, collection) of one change event."""
    operation, when, collection = b"", -1, b""
    found = 0
    pos, end = 4, len(raw) - 1
    try:
        while pos < end and found < 3:
            kind = raw[pos]
            name_end = raw.index(0, pos + 1)
            name = raw[pos + 1 : name_end]
            value = name_end + 1
            value_stop = value_end(raw, kind, value)
            if name == OPERATION_TYPE and kind == 0x02:
                operation, found = raw[value + 4 : value_stop - 1], found + 1
            elif name == CLUSTER_TIME and kind == 0x11:
                when, found = int.from_bytes(raw[value:value_stop], "little"), found + 1
            elif name == NAMESPACE and kind == 0x03:
                collection, found = _collection(raw, value, value_stop, namespaced), found + 1
            pos = value_stop
    except IndexError:
        raise ValueError("a truncated change event") from None
    if when < 0 or not operation:
        raise ValueError("a change event without operationType or clusterTime")
    return operation, when, collection
