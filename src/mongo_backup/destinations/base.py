"""What every destination shares: the protocol, its errors, and the rules for keys,
metadata and multipart part sizes.

A *destination* is one location (a local folder, a bucket and prefix, a container) that
holds objects under *keys*. Keys are relative to the location, "/"-separated, and
checked here before any implementation sees them (:func:`check_key`), so that no key can
reach outside the location, whatever the store does with ".." or a leading "/".

Metadata is a small dict of strings kept with an object. Its rules
(:func:`check_metadata`) are the intersection of what S3, Google Cloud Storage and Azure
Blob Storage accept, so that an object keeps the same metadata on every destination.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Protocol

from ..errors import DestinationError, InvalidKey

MiB = 1024 * 1024
GiB = 1024 * MiB

# S3 and Google Cloud Storage refuse parts under 5 MiB (except the last) and uploads of
# more than 10,000 parts; S3 refuses parts over 5 GiB. Azure allows more, so these are
# the limits everywhere.
MIN_PART_SIZE = 5 * MiB
MAX_PART_SIZE = 5 * GiB
MAX_PARTS = 10_000
FIRST_PART_SIZE = 8 * MiB

# A local folder keeps an object's metadata beside it in "KEY.meta.json", and writes
# through hidden temporary files ".NAME.mb-tmp-RANDOM". Neither is an object: list()
# hides them, and keys that would collide with them are refused.
SIDECAR_SUFFIX = ".meta.json"
TEMP_MARKER = ".mb-tmp-"

# One key segment: the characters that S3, GCS, Azure and object_store's path encoding
# all keep as they are (object_store percent-encodes "%", "~", "#" and others, so a key
# holding them would come back from list() spelled differently).
_SEGMENT = re.compile(r"[A-Za-z0-9._+=@,-]+")
# Azure metadata names must be C# identifiers (no "-"), and S3 lower-cases names.
_METADATA_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]*")
# S3 allows 2 KiB of user metadata in total (names and values).
MAX_METADATA_BYTES = 2048


@dataclass(frozen=True)
class ObjectInfo:
    """One object. ``key`` is relative to the destination. ``modified`` is in UTC (None
    when the store does not say). ``metadata`` is None when it was not fetched:
    ``list()`` never fetches it (object stores return metadata only object by object),
    ``stat()`` and the ``put_*`` methods always give it."""

    key: str
    size: int
    modified: datetime | None = None
    metadata: dict[str, str] | None = None


class Destination(Protocol):
    """A location that stores objects under keys. Contracts every implementation keeps
    (the conformance suite in ``tests/destinations/test_destinations.py`` checks each):

    - Atomic visibility: an object is visible under its key only once it is complete. A
      ``put_*`` that fails, including a ``put_stream`` whose iterator raises, leaves the
      key as it was (absent, or the previous object) and nothing visible elsewhere; the
      iterator's own exception reaches the caller unchanged.
    - Keys are checked by :func:`check_key` (:class:`InvalidKey` otherwise) and never
      reach outside the location.
    - Metadata given to ``put_*`` comes back from ``stat()`` and survives ``copy()``.
    - ``list()`` shows objects only: no temporary files, no metadata sidecars.
    - Failures are :class:`DestinationError` (one line, no credentials); ``url`` and
      ``repr()`` carry no credentials either.
    """

    @property
    def url(self) -> str:
        """The location, as a URL ("s3://bucket/prefix", "file:///backups")."""
        ...

    def put_file(
        self, key: str, path: Path, *, metadata: dict[str, str] | None = None
    ) -> ObjectInfo:
        """Store the file at ``path`` under ``key``, replacing any object there."""
        ...

    def put_stream(
        self,
        key: str,
        chunks: Iterable[bytes],
        *,
        metadata: dict[str, str] | None = None,
        size_hint: int | None = None,
    ) -> ObjectInfo:
        """Store the concatenated chunks under ``key``, holding about one multipart part
        in memory whatever the total. ``size_hint``, an upper bound of the total when
        the caller has one, lets object stores pick parts large enough for it."""
        ...

    def open(self, key: str) -> BinaryIO:
        """A file object reading the object from the start, streaming: the object is
        never read into memory whole. :class:`ObjectNotFound` if absent."""
        ...

    def stat(self, key: str) -> ObjectInfo | None:
        """The object's size, time and metadata, or None if there is none."""
        ...

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Every object whose key starts with ``prefix`` (plain string comparison, at
        any depth), sorted by key, without metadata."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object and its metadata; a missing key is not an error."""
        ...

    def copy(self, source_key: str, target_key: str) -> None:
        """Copy the object and its metadata to ``target_key``, replacing any object
        there. :class:`ObjectNotFound` if the source is absent."""
        ...


def check_key(key: str) -> str:
    """``key`` if it is a safe relative key, else :class:`InvalidKey`.

    Refused: empty keys and segments (so no leading, trailing or doubled "/"), "." and
    "..", backslashes, and any character outside ``A-Z a-z 0-9 . _ + = @ , -``, plus the
    names a local folder uses for itself (``*.meta.json``, ``*.mb-tmp-*``).
    """
    if not isinstance(key, str) or not key:
        raise InvalidKey("empty object key")
    shown = key if len(key) <= 200 else key[:197] + "..."
    if "\\" in key:
        raise InvalidKey(f"object key {shown!r} holds a backslash")
    if key.startswith("/"):
        raise InvalidKey(f"object key {shown!r} is absolute; keys are relative")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidKey(f"object key {shown!r} holds an empty, '.' or '..' segment")
        if not _SEGMENT.fullmatch(segment):
            raise InvalidKey(
                f"object key {shown!r}: only letters, digits and . _ + = @ , - are allowed"
            )
        if TEMP_MARKER in segment:
            raise InvalidKey(f"object key {shown!r} holds the reserved {TEMP_MARKER!r}")
    if key.endswith(SIDECAR_SUFFIX):
        raise InvalidKey(f"object key {shown!r} ends in the reserved {SIDECAR_SUFFIX!r}")
    return key


def check_prefix(prefix: str) -> str:
    """A list() prefix: "" or the start of a valid key (it may end in "/")."""
    if prefix:
        # "x/" is a fine prefix though not a fine key: check it as if one character
        # more followed.
        check_key(prefix + "x" if prefix.endswith("/") else prefix)
    return prefix


def is_hidden(key: str) -> bool:
    """True for the names destinations use for themselves (never listed as objects)."""
    name = key.rsplit("/", 1)[-1]
    return name.endswith(SIDECAR_SUFFIX) or TEMP_MARKER in name


def check_metadata(metadata: dict[str, str] | None) -> dict[str, str]:
    """A copy of ``metadata`` if every store can keep it as it is, else
    :class:`DestinationError`: names ``[a-z][a-z0-9_]*`` (at most 64 characters),
    values printable ASCII, at most 2 KiB in all."""
    if not metadata:
        return {}
    total = 0
    for name, value in metadata.items():
        if not isinstance(name, str) or not _METADATA_NAME.fullmatch(name):
            raise DestinationError(
                f"metadata name {name!r}: use lower-case letters, digits and '_', "
                "starting with a letter"
            )
        if not isinstance(value, str) or not _PRINTABLE_ASCII.fullmatch(value):
            raise DestinationError(f"metadata {name!r}: the value must be printable ASCII")
        total += len(name) + len(value)
    if total > MAX_METADATA_BYTES:
        raise DestinationError(
            f"metadata holds {total} bytes; stores keep at most {MAX_METADATA_BYTES}"
        )
    return dict(metadata)


def part_size_for(size_hint: int | None, first: int = FIRST_PART_SIZE) -> int:
    """The multipart part size for an upload of at most ``size_hint`` bytes.

    Parts start at ``first`` (8 MiB) and double as long as the hint would need more
    than 9,000 of them: the last tenth of the 10,000 allowed is kept in reserve for a
    hint that falls short. Without a hint, ``first``. Never over 5 GiB, so the largest
    upload is about 44 TiB, beyond S3's own limit of 5 TiB per object.
    """
    if first < MIN_PART_SIZE:
        raise ValueError(f"part size {first} is under the stores' minimum {MIN_PART_SIZE}")
    size = first
    if size_hint is None:
        return size
    while size_hint > size * (MAX_PARTS * 9 // 10) and size * 2 <= MAX_PART_SIZE:
        size *= 2
    return size
