"""Coverage-guided fuzzing of the readers of untrusted input, with atheris (libFuzzer).

The first byte of an input picks the entry point, the rest is what it reads:

    0  lines     iter_documents(iter_lines(...)): a member's Extended JSON lines
    1  manifest  parse_manifest(...)
    2  archive   open_backup(FILE), then every member read to its end, line by line

Any exception other than MongoBackupError is a crash: libFuzzer stops and saves the
input as ``crash-<sha1>`` (replay it by passing that file as the only argument).
``FUZZ_TARGETS=lines,manifest`` fuzzes only some entry points, so that a known crash in
one does not stop the search in the others. See fuzz/README.md for short and long runs.

Importable without atheris (the tests and tools can call :func:`one_input` directly).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import tempfile
import traceback
from collections.abc import Callable
from contextlib import nullcontext, suppress
from pathlib import Path
from typing import Any

try:
    import atheris
except ImportError:  # the harness stays importable; fuzzing needs `pip install atheris`
    atheris = None

# Coverage for the tool's readers and the stdlib code they drive; not for pymongo & co.
INSTRUMENTED = ["mongo_backup", "tarfile", "gzip"]
with atheris.instrument_imports(include=INSTRUMENTED) if atheris else nullcontext():
    import gzip
    import tarfile

    import bson
    import zstandard
    from bson.codec_options import CodecOptions, DatetimeConversion

    from mongo_backup.archive.extjson import escape_document
    from mongo_backup.archive.lines import iter_documents, iter_lines
    from mongo_backup.archive.manifest import (
        CollectionEntry,
        Manifest,
        manifest_bytes,
        parse_manifest,
    )
    from mongo_backup.archive.reader import open_backup
    from mongo_backup.errors import MongoBackupError

TARGETS = ("lines", "manifest", "archive")
LENIENT: CodecOptions[Any] = CodecOptions(
    datetime_conversion=DatetimeConversion.DATETIME_AUTO, unicode_decode_error_handler="replace"
)
_SCRATCH: list[Path] = []  # the file the archive entry point writes each input to


def scratch_file() -> Path:
    if not _SCRATCH:
        _SCRATCH.append(Path(tempfile.mkdtemp(prefix="fuzz-readers-")) / "candidate.tar")
    return _SCRATCH[0]


def read_lines(data: bytes) -> None:
    """Every document must be one a server would take: restore sends these bytes as is."""
    for _number, raw in iter_documents(iter_lines(io.BytesIO(data), "m.jsonl"), "m.jsonl"):
        bson.decode(raw, codec_options=LENIENT)  # InvalidBSON here is a crash too


def read_archive(data: bytes) -> None:
    path = scratch_file()
    path.write_bytes(data)
    with open_backup(path) as reader:
        for entry, stream in reader.members():
            assert entry.file is not None
            for _ in iter_documents(iter_lines(stream, entry.file), entry.file):
                pass


def read_manifest(data: bytes) -> None:
    """parse_manifest on the input, then (if it is a JSON object) on the same object with
    its checksum made to match: random bytes alone never get past the SHA-256."""
    with suppress(MongoBackupError):
        parse_manifest(data)
    try:  # the harness's own forging: inputs it cannot forge are simply skipped
        value = json.loads(data)
        if not isinstance(value, dict):
            return
        value.pop("manifest_sha256", None)
        canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        value["manifest_sha256"] = hashlib.sha256(canonical.encode()).hexdigest()
        forged = json.dumps(value).encode()
    except (ValueError, RecursionError):
        return
    parse_manifest(forged)


ENTRY_POINTS: dict[str, Callable[[bytes], Any]] = {
    "lines": read_lines,
    "manifest": read_manifest,
    "archive": read_archive,
}
ENABLED = [t for t in os.environ.get("FUZZ_TARGETS", ",".join(TARGETS)).split(",") if t]


# Crashes already reported, as "ExceptionType@function" (the innermost mongo_backup
# frame), e.g. FUZZ_KNOWN=ReadError@__init__: skipped so the search can go on.
KNOWN = {k for k in os.environ.get("FUZZ_KNOWN", "").split(",") if k}


def signature(error: BaseException) -> str:
    frames = [f for f in traceback.extract_tb(error.__traceback__) if "mongo_backup" in f.filename]
    return f"{type(error).__name__}@{frames[-1].name if frames else '?'}"


def one_input(data: bytes) -> None:
    """One fuzz input: only :class:`MongoBackupError` may come out."""
    if len(data) < 1 or TARGETS[data[0] % len(TARGETS)] not in ENABLED:
        return
    try:
        ENTRY_POINTS[TARGETS[data[0] % len(TARGETS)]](data[1:])
    except MongoBackupError:
        pass
    except Exception as error:
        if signature(error) not in KNOWN:
            raise


def seed_inputs() -> dict[str, bytes]:
    """Valid inputs for each entry point (the fuzzer mutates from these)."""
    escaped = escape_document(bson.encode({"_id": 3, "x": {"$numberLong": "5"}}))
    member = b'{"_id": {"$numberInt": "1"}, "s": "x"}\n{\n  "_id": {"$numberInt": "2"}\n}\n'
    member += escaped.encode() + b"\n"
    entry = CollectionEntry(
        "c", "collection", "c.jsonl", count=3, bytes=len(member),
        sha256=hashlib.sha256(member).hexdigest(),
    )  # fmt: skip
    manifest = manifest_bytes(
        Manifest("db", "0.1.0", "canonical", False, "none", "t0", "t1", {}, [], collections=[entry])
    )
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, body in (("manifest.json", manifest), ("c.jsonl", member)):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(body), 0o600
            tar.addfile(info, io.BytesIO(body))
    plain = buffer.getvalue()
    compressor = zstandard.ZstdCompressor(write_checksum=True)
    return {
        "lines": b"\0" + member,
        "manifest": b"\1" + manifest,
        "archive-tar": b"\2" + plain,
        "archive-tar-gz": b"\2" + gzip.compress(plain, mtime=0),
        "archive-tar-zst": b"\2" + compressor.compress(plain),
    }


def write_corpus(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in seed_inputs().items():
        (folder / f"seed-{name}").write_bytes(data)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--write-corpus":
        write_corpus(Path(sys.argv[2]))
        return
    if atheris is None:
        sys.exit("atheris is not installed: .venv/bin/pip install atheris")
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
