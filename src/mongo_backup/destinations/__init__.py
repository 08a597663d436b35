"""Where backups are stored: local folders and object stores behind one small protocol.

    open_destination("/backups")                   -> LocalFolder
    open_destination("file:///backups")            -> LocalFolder
    open_destination("s3://bucket/prefix", endpoint_url=...)  -> ObjectStoreDestination
    open_destination("gs://bucket/prefix")         -> ObjectStoreDestination
    open_destination("az://container/prefix")      -> ObjectStoreDestination
    MemoryDestination()                            (tests of the layers above)

Every destination keeps the contracts written on :class:`Destination` (atomic
visibility, keys that cannot escape the location, metadata that round-trips, list()
without temporary or sidecar files, errors of one line without credentials), and one
conformance suite (``tests/destinations/test_destinations.py``) runs over all of them,
S3 included against a real S3 HTTP API.

Errors:

    MongoBackupError
    └── DestinationError (exit 1)     a store operation failed
        ├── ObjectNotFound            open() or copy() of an absent key
        └── InvalidKey                a key refused by check_key()

A URL that cannot name a destination (unknown scheme, credentials in it, a missing
Azure account) is a :class:`~mongo_backup.errors.ConfigError` (exit 2).

May import: the ground modules (``errors``, ``files``, ``redact``, ``retry``) only. A
destination stores bytes under keys and knows nothing of archives, manifests or servers.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

from ..errors import ConfigError, DestinationError, InvalidKey, ObjectNotFound
from .base import (
    FIRST_PART_SIZE,
    MAX_PARTS,
    MIN_PART_SIZE,
    Destination,
    ObjectInfo,
    check_key,
    check_metadata,
    part_size_for,
)
from .local import LocalFolder

if TYPE_CHECKING:
    from .memory import MemoryDestination
    from .objectstore import ObjectStoreDestination, StoreSettings

# Loaded when first named: obstore (and the object store code around it) costs every
# command's start ~5 ms, and a backup to a folder never touches it.
_LATER = {
    "MemoryDestination": ".memory",
    "ObjectStoreDestination": ".objectstore",
    "StoreSettings": ".objectstore",
}


def __getattr__(name: str) -> Any:
    if name not in _LATER:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LATER[name], __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "FIRST_PART_SIZE",
    "MAX_PARTS",
    "MIN_PART_SIZE",
    "Destination",
    "DestinationError",
    "InvalidKey",
    "LocalFolder",
    "MemoryDestination",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStoreDestination",
    "StoreSettings",
    "check_key",
    "check_metadata",
    "is_url",
    "open_destination",
    "part_size_for",
    "split_archive_url",
]

_URL = re.compile(r"(s3|gs|az|file)://", re.IGNORECASE)
_ANY_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


def is_url(text: str) -> bool:
    """True for the storage URLs this tool opens (s3://, gs://, az://, file://); a
    plain path, even one with a colon in it, is not one."""
    return bool(_URL.match(text))


def open_destination(
    url_or_path: str, *, endpoint_url: str | None = None, settings: StoreSettings | None = None
) -> Destination:
    """The destination a URL or a folder path names. No request is made and nothing is
    created: a local folder comes into being with its first object."""
    if not is_url(url_or_path):
        other = _ANY_SCHEME.match(url_or_path)
        if other:
            raise ConfigError(
                f"{other.group(1)}:// is not a storage this tool writes to; "
                "use a folder, file://, s3://, gs:// or az://"
            )
        if endpoint_url:
            raise ConfigError("an endpoint URL applies to s3://, gs:// and az:// only")
        if not url_or_path:
            raise ConfigError("empty destination")
        return LocalFolder(Path(url_or_path))
    parts = urlsplit(url_or_path)
    if parts.scheme.lower() == "file":
        if endpoint_url:
            raise ConfigError("an endpoint URL applies to s3://, gs:// and az:// only")
        if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
            raise ConfigError("a file URL names a local path: file:///path/to/folder")
        # Imported here: urllib.request pulls in http.client and email (~40 ms of every
        # command's start) for this one function.
        from urllib.request import url2pathname

        return LocalFolder(Path(url2pathname(unquote(parts.path or "/"))))
    from .storeopen import open_object_store

    return open_object_store(url_or_path, endpoint_url=endpoint_url, settings=settings)


def split_archive_url(
    url_or_path: str, *, endpoint_url: str | None = None, settings: StoreSettings | None = None
) -> tuple[Destination, str]:
    """The destination holding an archive, and the archive's key in it:
    ``"s3://b/prefix/backup_x.tar.zst"`` gives the destination at ``s3://b/prefix`` and
    ``"backup_x.tar.zst"``; ``"/backups/backup_x.tar.zst"`` the folder ``/backups``."""
    if is_url(url_or_path):
        parts = urlsplit(url_or_path)
        folder, _, name = parts.path.rpartition("/")
        if parts.scheme.lower() == "file" and not folder:
            folder = "/"
        location = urlunsplit((parts.scheme, parts.netloc, folder, parts.query, parts.fragment))
    else:
        path = Path(url_or_path)
        name = "" if url_or_path.endswith(("/", "\\")) else path.name
        location = str(path.parent)
    if not name:
        raise ConfigError(f"{_shown(url_or_path)} names a location, not an archive")
    try:
        check_key(name)
    except InvalidKey as error:
        raise ConfigError(f"{_shown(url_or_path)}: {error}") from None
    destination = open_destination(location, endpoint_url=endpoint_url, settings=settings)
    return destination, name


def _shown(url_or_path: str) -> str:
    """The text for a message: user information, if any, cut out."""
    parts = urlsplit(url_or_path) if is_url(url_or_path) else None
    if parts is None or "@" not in parts.netloc:
        return url_or_path
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))
