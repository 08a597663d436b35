"""Documents of many megabytes cost a few copies of themselves, not one per chunk read or
a whole decode per batch (issue 15's scale section: 15 MiB documents): the line reader
joins a long line once, and a batch's last ``_id`` is read from its first element."""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

import bson
import pytest
from bson import Binary, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp
from bson.codec_options import CodecOptions, DatetimeConversion

from mongo_backup.archive.lines import READ_CHUNK, iter_lines
from mongo_backup.errors import LineFormatError
from mongo_backup.mongo.prefetch import id_key_of, last_id_key

ID_CODEC: CodecOptions[Any] = CodecOptions(datetime_conversion=DatetimeConversion.DATETIME_AUTO)


@pytest.mark.parametrize(
    "sizes",
    [
        [READ_CHUNK * 3 + 17, 5, 0, READ_CHUNK - 1, READ_CHUNK, READ_CHUNK + 1],
        [1, READ_CHUNK * 2, 2],
        [READ_CHUNK * 2 + 5],  # no newline at the end
        [0, 0, 3],
    ],
)
def test_long_lines_come_out_whole_and_numbered(sizes: list[int]) -> None:
    lines = [bytes([65 + n % 26]) * size for n, size in enumerate(sizes)]
    data = b"\n".join(lines)
    got = list(iter_lines(io.BytesIO(data), "m.jsonl"))
    expected = list(enumerate(data.split(b"\n"), start=1))
    if expected and expected[-1][1] == b"":
        expected.pop()  # a last newline ends the last line, as before
    assert got == expected


def test_a_line_too_long_is_refused_before_it_is_all_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("mongo_backup.archive.lines.MAX_LINE_BYTES", READ_CHUNK * 2)
    data = b"short\n" + b"x" * (READ_CHUNK * 3) + b"\nnext\n"
    with pytest.raises(LineFormatError, match="line 2"):
        list(iter_lines(io.BytesIO(data), "m.jsonl"))


@pytest.mark.parametrize(
    "value",
    [ObjectId(), "k" * 3000, "ü", 7, Int64(2**40), 2.5, -0.0, Decimal128("1.10"),
     dt.datetime(2026, 1, 1), bson.DatetimeMS(-(2**62)), {"a": 1, "b": [1, 2]},
     Binary(b"\x00\x01", 4), Regex("^a", "imx"), Timestamp(5, 6), MinKey(), MaxKey(),
     True, None],
)  # fmt: skip
def test_the_id_key_is_what_decoding_the_whole_document_gives(value: Any) -> None:
    big = "x" * (3 * 1024 * 1024)
    for document in ({"_id": value, "big": big}, {"big": big, "_id": value}):
        raw = bson.encode(document, codec_options=ID_CODEC)
        slow = bson.encode(
            {"_id": bson.decode(raw, codec_options=ID_CODEC)["_id"]}, codec_options=ID_CODEC
        )
        assert id_key_of(raw) == slow
        assert id_key_of(memoryview(raw)) == slow
        assert last_id_key(raw + raw) == slow
