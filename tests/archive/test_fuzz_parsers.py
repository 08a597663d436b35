"""Property tests: the parsers of untrusted input raise only the project's errors.

For arbitrary bytes, arbitrary lines and mutated valid inputs, the line reader yields
raw BSON documents or raises a :class:`MongoBackupError`; ``parse_manifest`` returns a
checked manifest or raises :class:`ArchiveError`; ``open_backup`` on any file, then
reading every member, raises nothing else. Budgets are small and derandomized (stable
in CI); ``MONGO_BACKUP_FUZZ_EXAMPLES=5000`` runs more. fuzz/fuzz_readers.py runs the
same entry points under atheris.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any
from unittest import mock

import bson
import pytest
from bson.codec_options import CodecOptions, DatetimeConversion
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bsontools import int32_element, raw_document
from damagetools import compress_bytes, forged_manifest
from mongo_backup.archive.extjson import (
    BatchEncoder,
    document_from_line,
)
from mongo_backup.archive.lines import iter_documents, iter_lines
from mongo_backup.archive.manifest import CollectionEntry, Manifest, manifest_bytes, parse_manifest
from mongo_backup.archive.reader import open_backup
from mongo_backup.archive.writer import write_archive
from mongo_backup.errors import ArchiveError, LineFormatError, MongoBackupError
from mongo_backup.names import is_safe_member_name

settings.register_profile(
    "fuzz-parsers",
    max_examples=int(os.environ.get("MONGO_BACKUP_FUZZ_EXAMPLES", "300")),
    deadline=None,
    derandomize=True,
    report_multiple_bugs=False,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FUZZ = settings.get_profile("fuzz-parsers")
LENIENT: CodecOptions[Any] = CodecOptions(
    datetime_conversion=DatetimeConversion.DATETIME_AUTO, unicode_decode_error_handler="replace"
)
DOCUMENTS = [  # the last three are written as escape lines
    bson.encode(
        {"_id": 1, "s": "x", "n": 1.5, "a": [1, {"b": None}], "t": dt.datetime(1969, 1, 1)}
    ),
    bson.encode({"_id": bson.ObjectId(b"012345678901"), "d": bson.Decimal128("-0.00")}),
    bson.encode({"_id": 3, "sub": {"$numberLong": "5"}}),
    raw_document(int32_element("_id", 4), b"\x0br\x00a.c\x00xi\x00"),  # unsorted regex flags
    raw_document(int32_element("_id", 5), b"\x02s\x00\x03\x00\x00\x00\xff\xfe\x00"),  # not UTF-8
]
MEMBER = BatchEncoder().encode(b"".join(DOCUMENTS))[0]
PRETTY = BatchEncoder(pretty=True).encode(b"".join(DOCUMENTS))[0]


def read_lines(data: bytes) -> list[bytes]:
    """Every document of a member, or the project's error; checks each one's framing."""
    documents = []
    try:
        for number, raw in iter_documents(iter_lines(io.BytesIO(data), "m.jsonl"), "m.jsonl"):
            assert number >= 1 and raw[-1:] == b"\0"
            assert int.from_bytes(raw[:4], "little") == len(raw) >= 5
            documents.append(raw)
    except MongoBackupError:
        pass
    return documents


@st.composite
def mutated(draw: st.DrawFn, seeds: st.SearchStrategy[bytes]) -> bytes:
    """A valid input changed in a few places: flipped bits, cuts, splices, repeats."""
    data = bytearray(draw(seeds))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        kind = draw(st.sampled_from(["flip", "delete", "insert", "repeat", "cut"]))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 64))]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=32))
        elif kind == "repeat":
            data[at:at] = data[at : at + draw(st.integers(1, 600))]
        elif kind == "cut":
            del data[at:]
    return bytes(data)


KEYS = st.one_of(
    st.text(max_size=8),
    st.sampled_from(["_id", "$numberLong", "$date", "$oid", "$binary", "$mongoBackupBSON",
                     "$regularExpression", "$numberDecimal", "$timestamp", "$code", "$ref"]),
)  # fmt: skip
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=20)
)
JSON_VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4)
)
LINES = st.one_of(
    st.text(max_size=80),
    st.dictionaries(KEYS, JSON_VALUES, max_size=5).map(json.dumps),
    st.sampled_from(["{", "}", "", "[]", "{}", "{} {}", '{"a":1}{"b":2}', '{"s":"\\ud800"}']),
)


def test_line_reader_seeds_are_valid() -> None:
    assert MEMBER.count(b"$mongoBackupBSON") == 3
    assert read_lines(MEMBER) == read_lines(PRETTY) == DOCUMENTS


@FUZZ
@given(
    st.binary(max_size=4096)
    | st.lists(LINES, max_size=8).map(lambda lines: "\n".join(lines).encode())
    | mutated(st.sampled_from([MEMBER, PRETTY]))
)
def test_line_reader_raises_only_project_errors(data: bytes) -> None:
    read_lines(data)


def escape_line(body: bytes) -> bytes:
    payload = (len(body) + 5).to_bytes(4, "little") + body + b"\0"
    wrapper = {"$binary": {"base64": base64.b64encode(payload).decode(), "subType": "00"}}
    return json.dumps({"$mongoBackupBSON": wrapper}).encode()


@FUZZ
@given(st.binary(max_size=40))
@example(b"\x42_id\x00\x01\x02\x00")  # element type 0x42 does not exist
@example(b"\x02_id\x00")  # a string element cut short
def test_escape_lines_yield_valid_bson_or_refuse(body: bytes) -> None:
    """The bytes an escape line carries go to the server as a document: they must be
    one, not just framed like one."""
    try:
        raw = document_from_line(escape_line(body), "m.jsonl", 1)
    except LineFormatError:
        return
    bson.decode(raw, codec_options=LENIENT)


# --- manifests -------------------------------------------------------------------------

BASE = Manifest("db", "0.1.0", "canonical", False, "none", "t0", "t1", {}, [], collections=[
    CollectionEntry("c", "collection", "c.jsonl", {"capped": False}, [{"key": {"_id": 1}}],
                    count=2, bytes=30, sha256=hashlib.sha256(b"").hexdigest()),
    CollectionEntry("v", "view", None, {"viewOn": "c", "pipeline": []}),
])  # fmt: skip
VALID_MANIFEST = manifest_bytes(BASE)
TOP_FIELDS = [*json.loads(VALID_MANIFEST), "collections[0]", "collections[1]"]
ENTRY_FIELDS = [*json.loads(VALID_MANIFEST)["collections"][0], "extra"]


@st.composite
def forged(draw: st.DrawFn) -> bytes:
    """The valid manifest with one field replaced, its checksum recomputed to match."""
    value = draw(JSON_VALUES | st.sampled_from(["../x.jsonl", "a/b", "c\0", ".", "", -1, 2**64]))
    where, key = draw(st.sampled_from(TOP_FIELDS)), draw(st.sampled_from(ENTRY_FIELDS))

    def change(data: dict[str, Any]) -> None:
        if where.startswith("collections["):
            data["collections"][int(where[-2])][key] = value
        else:
            data[where] = value

    return forged_manifest(VALID_MANIFEST, change)


def check_manifest(raw: bytes) -> None:
    try:
        manifest = parse_manifest(raw)
    except ArchiveError:
        return
    files = [entry.file for entry in manifest.collections if entry.file is not None]
    assert all(is_safe_member_name(file) for file in files) and len(set(files)) == len(files)
    assert all(0 <= entry.count <= 2**53 for entry in manifest.collections)


@FUZZ
@given(st.binary(max_size=2048) | mutated(st.just(VALID_MANIFEST)) | forged())
@example(b'{"format": ' + b"1" * 5000 + b"}")  # int() refuses over 4300 digits: ValueError
@example(b'{"format": "mongo-backup", "format_version": 1, "s": "\\ud800"}')  # lone surrogate
def test_parse_manifest_raises_only_archive_errors(raw: bytes) -> None:
    check_manifest(raw)


def test_parse_manifest_nesting_at_the_recursion_limit() -> None:
    """json parses a little deeper than it can dump again: the checksum step must not
    let a RecursionError out at any depth around the limit."""
    head, tail = VALID_MANIFEST.split(b'"capped": false', 1)
    for depth in range(850, 1100):
        check_manifest(head + b'"x": ' + b"[" * depth + b"]" * depth + tail)
        check_manifest(head + b'"x": ' + b'{"a":' * depth + b"1" + b"}" * depth + tail)


# --- whole archives --------------------------------------------------------------------


def read_backup(path: Path, expect_ok: bool = False) -> int:
    """Every document of every member; their number (what was read before the project's
    error, which only ``expect_ok`` lets out)."""
    count = 0
    try:
        with open_backup(path) as reader:
            for entry, stream in reader.members():
                assert entry.file is not None
                for _ in iter_documents(iter_lines(stream, entry.file), entry.file):
                    count += 1
    except MongoBackupError:
        if expect_ok:
            raise
    return count


def seed_archives() -> list[bytes]:
    """A small valid archive per compression, from the tool's own writer (fixed mtime)."""
    sha = hashlib.sha256(MEMBER).hexdigest()
    entry = CollectionEntry("c", "collection", "c.jsonl", count=5, bytes=len(MEMBER), sha256=sha)
    manifest = dataclasses.replace(BASE, compression="zstd", collections=[entry])
    archives = []
    with tempfile.TemporaryDirectory() as name, mock.patch("time.time", return_value=1.8e9):
        folder = Path(name)
        (folder / "manifest.json").write_bytes(manifest_bytes(manifest))
        (folder / "c.jsonl").write_bytes(MEMBER)
        (folder / "c.jsonl.zst").write_bytes(compress_bytes(MEMBER, "zstd"))
        for compression in ("none", "gzip", "zstd"):
            path = write_archive(folder, [("c.jsonl", len(MEMBER))], folder / "a", compression)
            archives.append(path.read_bytes())
    return archives


SEEDS = seed_archives()
MAGIC = st.sampled_from([b"", b"\x1f\x8b", b"\x28\xb5\x2f\xfd", b"\x28\xb5\x2f\xfd\x04\x00"])


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "candidate.tar"  # detected by content


@pytest.mark.parametrize("index", range(len(SEEDS)))
def test_seed_archives_are_valid(scratch: Path, index: int) -> None:
    scratch.write_bytes(SEEDS[index])
    assert read_backup(scratch, expect_ok=True) == len(DOCUMENTS)


@FUZZ
@given(st.tuples(MAGIC, st.binary(max_size=3000)).map(b"".join) | mutated(st.sampled_from(SEEDS)))
def test_open_backup_raises_only_project_errors(scratch: Path, raw: bytes) -> None:
    scratch.write_bytes(raw)
    read_backup(scratch)
