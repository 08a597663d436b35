"""Building damaged archives for test_damaged: re-packed, cut, flipped and forged copies.

Re-packing goes through Python's tarfile and the same compressions the tool writes,
so a test can change exactly one thing (an order, a member, a byte) and nothing else.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zstandard

from bsontools import open_tar


def members_of(archive: Path) -> list[tuple[str, bytes]]:
    with open_tar(archive) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar]  # type: ignore[union-attr]


def compress_bytes(data: bytes, compress: str) -> bytes:
    if compress == "gzip":
        return gzip.compress(data, mtime=0)
    if compress == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    return data


def write_tar(path: Path, members: list[tuple[str, bytes]], compress: str) -> Path:
    """A tar of ``members`` in the given order, compressed like the tool's own."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o600
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(compress_bytes(buffer.getvalue(), compress))
    return path


def data_span(archive: Path, member: str) -> tuple[int, int]:
    """(offset, size) of a member's data inside an uncompressed .tar."""
    with tarfile.open(archive) as tar:
        info = tar.getmember(member)
        return info.offset_data, info.size


def flipped(data: bytes, offset: int, bit: int = 0) -> bytes:
    return data[:offset] + bytes([data[offset] ^ (1 << bit)]) + data[offset + 1 :]


def damaged_copy(tmp_path: Path, archive: Path, data: bytes, tag: str) -> Path:
    # Keep the real suffix: the tool must detect by content, but people keep names.
    path = tmp_path / f"{tag}{''.join(archive.suffixes)}"
    path.write_bytes(data)
    return path


def write_tar_bytes(members: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def forged_manifest(manifest: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
    """A manifest changed on purpose, its own checksum recomputed to match."""
    data = json.loads(manifest)
    data.pop("manifest_sha256")
    change(data)
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    data["manifest_sha256"] = hashlib.sha256(canonical.encode()).hexdigest()
    return json.dumps(data, indent=2).encode()
