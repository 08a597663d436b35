"""BatchEncoder and the line readers, without a server.

The promise under test: every BSON document written and read back gives the very same
bytes. The MongoDB BSON corpus supplies every type's edge cases; the rest are the
documents canonical Extended JSON alone cannot carry (see the extjson module doc).
"""

from __future__ import annotations

import hashlib
import io
import json
import struct

import bson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bsontools import int32_element, raw_document
from conftest import BSON_CORPUS
from mongo_backup.archive import extjson, lines
from mongo_backup.archive.extjson import (
    BatchEncoder,
    document_from_line,
)
from mongo_backup.archive.lines import iter_documents, iter_lines, read_documents
from mongo_backup.errors import LineFormatError

LINE_BREAKS = ("\u2028", "\u2029", "\u0085", "\x1c", "\x1d", "\x1e", "\x0b", "\x0c", "\r")


def corpus_cases() -> list[object]:
    """The valid cases of the BSON corpus; without the corpus, one case that fails (a
    missing corpus must show in CI, never pass as a skip or an empty parametrization)."""
    if not BSON_CORPUS.is_dir():
        return [pytest.param(None, id="corpus-absent")]
    cases = []
    for path in sorted(BSON_CORPUS.glob("*.json")):
        for index, case in enumerate(json.loads(path.read_text()).get("valid", [])):
            raw = bytes.fromhex(case["canonical_bson"])
            cases.append(pytest.param(raw, id=f"{path.stem}-{index}"))
    return cases


def read_back(text: bytes, member: str = "m.jsonl") -> list[bytes]:
    """Every document of encoder output, through the reader restore and verify use
    (the C converter where it is built) and the line-by-line python-bsonjs reader: both
    must give the same documents, or the same error."""
    outcomes: list[tuple[object, ...]] = []
    for read in (
        lambda: [raw for _, raw in read_documents(io.BytesIO(text), member)],
        lambda: [raw for _, raw in iter_documents(iter_lines(io.BytesIO(text), member), member)],
    ):
        try:
            outcomes.append(("documents", read()))
        except LineFormatError as error:
            outcomes.append(("error", error.line, error.problem))
    assert outcomes[0] == outcomes[1]
    if outcomes[0][0] == "error":
        raise LineFormatError(member, outcomes[0][1], outcomes[0][2])  # type: ignore[arg-type]
    return outcomes[0][1]  # type: ignore[return-value]


def round_trip(raw: bytes, **options: object) -> bytes:
    text, count = BatchEncoder(**options).encode(raw)  # type: ignore[arg-type]
    assert count == 1
    assert text.endswith(b"\n") and text.count(b"\n") >= 1
    (back,) = read_back(text)
    return back


@pytest.mark.parametrize("raw", corpus_cases())
@pytest.mark.parametrize("pretty", [False, True], ids=["compact", "pretty"])
def test_corpus_round_trips_byte_exact(raw: bytes | None, pretty: bool) -> None:
    assert raw is not None, f"BSON corpus not found at {BSON_CORPUS} (shared/bson-corpus)"
    assert round_trip(raw, pretty=pretty) == raw


def test_whole_corpus_as_one_batch_keeps_document_boundaries() -> None:
    assert BSON_CORPUS.is_dir(), f"BSON corpus not found at {BSON_CORPUS}"
    raws = [p.values[0] for p in corpus_cases()]
    assert len(raws) > 100, f"too few valid cases in {BSON_CORPUS}: {len(raws)}"
    text, count = BatchEncoder().encode(b"".join(raws))  # type: ignore[arg-type]
    assert count == len(raws)
    assert len(text.decode().splitlines()) == len(raws)
    assert read_back(text) == raws


NAN_WITH_PAYLOAD = struct.pack("<Q", 0x7FF8000000000001)
NEGATIVE_NAN = struct.pack("<Q", 0xFFF8000000000000)

SPECIAL = {
    "numberLong-lookalike": bson.encode({"x": {"$numberLong": "5"}}),
    "oid-lookalike": bson.encode({"x": {"$oid": "5f0000000000000000000000"}}),
    "date-lookalike": bson.encode({"x": {"$date": {"$numberLong": "5"}}}),
    "date-string-lookalike": bson.encode({"x": {"$date": "1970-01-01T00:00:00Z"}}),
    "regex-lookalike": bson.encode({"x": {"$regex": "a", "$options": "i"}}),
    "lookalike-in-array": bson.encode({"x": [{"$binary": "AA==", "$type": "00"}]}),
    "dollar-top-level": bson.encode({"$numberInt": "1"}),
    "escape-key-binary": bson.encode({"$mongoBackupBSON": bson.Binary(b"\x05\x00\x00\x00\x00")}),
    "escape-key-string": bson.encode({"$mongoBackupBSON": "x", "y": 1}),
    "escape-key-doc": bson.encode(
        {"$mongoBackupBSON": {"$binary": {"base64": "", "subType": "00"}}}
    ),
    "invalid-utf8-value": raw_document(b"\x02s\x00" + (3).to_bytes(4, "little") + b"\xff\xfe\x00"),
    "invalid-utf8-key": raw_document(b"\x10\xff\xfe\x00" + (1).to_bytes(4, "little")),
    "nan-payload": raw_document(b"\x01d\x00" + NAN_WITH_PAYLOAD),
    "negative-nan": raw_document(b"\x01d\x00" + NEGATIVE_NAN),
    "negative-zero": bson.encode({"d": -0.0}),
    "nul-in-code": bson.encode({"c": bson.Code("a\x00b")}),
    "nul-in-code-with-scope": bson.encode({"c": bson.Code("a\x00b", {"s": 1})}),
    "nul-in-string": bson.encode({"s": "a\x00b"}),
    "line-breaks-in-string": bson.encode({"s": "".join(f"<{c}>" for c in LINE_BREAKS)}),
    "line-breaks-in-key": bson.encode({"k\u2028\u0085": 1}),
    "empty": bson.encode({}),
    "duplicate-keys": raw_document(int32_element("a", 1), int32_element("a", 2)),
}


@pytest.mark.parametrize("pretty", [False, True], ids=["compact", "pretty"])
@pytest.mark.parametrize("raw", list(SPECIAL.values()), ids=list(SPECIAL))
def test_special_documents_round_trip_byte_exact(raw: bytes, pretty: bool) -> None:
    assert round_trip(raw, pretty=pretty) == raw


def test_regex_with_unsorted_options_round_trips() -> None:
    raw = raw_document(b"\x0br\x00a\x00xi\x00")
    assert round_trip(raw) == raw


def test_lossy_documents_are_escaped_and_counted() -> None:
    encoder = BatchEncoder()
    batch = SPECIAL["numberLong-lookalike"] + SPECIAL["nan-payload"] + bson.encode({"a": 1})
    text, _ = encoder.encode(batch)
    lines = text.decode().splitlines()
    assert [extjson.ESCAPE_KEY in line for line in lines] == [True, True, False]
    assert encoder.escaped == 2


@pytest.mark.parametrize("pretty", [False, True], ids=["compact", "pretty"])
def test_line_break_characters_never_appear_raw(pretty: bool) -> None:
    raws = [SPECIAL["line-breaks-in-string"], SPECIAL["line-breaks-in-key"], bson.encode({"a": 1})]
    text, count = BatchEncoder(pretty=pretty).encode(b"".join(raws))
    decoded = text.decode("utf-8")
    for char in LINE_BREAKS:
        assert char not in decoded, repr(char)
    if not pretty:
        # One line per document for every reader that splits the way Python does.
        assert len(decoded.splitlines()) == count == 3
    assert read_back(text) == raws


def test_relaxed_output_parses_back() -> None:
    raw = bson.encode({"i": 5, "l": bson.Int64(7), "d": 1.5, "s": "t", "dt": bson.DatetimeMS(-5)})
    text, _ = BatchEncoder("relaxed").encode(raw)
    assert b"$numberLong" not in text.split(b'"dt"')[0]  # relaxed: plain numbers
    back = bson.decode(document_from_line(text.strip()))
    assert back["i"] == 5 and back["l"] == 7 and back["d"] == 1.5 and back["s"] == "t"


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError):
        BatchEncoder("shell")  # type: ignore[arg-type]


def test_truncated_batch_is_refused() -> None:
    with pytest.raises(ValueError, match="malformed BSON batch"):
        BatchEncoder().encode(bson.encode({"a": 1})[:-2])


# --- reading -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        b"not json",
        b"{",
        b'{"a": }',
        b"123",
        b'{"a": {"$numberLong": "x"}}',
        b"\xff\xfe",
        b'{"a": 1} junk',
    ],
)
def test_malformed_line_names_member_and_line(line: bytes) -> None:
    text = bson_line({"a": 1}) + b"\n" + line + b"\n"
    with pytest.raises(LineFormatError) as caught:
        read_back_named(text, "orders.jsonl")
    assert caught.value.member == "orders.jsonl"
    assert caught.value.line == 2
    assert "orders.jsonl, line 2" in str(caught.value)


@pytest.mark.parametrize(
    "line",
    [b"[1, 2]", b'{"a": 1} {"b": 2}', b'{"a": 1}{"b": 2}', b'{"a": 1}\r{"b": 2}'],
    ids=["array", "two-documents", "two-documents-no-space", "cr-separated"],
)
def test_line_that_is_not_exactly_one_document_is_refused(line: bytes) -> None:
    # Restore reads foreign files too: a second document on a line must not vanish.
    with pytest.raises(LineFormatError):
        document_from_line(line, "m", 1)


def test_malformed_escape_line_is_refused() -> None:
    line = b'{"$mongoBackupBSON": {"$binary": {"base64": "AQID", "subType": "00"}}}'
    with pytest.raises(LineFormatError, match="escape line"):
        document_from_line(line, "m", 7)


def test_blank_lines_and_crlf_are_skipped() -> None:
    docs = [bson.encode({"_id": i}) for i in range(3)]
    text = b"\n\n" + bson_line({"_id": 0}) + b"\r\n   \n" + bson_line({"_id": 1}) + b"\n\n"
    text += bson_line({"_id": 2})  # no final newline
    assert read_back(text) == docs


def test_pretty_multi_line_documents_are_read() -> None:
    raws = [
        bson.encode({"_id": 1, "n": {"a": [1, {"b": 2}]}}),
        bson.encode({}),
        bson.encode({"s": "}"}),
    ]
    text, _ = BatchEncoder(pretty=True).encode(b"".join(raws))
    assert text.count(b"\n") > len(raws)  # really multi-line
    assert read_back(text) == raws


def test_unclosed_pretty_document_is_refused() -> None:
    with pytest.raises(LineFormatError, match="not closed"):
        read_back(b'{\n  "a": {"$numberInt": "1"}\n')


def test_overlong_line_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lines, "READ_CHUNK", 64)
    monkeypatch.setattr(lines, "MAX_LINE_BYTES", 1000)
    text = bson_line({"a": 1}) + b"\n" + b'{"s": "' + b"x" * 5000 + b'"}\n'
    with pytest.raises(LineFormatError, match="longer than") as caught:
        read_back(text)
    assert caught.value.line == 2


def test_overlong_pretty_document_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lines, "MAX_LINE_BYTES", 1000)
    text = b"{\n" + b'  "a": "xxxxxxxxxx",\n' * 200 + b"}\n"
    with pytest.raises(LineFormatError, match="longer than"):
        read_back(text)


def test_iter_lines_hashes_everything_across_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lines, "READ_CHUNK", 7)
    data = b"".join(bson_line({"_id": i, "s": "x" * i}) + b"\n" for i in range(20))
    stats = lines.StreamStats()
    numbered = list(iter_lines(io.BytesIO(data), "m", stats))
    assert [n for n, _ in numbered] == list(range(1, 21))
    assert stats.bytes == len(data)
    assert stats.sha256 == hashlib.sha256(data).hexdigest()


def bson_line(document: dict[str, object]) -> bytes:
    text, _ = BatchEncoder().encode(bson.encode(document))
    return text.rstrip(b"\n")


def read_back_named(text: bytes, member: str) -> list[bytes]:
    return read_back(text, member)


# --- property: random documents --------------------------------------------------

KEYS = st.one_of(
    st.text(min_size=0, max_size=8).filter(lambda k: "\x00" not in k),
    st.sampled_from(
        [
            "$numberLong",
            "$oid",
            "$date",
            "$binary",
            "$type",
            "$regex",
            "$options",
            "$numberDouble",
            "$code",
            "$scope",
            "$ref",
            "$id",
            "$mongoBackupBSON",
            "a.b",
            "",
            "$",
            ".",
            "$numberDecimal",
            "$timestamp",
            "$minKey",
        ]
    ),
)
SCALARS = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.binary(max_size=20),
    st.booleans(),
    st.none(),
    st.sampled_from(["5", "NaN", "0", "1970-01-01T00:00:00Z", "AA=="]),
)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(KEYS, children, max_size=4)
    ),
    max_leaves=20,
)
DOCUMENTS = st.dictionaries(KEYS, VALUES, max_size=6)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(DOCUMENTS, min_size=1, max_size=5), st.booleans())
def test_random_documents_round_trip_byte_exact(
    documents: list[dict[str, object]], pretty: bool
) -> None:
    raws = [bson.encode(document) for document in documents]
    text, count = BatchEncoder(pretty=pretty).encode(b"".join(raws))
    assert count == len(raws)
    assert read_back(text) == raws
