"""The C converter (archive/_canonical.c) against python-bsonjs, byte for byte.

The C converter is an optimisation only: for every batch, BatchEncoder with it must write
exactly what the python-bsonjs path writes, escape lines and errors included. Generated
documents cover every BSON type (the rare ones must make it hand the document over),
hand-built hostile elements (invalid UTF-8, NaN payloads, bool bytes other than 0/1,
binary subtype 2) and damaged batches (any byte changed, any cut).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import struct
from collections.abc import Callable

import bson
import bsonjs
import pytest
from bson import (
    Binary,
    Code,
    DatetimeMS,
    Decimal128,
    Int64,
    MaxKey,
    MinKey,
    ObjectId,
    Regex,
    Timestamp,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bsontools import raw_document
from conftest import BSON_CORPUS
from mongo_backup.archive import extjson
from mongo_backup.archive.extjson import BatchEncoder, document_from_line
from mongo_backup.archive.lines import iter_document_texts, iter_lines, read_documents
from mongo_backup.errors import LineFormatError

_canonical = extjson._canonical

# Under CI (MONGO_BACKUP_STRICT=1) the package must have been built with its C converter;
# elsewhere a machine without a compiler runs the python-bsonjs path alone.
pytestmark = pytest.mark.skipif(
    _canonical is None and os.environ.get("MONGO_BACKUP_STRICT") != "1",
    reason="built without the C converter (no C compiler)",
)


def both(batch: bytes) -> tuple[tuple[bytes, int, int], tuple[bytes, int, int]]:
    """(text, documents, escaped) from the accelerated and the python-bsonjs encoder."""
    results = []
    for accelerated in (True, False):
        encoder = BatchEncoder(accelerated=accelerated)
        text, count = encoder.encode(batch)
        results.append((text, count, encoder.escaped))
    return results[0], results[1]


def test_the_c_converter_is_built() -> None:
    assert _canonical is not None, "the package was installed without archive/_canonical.c"


KEYS = st.one_of(
    st.text(max_size=6).filter(lambda key: "\x00" not in key),
    st.sampled_from(["_id", "$numberLong", "$oid", "$mongoBackupBSON", "a\u2028b", "é"]),
)
SCALARS = st.one_of(
    st.integers(min_value=-(2**31), max_value=2**31 - 1),
    st.integers(min_value=-(2**63), max_value=2**63 - 1).map(Int64),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["\u0085", "\u2028\u2029", "a\x00b", '\x7f/\\"', "\x1b\x01"]),
    st.binary(max_size=12),
    st.builds(Binary, st.binary(max_size=9), st.sampled_from([0, 1, 2, 3, 4, 5, 6, 9, 0x80])),
    st.booleans(),
    st.none(),
    st.binary(min_size=12, max_size=12).map(ObjectId),
    st.integers(min_value=-(2**63), max_value=2**63 - 1).map(DatetimeMS),
    st.builds(Timestamp, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    # Every Decimal128 bit pattern: canonical, zeros, NaN, infinities, non-canonical.
    st.binary(min_size=16, max_size=16).map(Decimal128.from_bid),
    st.sampled_from(["0", "-0.00", "1.50", "1E-7", "-1.5E+10", "0.000001", "1E+6144"]).map(
        Decimal128
    ),
    st.builds(
        Regex,
        st.text(max_size=6).filter(lambda text: "\x00" not in text),
        st.text(alphabet="ilmsuxa", max_size=4),
    ),
    st.sampled_from(
        [
            Regex("a.b", "ix"),
            Code("x = 1"),
            Code("f()", {"s": 1}),
            Decimal128("1.5"),
            Decimal128("-0"),
            MinKey(),
            MaxKey(),
            dt.datetime(2026, 12, 5, tzinfo=dt.UTC),
        ]
    ),
)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(KEYS, children, max_size=4)
    ),
    max_leaves=16,
)
DOCUMENTS = st.dictionaries(KEYS, VALUES, max_size=6).map(lambda doc: bson.encode(doc))


def element(kind: int, key: bytes, payload: bytes) -> bytes:
    return bytes([kind]) + key + b"\x00" + payload


def string_payload(text: bytes) -> bytes:
    return struct.pack("<i", len(text) + 1) + text + b"\x00"


# Elements no encoder of a Python value writes, built by hand.
HOSTILE = st.sampled_from(
    [
        element(0x02, b"s", string_payload(b"\xff\xfe")),  # not UTF-8
        element(0x02, b"s", string_payload(b"\xc0\x80")),  # overlong NUL
        element(0x02, b"s", string_payload(b"\xed\xa0\x80")),  # a surrogate
        element(0x02, b"s", string_payload(b"\xf4\x90\x80\x80")),  # above U+10FFFF
        element(0x02, b"s", string_payload(b"\xe2\x80")),  # cut sequence
        element(0x10, b"\xff", struct.pack("<i", 1)),  # key not UTF-8
        element(0x01, b"d", struct.pack("<Q", 0x7FF8000000000001)),  # NaN payload
        element(0x01, b"d", struct.pack("<Q", 0xFFF8000000000000)),  # negative NaN
        element(0x08, b"b", b"\x02"),  # bool byte 2
        element(0x05, b"o", struct.pack("<i", 6) + b"\x02" + struct.pack("<i", 2) + b"ab"),
        element(0x06, b"u", b""),  # undefined
        element(0x0E, b"y", string_payload(b"sym")),  # symbol
        element(0x04, b"a", raw_document(element(0x10, b"x", struct.pack("<i", 1)))),
        element(0x04, b"a", raw_document(element(0x10, b"01", struct.pack("<i", 1)))),
        element(0x0B, b"r", b"a\x00si\x00"),  # regex flags libbson would sort
    ]
)
HOSTILE_DOCUMENTS = st.lists(HOSTILE, min_size=1, max_size=3).map(lambda e: raw_document(*e))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(DOCUMENTS, HOSTILE_DOCUMENTS), min_size=1, max_size=6))
def test_accelerated_encoder_writes_the_same_bytes(documents: list[bytes]) -> None:
    fast, pure = both(b"".join(documents))
    assert fast == pure


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(DOCUMENTS, min_size=1, max_size=4), st.data())
def test_damaged_batches_give_the_same_bytes_or_the_same_error(
    documents: list[bytes], data: st.DataObject
) -> None:
    batch = bytearray(b"".join(documents))
    for _ in range(data.draw(st.integers(1, 3))):
        where = data.draw(st.integers(0, len(batch) - 1))
        batch[where] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(batch)))
    outcomes = []
    for accelerated in (True, False):
        try:
            outcomes.append(BatchEncoder(accelerated=accelerated).encode(bytes(batch[:cut])))
        except ValueError as error:
            outcomes.append(str(error))  # type: ignore[arg-type]
    assert outcomes[0] == outcomes[1]


COMMON = [
    {
        "_id": ObjectId(b"0123456789ab"),
        "name": 'Zoë \u2028 «quoted» "x" \\ / \t',
        "n": 42,
        "big": Int64(-(2**40)),
        "price": 12.5,
        "ratio": -0.0,
        "tiny": 5e-324,
        "huge": 1.7976931348623157e308,
        "inf": float("inf"),
        "when": dt.datetime(1969, 7, 20, 20, 17, tzinfo=dt.UTC),
        "ts": Timestamp(1, 2),
        "ok": True,
        "none": None,
        "tags": ["a", 1, [], {}, [2.0]],
        "blob": Binary(bytes(range(256)), 0x80),
        "uuid": Binary(b"\x00" * 16, 4),
        "deep": {"a": {"b": {"c": {}}}},
        "cost": Decimal128("12.34"),
        "zero": Decimal128("-0.00"),
        "pattern": Regex('^u1/"', "imx"),
    },
    {},
]


@pytest.mark.parametrize("document", COMMON, ids=["every-common-type", "empty"])
def test_common_types_never_leave_the_c_converter(document: dict[str, object]) -> None:
    """What it writes is what libbson writes, and it does not hand these over."""
    raw = bson.encode(document)
    assert _canonical is not None
    text, count, stop = _canonical.encode_batch(raw + raw, 0)
    assert (count, stop) == (2, 2 * len(raw))
    expected = bsonjs.dumps(raw, mode=bsonjs.CANONICAL)
    expected = expected.replace("\u2028", "\\u2028") + "\n"
    assert text == 2 * expected.encode("utf-8")


def test_the_c_converter_stops_at_what_it_does_not_carry() -> None:
    assert _canonical is not None
    plain = bson.encode({"a": 1})
    unsorted_flags = raw_document(element(0x0B, b"r", b"x\x00xi\x00"))
    odd_ones = [bson.encode(odd) for odd in ({"$set": 1}, {"d": float("nan")}, {"s": "a\x00b"})]
    for odd in [*odd_ones, unsorted_flags]:
        batch = plain + odd + plain
        text, count, stop = _canonical.encode_batch(batch, 0)
        assert (text, count, stop) == (b'{ "a" : { "$numberInt" : "1" } }\n', 1, len(plain)), odd
        _, count, stop = _canonical.encode_batch(batch, len(batch) - len(plain))
        assert (count, stop) == (1, len(batch))


def test_nesting_beyond_mongodb_limit_is_handed_over() -> None:
    nested: dict[str, object] = {}
    for _ in range(150):
        nested = {"n": nested}
    fast, pure = both(bson.encode(nested))
    assert fast == pure


def test_bson_corpus_gives_the_same_bytes() -> None:
    """Every valid case of the MongoDB BSON corpus, one document per batch and all in one."""
    raws = [
        bytes.fromhex(case["canonical_bson"])
        for path in sorted(BSON_CORPUS.glob("*.json"))
        for case in json.loads(path.read_text()).get("valid", [])
    ]
    assert raws, "the BSON corpus is missing"
    for raw in raws:
        fast, pure = both(raw)
        assert fast == pure, raw.hex()
    fast, pure = both(b"".join(raws))
    assert fast == pure


# --- the way back: decode_lines and read_documents ----------------------------------


def read_both(text: bytes) -> tuple[object, object]:
    """What read_documents (C converter) and the python-bsonjs reader make of ``text``:
    the documents and every bad line's error (verify's mode), or the error that ends
    the read (restore's mode)."""
    outcomes = []
    for accelerated in (True, False):
        problems: list[tuple[int, str]] = []
        try:
            if accelerated:
                found = list(read_documents(io.BytesIO(text), "m", on_error=problems_of(problems)))
            else:
                lines = iter_document_texts(iter_lines(io.BytesIO(text), "m"), "m")
                found = []
                for number, line in lines:
                    try:
                        found.append((number, document_from_line(line, "m", number)))
                    except LineFormatError as error:
                        problems.append((error.line, error.problem))
            outcomes.append((found, problems))
        except LineFormatError as error:
            outcomes.append(("error", error.line, error.problem))
    return outcomes[0], outcomes[1]


def problems_of(problems: list[tuple[int, str]]) -> Callable[[LineFormatError], None]:
    return lambda error: problems.append((error.line, error.problem))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(DOCUMENTS, HOSTILE_DOCUMENTS), min_size=1, max_size=6))
def test_lines_read_back_to_the_same_documents(documents: list[bytes]) -> None:
    text, _ = BatchEncoder().encode(b"".join(documents))
    fast, pure = read_both(text)
    assert fast == pure
    assert _canonical is not None
    decoded, _ = _canonical.decode_lines(text, 0, len(text))
    lines = text.split(b"\n")
    for index, raw in enumerate(decoded):
        # What it reads is what libbson reads, and the encoder writes the line back.
        assert raw == bsonjs.loads(lines[index])
        assert _canonical.encode_batch(raw, 0)[0] == lines[index] + b"\n"


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(DOCUMENTS, min_size=1, max_size=4), st.data())
def test_damaged_lines_give_the_same_documents_and_errors(
    documents: list[bytes], data: st.DataObject
) -> None:
    text = bytearray(BatchEncoder().encode(b"".join(documents))[0])
    for _ in range(data.draw(st.integers(1, 3))):
        where = data.draw(st.integers(0, len(text) - 1))
        text[where] = data.draw(st.sampled_from(b' "{}[]:,\\$0159.-Ee+azAZ\n\r\t\x00\xc3\xff'))
    fast, pure = read_both(bytes(text))
    assert fast == pure


@pytest.mark.parametrize(
    "text",
    [
        b'{ "a" : { "$numberInt" : "01" } }',  # not printf's spelling
        b'{ "a" : { "$numberInt" : "2147483648" } }',  # out of range
        b'{ "a" : { "$numberDouble" : "1" } }',  # 1.0 is written "1.0"
        b'{ "a" : { "$numberDouble" : "0.1" } }',  # not %.20g
        b'{ "a" : { "$numberDouble" : "NaN" } }',
        b'{ "a" : { "$numberDecimal" : "1.5E3" } }',  # libbson writes E+3
        b'{ "a" : { "$binary" : { "base64" : "YR==", "subType" : "00" } } }',  # bits under =
        b'{ "a" : { "$oid" : "5F0000000000000000000000" } }',  # uppercase hex
        b'{ "a" : "\\u0041" }',  # an escape the encoder never writes
        b'{ "a" : "\\u0000" }',
        b'{"a" : 1}',
        b'{ "$set" : { "$numberInt" : "1" } }',
        b'{ "a" : { "$regularExpression" : { "pattern" : "x", "options" : "xi" } } }',
        b"",
    ],
)
def test_lines_the_c_converter_leaves_to_python_bsonjs(text: bytes) -> None:
    assert _canonical is not None
    documents, stop = _canonical.decode_lines(text + b"\n", 0, len(text) + 1)
    assert (documents, stop) == ([], 0)
    fast, pure = read_both(text + b"\n")
    assert fast == pure


def test_pretty_members_switch_to_the_line_reader_and_keep_numbers() -> None:
    raws = [bson.encode({"_id": n, "s": "x" * n}) for n in range(5)]
    compact, _ = BatchEncoder().encode(b"".join(raws[:3]))
    pretty, _ = BatchEncoder(pretty=True).encode(b"".join(raws[3:]))
    fast, pure = read_both(compact + pretty)
    assert fast == pure
    assert [raw for _, raw in read_documents(io.BytesIO(compact + pretty), "m")] == raws


@pytest.mark.parametrize("where", ["0\x00-6176", "0E-61\x006", "0E-617\x00"])
def test_a_nul_inside_a_number_is_no_shorter_number(where: str) -> None:
    """Found by the damaged-lines property test: the C reader copied a quoted number up
    to a NUL and read "0E-61\\x006" as 0E-61; it now leaves such a line to python-bsonjs,
    which refuses it as verify and restore must."""
    line = '{ "0" : { "$numberDecimal" : "' + where + '" } }\n'
    fast, pure = read_both(line.encode())
    assert fast == pure and pure[0] == []
