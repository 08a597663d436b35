"""The lean raw batch cursor gives pymongo's ``find_raw_batches`` batches, byte for byte:
first batches and getMores, empty results, big documents, filters, hints, sorts,
projections and sessions."""

from __future__ import annotations

from typing import Any

import pytest
from bson import Binary, Decimal128, Int64, ObjectId, Regex, Timestamp

from mongo_backup.mongo.raw_batches import find_raw_batches


@pytest.fixture
def mixed(client: Any, db_name: str) -> Any:
    collection = client[db_name].mixed
    collection.insert_many(
        [
            {
                "_id": i,
                "oid": ObjectId(),
                "n": Int64(i),
                "d": Decimal128(str(i / 7)),
                "nested": {"a": [i, {"b": "x" * (i % 50)}], "empty": {}},
                "list": list(range(i % 5)),
            }
            for i in range(2500)
        ]
    )
    collection.insert_one({"_id": "big", "blob": Binary(b"\x01" * (5 << 20))})
    client[db_name].create_collection("empty")
    return client[db_name]


@pytest.mark.parametrize(
    ("collection", "args", "kwargs"),
    [
        ("mixed", ({},), {"batch_size": 1000}),
        ("mixed", ({},), {"batch_size": 7}),
        ("mixed", ({},), {}),
        ("mixed", ({"n": {"$gte": 100}},), {"batch_size": 300, "hint": [("_id", 1)]}),
        ("mixed", ({},), {"batch_size": 500, "hint": [("$natural", 1)]}),
        ("mixed", ({"_id": {"$type": "int"}},), {"sort": [("_id", -1)], "batch_size": 999}),
        ("mixed", ({}, {"_id": 1}), {"batch_size": 100}),
        ("mixed", ({"_id": "big"},), {}),
        ("mixed", ({"_id": "none"},), {}),
        ("empty", ({},), {"batch_size": 10}),
    ],
)
def test_the_same_batches_as_pymongo(
    mixed: Any, collection: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    expected = list(mixed[collection].find_raw_batches(*args, **kwargs))
    assert list(find_raw_batches(mixed[collection], *args, **kwargs)) == expected


def test_the_same_batches_in_a_session(client: Any, mixed: Any) -> None:
    with client.start_session() as session:
        expected = list(mixed.mixed.find_raw_batches({}, batch_size=400, session=session))
        got = list(find_raw_batches(mixed.mixed, {}, batch_size=400, session=session))
    assert got == expected and len(got) > 1


def test_a_server_error_is_pymongos(mixed: Any) -> None:
    import pymongo.errors

    with pytest.raises(pymongo.errors.OperationFailure) as ours:
        list(find_raw_batches(mixed.mixed, {"$bogus": 1}))
    with pytest.raises(pymongo.errors.OperationFailure) as theirs:
        list(mixed.mixed.find_raw_batches({"$bogus": 1}))
    assert ours.value.code == theirs.value.code


@pytest.mark.parametrize(
    "reply",
    [
        {
            "ok": 0.0,
            "errmsg": "overloaded",
            "code": 462,
            "errorLabels": ["SystemOverloadedError", "RetryableError"],
        },
        {
            "ok": 1.0,
            "cursor": {
                "firstBatch": [{"_id": 1}, {"_id": 2, "a": [1, {"b": 2}]}],
                "id": Int64(0),
                "ns": "db.c",
                "other": [1, "x"],
                "postBatchResumeToken": {"_data": "82"},
            },
            "$clusterTime": {"clusterTime": 5},
            "labels": ["a"],
        },
        {"ok": 1.0, "cursor": {"nextBatch": [], "id": Int64(7), "ns": "db.c"}},
        {  # the batch last in its cursor, the cursor not first: found all the same
            "ok": 1.0,
            "operationTime": Timestamp(5, 1),
            "cursor": {"id": Int64(3), "ns": "db.c", "nextBatch": [{"x": Regex("a")}]},
        },
        {  # a regex in the reply itself: decoded pymongo's way, whole
            "r": Regex("^a", "i"),
            "cursor": {"firstBatch": [{"_id": 1}], "id": Int64(0), "ns": "db.c"},
            "ok": 1.0,
        },
    ],
)
def test_a_reply_unpacks_as_pymongo_unpacks_it(reply: dict[str, Any]) -> None:
    """Error labels (which decide retries), arrays beside the batches, empty batches:
    the same values as pymongo's own unpacking (pure: no server)."""
    import bson
    from pymongo import MongoClient
    from pymongo.cursor import RawBatchCursor
    from pymongo.message import _OpMsg

    from mongo_backup.mongo.raw_batches import _lean_cursor_class

    lean = _lean_cursor_class()
    assert lean is not None
    collection = MongoClient("mongodb://localhost:1", connect=False).db.c
    fields = {"cursor": {"firstBatch": 1, "nextBatch": 1}}
    unpacked = []
    for cls in (RawBatchCursor, lean):
        cursor = cls(collection)
        message = _OpMsg(0, bson.encode(reply))
        unpacked.append(cursor._unpack_response(message, None, cursor._codec_options, fields))
    assert unpacked[0] == unpacked[1]


def test_a_batch_is_copied_once_on_its_way_out_of_the_reply() -> None:
    """A batch of one 4 MiB document: unpacking it allocates the batch once (pymongo's
    way copies it four times, and a batch can be one 16 MiB document) (pure)."""
    import tracemalloc

    import bson
    from pymongo import MongoClient
    from pymongo.message import _OpMsg

    from mongo_backup.mongo.raw_batches import _lean_cursor_class

    lean = _lean_cursor_class()
    assert lean is not None
    size = 4 << 20
    reply = {"cursor": {"firstBatch": [{"b": Binary(b"x" * size)}], "id": Int64(0)}, "ok": 1.0}
    message = _OpMsg(0, memoryview(bson.encode(reply)))
    cursor = lean(MongoClient("mongodb://localhost:1", connect=False).db.c)
    tracemalloc.start()
    try:
        unpacked = cursor._unpack_response(message, None, cursor._codec_options, None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(unpacked[0]["cursor"]["firstBatch"][0]) > size
    assert peak < 1.5 * size
