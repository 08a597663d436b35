"""Helpers shared by the backup, restore and verify tests: raw BSON and archive access.

Everything here reads bytes exactly as the server or the archive holds them, so tests
can compare byte for byte instead of through decoded Python values (which would hide
the very losses the tool promises not to make).
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import bson
import zstandard
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.raw_bson import RawBSONDocument

from mongo_backup.archive.lines import iter_documents, iter_lines

RAW_OPTIONS: CodecOptions[Any] = CodecOptions(document_class=RawBSONDocument)
# Decoding only to build dict keys: DATETIME_AUTO copes with dates outside year 1..9999.
_KEY_OPTIONS: CodecOptions[Any] = CodecOptions(datetime_conversion=DatetimeConversion.DATETIME_AUTO)


def raw_document(*elements: bytes) -> bytes:
    """A BSON document from already-encoded elements (type byte, key, NUL, value)."""
    body = b"".join(elements)
    return (len(body) + 5).to_bytes(4, "little") + body + b"\x00"


def int32_element(key: str, value: int) -> bytes:
    return b"\x10" + key.encode() + b"\x00" + value.to_bytes(4, "little", signed=True)


def id_key(raw: bytes) -> str:
    """A stable key for a raw document's ``_id`` (type name plus repr of its value)."""
    value = bson.decode(raw, codec_options=_KEY_OPTIONS)["_id"]
    return f"{type(value).__name__}:{value!r}"


def raw_docs_by_id(client: Any, db: str, coll: str) -> dict[str, bytes]:
    """{id_key: raw BSON bytes} of every document, exactly as the server returns it."""
    collection = client[db].get_collection(coll, codec_options=RAW_OPTIONS)
    result: dict[str, bytes] = {}
    for document in collection.find({}):
        raw = bytes(document.raw)
        result[id_key(raw)] = raw
    return result


@contextmanager
def open_tar(archive_path: str | Path) -> Iterator[tarfile.TarFile]:
    """A streaming tarfile over a .tar, .tar.gz or .tar.zst archive."""
    path = Path(archive_path)
    with open(path, "rb") as raw:
        if path.name.endswith(".tar.zst"):
            reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
            with reader, tarfile.open(fileobj=reader, mode="r|") as tar:
                yield tar
        elif path.name.endswith(".tar.gz"):
            with tarfile.open(fileobj=raw, mode="r|gz") as tar:
                yield tar
        elif path.name.endswith(".tar"):
            with tarfile.open(fileobj=raw, mode="r|") as tar:
                yield tar
        else:
            raise ValueError(f"not an archive name this tool writes: {path.name}")


def archive_members(archive_path: str | Path) -> list[str]:
    """Member names in archive order."""
    with open_tar(archive_path) as tar:
        return [member.name for member in tar]


def read_archive_member(archive_path: str | Path, member_name: str) -> bytes:
    """The bytes of one member; KeyError if the archive has no such member."""
    with open_tar(archive_path) as tar:
        for member in tar:
            if member.name == member_name:
                handle = tar.extractfile(member)
                assert handle is not None, f"{member_name} is not a regular file"
                return handle.read()
    raise KeyError(member_name)


def read_manifest(archive_path: str | Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(read_archive_member(archive_path, "manifest.json"))
    return data


def manifest_entry(manifest: dict[str, Any], name: str) -> dict[str, Any]:
    for entry in manifest["collections"]:
        if entry["name"] == name:
            return dict(entry)
    raise KeyError(name)


def documents_of(text: bytes, member: str = "member") -> list[bytes]:
    """Raw BSON of every document in a member (compact or pretty lines)."""
    return [raw for _, raw in iter_documents(iter_lines(io.BytesIO(text), member), member)]


def member_docs_by_id(archive_path: str | Path, member_name: str) -> dict[str, bytes]:
    docs = documents_of(read_archive_member(archive_path, member_name), member_name)
    return {id_key(raw): raw for raw in docs}
