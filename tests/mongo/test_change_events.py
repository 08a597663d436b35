"""Reading a change event's kind, cluster time and collection from its bytes
(``mongo/change_events.py``) gives what decoding the event gives, whatever the event
holds (a document with fields named ``ns`` or ``clusterTime``, any BSON type) and in
whatever order the server sends its fields; malformed bytes are a ValueError."""

from __future__ import annotations

import datetime as dt
from typing import Any

import bson
import pytest
from bson import Binary, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp
from bson.code import Code
from hypothesis import given
from hypothesis import strategies as st

from mongo_backup.mongo.change_events import event_fields, event_kind_and_time, time_key

TOKEN = {"_data": "8267A1B2C3000000012B0229296E"}
AT = Timestamp(1796412336, 8)


def _event(**fields: Any) -> bytes:
    event = {"_id": TOKEN, "operationType": "insert", "clusterTime": AT, **fields}
    return bson.encode(event)


def test_an_insert_of_a_hostile_document() -> None:
    document = {
        "_id": ObjectId(),
        "ns": {"db": "x", "coll": "not this one"},
        "clusterTime": Timestamp(1, 1),
        "operationType": "drop",
        "odd": [Regex("a.*", "i"), Code("f()", {"x": 1}), MinKey(), MaxKey(), None],
        "n": [Int64(2**40), Decimal128("1.5"), 2.5, True, dt.datetime(2026, 1, 1)],
        "b": Binary(b"\x03ns\x00\x11clusterTime\x00", 0),
    }
    raw = _event(
        wallTime=dt.datetime(2026, 12, 4),
        fullDocument=document,
        ns={"db": "shop", "coll": "orders"},
        documentKey={"_id": document["_id"]},
    )
    assert event_fields(raw) == (b"insert", time_key(AT), b"orders")
    assert event_kind_and_time(raw) == (b"insert", time_key(AT))


def test_another_field_order_is_walked() -> None:
    raw = bson.encode(
        {"ns": {"coll": "c", "db": "d"}, "clusterTime": AT, "_id": TOKEN, "operationType": "drop"}
    )
    assert event_fields(raw) == (b"drop", time_key(AT), b"c")
    assert event_kind_and_time(raw) == (b"drop", time_key(AT))


def test_an_event_without_a_collection() -> None:
    raw = _event(operationType="dropDatabase", ns={"db": "shop"})
    assert event_fields(raw) == (b"dropDatabase", time_key(AT), b"")


@pytest.mark.parametrize("cut", [5, 20, 40])
def test_malformed_bytes_are_a_value_error(cut: int) -> None:
    raw = _event(ns={"db": "shop", "coll": "orders"})
    with pytest.raises(ValueError):
        event_fields(raw[:cut])
    with pytest.raises(ValueError):
        event_fields(bson.encode({"_id": TOKEN}))  # no kind, no time


keys = st.text().filter(lambda key: "\x00" not in key)  # BSON keys are C strings
values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
    max_leaves=8,
)


@given(
    document=st.dictionaries(keys, values, max_size=5),
    collection=st.text(min_size=1).filter(lambda name: "\x00" not in name),
    when=st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
)
def test_the_bytes_say_what_decoding_says(
    document: dict[str, Any], collection: str, when: tuple[int, int]
) -> None:
    stamp = Timestamp(*when)
    raw = bson.encode(
        {
            "_id": TOKEN,
            "operationType": "replace",
            "clusterTime": stamp,
            "fullDocument": document,
            "ns": {"db": "d", "coll": collection},
        }
    )
    assert event_fields(raw) == (b"replace", time_key(stamp), collection.encode())
    assert event_kind_and_time(raw) == (b"replace", time_key(stamp))
