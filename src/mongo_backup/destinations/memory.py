"""An in-memory destination, for tests of the layers above: fast, no disk, no server.

It keeps the contracts of :class:`~.base.Destination` (the conformance suite runs over it
too) with one difference in kind: ``put_stream`` holds the whole object in memory
while it is written, which is its very purpose. Every instance is its own empty store;
``url`` is ``memory://NAME``.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from ..errors import DestinationError, ObjectNotFound
from .base import ObjectInfo, check_key, check_metadata, check_prefix

_names = itertools.count(1)


@dataclass(frozen=True)
class _Stored:
    data: bytes
    modified: datetime
    metadata: dict[str, str]


class MemoryDestination:
    """Objects in a dict (see the module docstring)."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name or f"store{next(_names)}"
        self._objects: dict[str, _Stored] = {}

    @property
    def url(self) -> str:
        return f"memory://{self.name}"

    def __repr__(self) -> str:
        return f"MemoryDestination({self.name!r})"

    def put_file(
        self, key: str, path: Path, *, metadata: dict[str, str] | None = None
    ) -> ObjectInfo:
        check_key(key)
        meta = check_metadata(metadata)
        try:
            data = Path(path).read_bytes()
        except OSError as error:
            raise DestinationError(f"cannot read {path}: {error.strerror or error}") from error
        return self._store(key, data, meta)

    def put_stream(
        self,
        key: str,
        chunks: Iterable[bytes],
        *,
        metadata: dict[str, str] | None = None,
        size_hint: int | None = None,
    ) -> ObjectInfo:
        check_key(key)
        meta = check_metadata(metadata)
        # Joined first, stored after: an iterator that raises leaves the key untouched.
        data = b"".join(bytes(chunk) for chunk in chunks)
        return self._store(key, data, meta)

    def open(self, key: str) -> BinaryIO:
        stored = self._objects.get(check_key(key))
        if stored is None:
            raise ObjectNotFound(f"{self.url}: no object {key!r}")
        return io.BytesIO(stored.data)

    def stat(self, key: str) -> ObjectInfo | None:
        stored = self._objects.get(check_key(key))
        if stored is None:
            return None
        return ObjectInfo(key, len(stored.data), stored.modified, dict(stored.metadata))

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        check_prefix(prefix)
        return [
            ObjectInfo(key, len(stored.data), stored.modified, None)
            for key, stored in sorted(self._objects.items())
            if key.startswith(prefix)
        ]

    def delete(self, key: str) -> None:
        self._objects.pop(check_key(key), None)

    def copy(self, source_key: str, target_key: str) -> None:
        check_key(target_key)
        stored = self._objects.get(check_key(source_key))
        if stored is None:
            raise ObjectNotFound(f"{self.url}: no object {source_key!r} to copy")
        self._store(target_key, stored.data, dict(stored.metadata))

    def _store(self, key: str, data: bytes, metadata: dict[str, str]) -> ObjectInfo:
        stored = _Stored(data, datetime.now(UTC), metadata)
        self._objects[key] = stored
        return ObjectInfo(key, len(data), stored.modified, dict(metadata))
