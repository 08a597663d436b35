"""Raw BSON documents to Extended JSON lines and back, exactly.

The hot path never builds Python dicts: libbson (python-bsonjs) converts each raw BSON
document straight to canonical (or relaxed) Extended JSON v2 text and back. For compact
canonical output a small C converter (``_canonical.c``, built with the package where a
compiler exists) writes whole batches of the common types to the very same bytes, ten
times cheaper than one python-bsonjs call and one Python str per document; whatever it
does not carry exactly it hands to the python-bsonjs path one document at a time.

Canonical Extended JSON keeps every BSON type, but a few documents cannot be carried by
it exactly. We found them by pushing the whole MongoDB BSON corpus through libbson:
- a subdocument whose keys look like a type wrapper (``{"$numberLong": "5"}`` stored as
  a real subdocument) would come back as an Int64;
- NaN payloads and signs, and non-canonical Decimal128 bit patterns, collapse to one
  value;
- a NUL character inside JavaScript code is cut;
- strings that are not valid UTF-8 cannot be written at all.
Every such document is written as an *escape line*, a one-field document holding the
exact BSON bytes::

    { "$mongoBackupBSON" : { "$binary" : { "base64" : "...", "subType" : "00" } } }

Readers that know the format restore the bytes; any other Extended JSON reader sees a
binary field, never a silently changed value. To stay cheap, the exact round-trip test
that decides this runs only on documents that show one of the signs above (a ``$`` right
after a BSON type byte, or ``"NaN"``, ``\\u0000`` or a zero decimal in the text).

Lines are separated by ``\\n`` only. U+0085, U+2028 and U+2029 (which ``str.splitlines``
and some JSON Lines readers treat as line breaks) are written as ``\\uXXXX`` escapes;
libbson already escapes every control character below U+0020.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from types import ModuleType
from typing import Any

import bsonjs

from ..errors import LineFormatError
from ..names import JsonFormat

try:
    from . import _canonical
except ImportError:  # built without a C compiler: python-bsonjs converts every document
    _canonical = None  # type: ignore[assignment]


def accelerator() -> ModuleType | None:
    """The C converter (``encode_batch``, ``decode_lines``), or None: built without a
    compiler, or ``MONGO_BACKUP_NO_ACCELERATOR=1`` (the python-bsonjs path for
    everything, to rule the converter out when hunting a problem; the bytes are the same)."""
    return None if os.environ.get("MONGO_BACKUP_NO_ACCELERATOR") == "1" else _canonical


_MODES = {"canonical": bsonjs.CANONICAL, "relaxed": bsonjs.RELAXED}

ESCAPE_KEY = "$mongoBackupBSON"
_ESCAPE_ELEMENT = b"\x05" + ESCAPE_KEY.encode() + b"\x00"

# A "$" right after a BSON element type byte: a key that starts with "$" (may also hit
# inside binary data; that only costs one extra round-trip test). Written as a "$" with a
# look-behind so that the regex engine scans for the literal "$" (a fast search)
# instead of trying the character class at every byte: 15x faster on a batch.
_DOLLAR_KEY = re.compile(rb"\$(?<=[\x01-\x13\x7f\xff]\$)")
# Text that libbson writes for values it cannot carry exactly (see the module doc).
# Plain substring tests: str.__contains__ is many times faster than a regex alternation
# over a megabyte batch, and these run on every batch.
# libbson also sorts regex flags, so a regex stored with unsorted flags ("xi") would
# come back changed; documents with a regex get the exact test too.
_LOSSY_MARKERS = ('"NaN"', "\\u0000", 'Decimal" : "0', 'Decimal" : "-0', '"$regularExpression"')
_LINE_BREAK_CHARS = ("\u0085", "\u2028", "\u2029")
_LINE_BREAKS = re.compile("[\u0085\u2028\u2029]")


def _document_size(batch: bytes, pos: int) -> int:
    size = int.from_bytes(batch[pos : pos + 4], "little")
    if size < 5 or pos + size > len(batch):
        raise ValueError(f"malformed BSON batch at byte {pos}")
    return size


def _looks_lossy(text: str) -> bool:
    return any(marker in text for marker in _LOSSY_MARKERS)


def _escape_line_breaks(text: str) -> str:
    return _LINE_BREAKS.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def escape_document(raw: bytes) -> str:
    """The escape line for one raw BSON document (always exact)."""
    payload = len(raw).to_bytes(4, "little") + b"\x00" + raw
    body = _ESCAPE_ELEMENT + payload
    wrapper = (len(body) + 5).to_bytes(4, "little") + body + b"\x00"
    return str(bsonjs.dumps(wrapper, mode=bsonjs.CANONICAL))


def _exact(raw: bytes) -> bool:
    """Whether canonical Extended JSON carries this document byte for byte."""
    if raw[4 : 4 + len(_ESCAPE_ELEMENT)] == _ESCAPE_ELEMENT:
        return False  # a real document that looks like our escape must be escaped too
    try:
        return bool(bsonjs.loads(bsonjs.dumps(raw, mode=bsonjs.CANONICAL)) == raw)
    except ValueError:
        return False


class BatchEncoder:
    """Turns raw BSON batches (concatenated documents) into Extended JSON lines.

    Canonical, compact batches go through the C converter (``_canonical``) when the
    package was built with it: the common types straight to UTF-8 lines, with the GIL
    released. It stops at any document it cannot convert exactly, which then takes the
    python-bsonjs path below; both give the same bytes (``accelerated=False`` forces
    the python-bsonjs path, for the tests that compare them).
    """

    def __init__(
        self, json_format: JsonFormat = "canonical", pretty: bool = False, accelerated: bool = True
    ) -> None:
        if json_format not in _MODES:
            raise ValueError(f"unknown JSON format {json_format!r}")
        self.mode = _MODES[json_format]
        self.pretty = pretty
        self.escaped = 0  # documents written as escape lines so far
        converter = accelerator() if accelerated else None
        fast = converter is not None and json_format == "canonical" and not pretty
        self._fast: Callable[[bytes, int], tuple[bytes, int, int]] | None = (
            converter.encode_batch if fast and converter is not None else None
        )

    def encode(self, batch: bytes) -> tuple[bytes, int]:
        """Return (UTF-8 text with one ``\\n`` after every document, document count)."""
        if self._fast is None:
            return self._encode_each(batch)
        parts: list[bytes] = []
        documents, pos, end = 0, 0, len(batch)
        while pos < end:
            text, count, pos = self._fast(batch, pos)
            parts.append(text)
            documents += count
            if pos < end:  # one document the C converter leaves to libbson
                size = _document_size(batch, pos)
                text, _ = self._encode_each(batch[pos : pos + size])
                parts.append(text)
                documents += 1
                pos += size
        return b"".join(parts), documents

    def _encode_each(self, batch: bytes) -> tuple[bytes, int]:
        """The python-bsonjs path: one libbson call per document."""
        dumps, mode = bsonjs.dumps, self.mode
        lines: list[str] = []
        append = lines.append
        pos, end = 0, len(batch)
        # One search of the whole batch: most batches have no "$" key anywhere, and a
        # search per document costs more than the conversion of a small one.
        dollars = _DOLLAR_KEY.search(batch) is not None
        while pos < end:
            size = _document_size(batch, pos)
            raw = batch[pos : pos + size]
            pos += size
            try:
                text = dumps(raw, mode=mode)
            except ValueError:  # invalid UTF-8 and other things JSON cannot hold
                text = self._escape(raw)
            else:
                if dollars and b"$" in raw and _DOLLAR_KEY.search(raw) and not _exact(raw):
                    text = self._escape(raw)
            append(text)
        lines.append("")
        joined = "\n".join(lines)
        if _looks_lossy(joined):
            joined = self._recheck(batch, lines)
        if self.pretty:
            joined = "".join(pretty_line(line) + "\n" for line in lines[:-1])
        if any(char in joined for char in _LINE_BREAK_CHARS):
            joined = _escape_line_breaks(joined)
        return joined.encode("utf-8"), len(lines) - 1

    def _escape(self, raw: bytes) -> str:
        self.escaped += 1
        return escape_document(raw)

    def _recheck(self, batch: bytes, lines: list[str]) -> str:
        """The rare path: test lines with lossy-looking text for an exact round trip."""
        pos = 0
        for index in range(len(lines) - 1):
            size = int.from_bytes(batch[pos : pos + 4], "little")
            raw = batch[pos : pos + size]
            pos += size
            if _looks_lossy(lines[index]) and not _exact(raw):
                lines[index] = self._escape(raw)
        return "\n".join(lines)


class _Pairs(dict[str, Any]):
    """A JSON object that keeps duplicate keys (BSON allows them) for pretty printing."""

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__(pairs)
        self.pairs = pairs

    def items(self) -> Any:
        return self.pairs


def pretty_line(line: str) -> str:
    """One compact Extended JSON document re-indented over several lines.

    Every value is a string or a nested object in the canonical form, so re-encoding
    through the json module loses nothing; duplicate keys are kept. The document ends
    with a line holding only ``}``, which is how readers find its end.
    """
    value = json.loads(line, object_pairs_hook=_Pairs)
    return json.dumps(value, indent=2, ensure_ascii=False)


def document_from_line(line: bytes | str, member: str = "<line>", number: int = 0) -> bytes:
    """Parse one Extended JSON document (any mode) to its exact raw BSON bytes.

    The text must be exactly one JSON object: libbson would also take an array
    (``[1, 2]`` as ``{"0": 1, "1": 2}``) and silently drop whatever follows the first
    object, which would lose data from a damaged or foreign file.
    """
    text = (line.encode("utf-8", "surrogatepass") if isinstance(line, str) else line).strip()
    if text[:1] != b"{":
        raise LineFormatError(
            member, number, "not an Extended JSON document (expected a JSON object)"
        )
    try:
        raw: bytes = bsonjs.loads(text)
    except (ValueError, TypeError) as error:
        detail = str(error).strip().splitlines()[0] if str(error).strip() else "parse error"
        raise LineFormatError(member, number, f"not an Extended JSON document ({detail})") from None
    # Outside strings, valid JSON never has "}" followed (after blanks) by "{"; inside
    # strings it is rare, so the exact (slow) check runs almost never.
    if _OBJECT_THEN_OBJECT.search(text):
        _require_single_object(text, member, number)
    return _unescape_if_escaped(raw, member, number)


_OBJECT_THEN_OBJECT = re.compile(rb"\}\s*\{")


def _require_single_object(text: bytes, member: str, number: int) -> None:
    try:
        json.loads(text)
    except ValueError as error:
        raise LineFormatError(
            member, number, f"not exactly one JSON document on this line ({error.args[0][:80]})"
        ) from None


def _unescape_if_escaped(raw: bytes, member: str, number: int) -> bytes:
    """The document itself, or for an escape line the exact BSON it carries."""
    if raw[4 : 4 + len(_ESCAPE_ELEMENT)] == _ESCAPE_ELEMENT:
        return _unescape(raw, member, number)
    return raw


def _unescape(wrapper: bytes, member: str, number: int) -> bytes:
    start = 4 + len(_ESCAPE_ELEMENT)
    size = int.from_bytes(wrapper[start : start + 4], "little")
    payload = wrapper[start + 5 : start + 5 + size]
    if (
        wrapper[start + 4] != 0
        or start + 5 + size + 1 != len(wrapper)
        or len(payload) < 5
        or int.from_bytes(payload[:4], "little") != len(payload)
        or payload[-1] != 0
    ):
        raise LineFormatError(member, number, f"malformed {ESCAPE_KEY} escape line")
    # pymongo's bson only here, on the read side: the converter child (which writes
    # escape lines but never reads them) starts without it.
    import bson
    from bson.codec_options import CodecOptions, DatetimeConversion

    # Escape lines carry what Extended JSON cannot (invalid UTF-8 among it): check the
    # structure, accept any string bytes, any date.
    check: CodecOptions[dict[str, object]] = CodecOptions(
        datetime_conversion=DatetimeConversion.DATETIME_AUTO,
        unicode_decode_error_handler="surrogateescape",
    )
    try:  # the exact bytes go to the server as they are: they must be a valid document
        bson.decode(payload, codec_options=check)
    except (bson.errors.InvalidBSON, ValueError, OverflowError) as error:
        raise LineFormatError(
            member, number, f"{ESCAPE_KEY} escape line holds invalid BSON ({error})"
        ) from None
    return payload
