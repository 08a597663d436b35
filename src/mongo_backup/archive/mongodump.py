"""mongodump's output folder, read through the same interface as our own backups.

A mongodump folder holds, per database, ``COLL.bson`` (the documents, BSON one after
another; ``.bson.gz`` with ``--gzip``) and ``COLL.metadata.json`` (Extended JSON: the
collection's ``options``, ``indexes``, ``uuid``, ``collectionName`` and ``type``; a view
has metadata and no documents). :class:`MongodumpReader` presents one database of it as a
backup: a manifest made from the metadata (no checksums: mongodump records none, so
``verify`` can only check that every document parses) and members that stream each
``.bson`` file as Extended JSON lines, converted by libbson as a backup's are. ``convert``
writes the same members into a mongo-backup archive.

Contracts:
- The folder given is a database's folder (``dump/shop``) or a dump (``dump``). A dump of
  several databases is read as a backup of several (``database`` ALL_DATABASES, each
  collection named ``DB.COLLECTION``, member files named from those namespaces as a backup
  of several names them); ``admin``, ``config`` and ``local`` are the server's own and
  left out, as a backup of all databases leaves them out.
- Reading is bounded: a document's stated length must be between 5 bytes and
  :data:`MAX_DOCUMENT` and end inside the file with a 0 byte; libbson checks the rest
  (nesting, types, UTF-8). Anything else is an :class:`ArchiveError` naming the file and
  the byte offset, as for a damaged archive of our own.
- ``oplog.bson`` (``mongodump --oplog``, beside the database's folder) becomes the
  ``$changes`` member (:mod:`.mongodump_oplog`): the restore replays it after the
  documents, as ``mongorestore --oplogReplay`` does, and the consistency is ``oplog``.
- Time-series collections (dumped as their buckets) are refused.
"""

from __future__ import annotations

import datetime as dt
import functools
import gzip
import json
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import IO, Any, cast

import bson
from bson import json_util
from bson.codec_options import CodecOptions
from bson.json_util import CANONICAL_JSON_OPTIONS

from ..errors import ArchiveError
from ..names import ALL_DATABASES, file_names
from .backup_reader import BackupReader
from .extjson import BatchEncoder
from .manifest import CHANGES_FILE, CHANGES_NAME, MANIFEST_NAME, CollectionEntry, Manifest
from .mongodump_oplog import oplog_events

MAX_DOCUMENT = 16 * 1024 * 1024 + 16 * 1024  # the server's limit, plus its own headroom
MAX_METADATA = 16 * 1024 * 1024
BATCH_BYTES = 1 << 20  # documents converted per libbson pass
FORMAT = "mongodump"
SERVER_OWN = ("admin", "config", "local")  # never data to copy (see mongo/deployment.py)


def _dump_files(folder: Path) -> list[Path]:
    return [
        p
        for p in folder.iterdir()
        if p.is_file() and p.name.endswith((".bson", ".bson.gz", ".metadata.json"))
    ]


def database_folders(path: Path) -> list[Path]:
    """The database folders of a mongodump output at ``path`` ([] if it is none)."""
    if not path.is_dir() or (path / MANIFEST_NAME).exists():
        return []
    # A dump's top folder holds at most its oplog; a database's folder holds collections.
    if any(p.name != "oplog.bson" for p in _dump_files(path)):
        return [path]
    return sorted(
        p
        for p in path.iterdir()
        if p.is_dir() and _dump_files(p) and urllib.parse.unquote(p.name) not in SERVER_OWN
    )


def is_mongodump(path: Path) -> bool:
    return bool(database_folders(path))


class MongodumpReader(BackupReader):
    def __init__(self, path: Path) -> None:
        folders = database_folders(path)
        if not folders:
            raise ArchiveError(f"{path}: not a mongodump output folder")
        self.several = len(folders) > 1
        self.folder = folders[0] if not self.several else path
        self.location = str(self.folder)
        sources: dict[str, Path] = {}  # entry name -> the .bson file it is read from
        entries = [entry for folder in folders for entry in self._entries(folder, sources)]
        if self.several:  # member files named from namespaces, as a backup of several
            files = file_names(entry.name for entry in entries if entry.file)
            entries = [replace(e, file=files[e.name]) if e.file else e for e in entries]
        # member file -> the .bson file it is read from
        self.paths = {e.file: sources[e.name] for e in entries if e.file}
        databases = [urllib.parse.unquote(folder.name) for folder in folders]
        # mongodump --oplog writes oplog.bson at the top of the dump, beside the databases.
        top = path if self.several or folders[0] != path else path.parent
        self.oplog = top / "oplog.bson" if (top / "oplog.bson").is_file() else None
        if self.oplog is not None:
            entries.append(CollectionEntry(CHANGES_NAME, "changes", CHANGES_FILE))
        stamp = dt.datetime.fromtimestamp(self.folder.stat().st_mtime, dt.UTC).isoformat()
        self.databases = frozenset(databases)  # the oplog's entries of these are replayed
        self.manifest = Manifest(
            database=ALL_DATABASES if self.several else databases[0],
            databases=databases if self.several else None,
            tool_version="mongodump",
            json_format="canonical",
            pretty=False,
            compression="none",
            started_at=stamp,
            finished_at=stamp,
            server={},
            hosts=[],
            collections=entries,
            consistency="oplog" if self.oplog is not None else "none",
            format=FORMAT,
        )

    def _entries(self, folder: Path, sources: dict[str, Path]) -> list[CollectionEntry]:
        """One database folder's entries (named by namespace in a dump of several); the
        ``.bson`` file of each that has one goes into ``sources``."""
        entries = [self._entry(folder, stem) for stem in self._names(folder)]
        if self.several:
            db = urllib.parse.unquote(folder.name)
            entries = [replace(entry, name=f"{db}.{entry.name}") for entry in entries]
        sources.update({e.name: folder / e.file for e in entries if e.file})
        return entries

    def _names(self, folder: Path) -> list[str]:
        stems = set()
        for path in _dump_files(folder):
            name = path.name
            for suffix in (".metadata.json", ".bson.gz", ".bson"):
                if name.endswith(suffix):
                    stems.add(name[: -len(suffix)])
                    break
        return sorted(stem for stem in stems if not stem.startswith("system."))

    def _entry(self, folder: Path, stem: str) -> CollectionEntry:
        metadata = self._metadata(folder, stem)
        kind = str(metadata.get("type") or "collection")
        name = str(metadata.get("collectionName") or urllib.parse.unquote(stem))
        if kind == "timeseries":
            raise ArchiveError(
                f"{folder}: {name} is a time-series collection; mongodump folders of "
                "those are not supported yet"
            )
        data = self._data_path(folder, stem)
        if kind == "view" or data is None:
            if kind != "view":
                raise ArchiveError(f"{folder}: {stem}.metadata.json has no {stem}.bson")
            data = None
        return CollectionEntry(
            name=name,
            type="view" if kind == "view" else "collection",
            file=data.name if data is not None else None,
            options=cast(dict[str, Any], metadata.get("options") or {}),
            indexes=cast(list[dict[str, Any]], metadata.get("indexes") or []),
            uuid=str(metadata["uuid"]) if metadata.get("uuid") else None,
            count=0,
            bytes=0,
            sha256=None,  # mongodump records none: see verify.check_member
        )

    def _data_path(self, folder: Path, stem: str) -> Path | None:
        for name in (f"{stem}.bson", f"{stem}.bson.gz"):
            if (folder / name).is_file():
                return folder / name
        return None

    def _metadata(self, folder: Path, stem: str) -> dict[str, Any]:
        path = folder / f"{stem}.metadata.json"
        if not path.is_file():
            return {}
        try:
            with open(path, "rb") as handle:
                raw = handle.read(MAX_METADATA + 1)
            if len(raw) > MAX_METADATA:
                raise ValueError("larger than any metadata mongodump writes")
            value = json_util.loads(raw.decode("utf-8"))
            if not isinstance(value, dict):
                raise ValueError("not a JSON object")
            # Canonical Extended JSON, as our manifests hold options and index specs.
            text = json_util.dumps(value, json_options=CANONICAL_JSON_OPTIONS)
            return cast(dict[str, Any], json.loads(text))
        except (OSError, ValueError, TypeError, RecursionError) as error:
            raise ArchiveError(f"{path}: not mongodump metadata ({error})") from None

    def members(self) -> Iterator[tuple[CollectionEntry, IO[bytes]]]:
        for entry in self.manifest.data_entries:
            assert entry.file is not None
            if entry.type == "changes":
                assert self.oplog is not None
                events = functools.partial(_events, databases=self.databases)
                with open(self.oplog, "rb") as handle:
                    stream = _LinesStream(handle, str(self.oplog), events)
                    yield entry, cast(IO[bytes], stream)
                continue
            path = self.paths[entry.file]
            opener = gzip.open if path.name.endswith(".gz") else open
            with opener(path, "rb") as handle:
                yield entry, cast(IO[bytes], _LinesStream(cast(IO[bytes], handle), str(path)))


def iter_bson(stream: IO[bytes], where: str) -> Iterator[bytes]:
    """Batches of whole BSON documents from ``stream``, each document checked for a
    sane length and its closing 0 byte; ArchiveError at the first that is not."""
    pending: list[bytes] = []
    size = offset = 0
    while True:
        try:
            head = stream.read(4)
        except (OSError, EOFError, gzip.BadGzipFile) as error:
            raise ArchiveError(f"{where}: cannot be read at byte {offset} ({error})") from None
        if not head:
            break
        length = int.from_bytes(head, "little", signed=True) if len(head) == 4 else -1
        if not 5 <= length <= MAX_DOCUMENT:
            raise ArchiveError(
                f"{where}: not a BSON document at byte {offset} "
                + ("(the file ends inside a length)" if length == -1 else f"(length {length})")
            )
        try:
            body = stream.read(length - 4)
        except (OSError, EOFError, gzip.BadGzipFile) as error:
            raise ArchiveError(f"{where}: cannot be read at byte {offset} ({error})") from None
        if len(body) != length - 4 or body[-1:] != b"\x00":
            raise ArchiveError(f"{where}: the document at byte {offset} is cut or malformed")
        pending.append(head + body)
        size += length
        offset += length
        if size >= BATCH_BYTES:
            yield b"".join(pending)
            pending, size = [], 0
    if pending:
        yield b"".join(pending)


_STRUCTURE_ONLY: CodecOptions[Any] = CodecOptions(unicode_decode_error_handler="surrogateescape")


class _CheckingEncoder(BatchEncoder):
    """A document libbson cannot turn into JSON is written as an exact-bytes escape line
    by a backup (the server sent it); from a file it must first be well-formed BSON."""

    def _escape(self, raw: bytes) -> str:
        try:
            bson.decode(raw, codec_options=_STRUCTURE_ONLY)
        except (bson.errors.InvalidBSON, ValueError, IndexError) as error:
            raise ValueError(f"malformed BSON document ({error})") from None
        return super()._escape(raw)


def _events(batch: bytes, databases: frozenset[str]) -> bytes:
    """A batch of oplog entries as the change events of ``databases``."""
    try:
        return b"".join(oplog_events(batch, databases))
    except (KeyError, TypeError, AttributeError, bson.errors.InvalidBSON) as error:
        raise ValueError(f"an oplog entry that cannot be replayed ({error!r})") from None


class _LinesStream:
    """A ``.bson`` file as Extended JSON lines (the member a backup would hold); with
    ``transform``, each batch of documents is replaced by what it returns first."""

    def __init__(
        self, raw: IO[bytes], where: str, transform: Callable[[bytes], bytes] | None = None
    ) -> None:
        self._batches = iter_bson(raw, where)
        self._transform = transform
        self._encoder = _CheckingEncoder("canonical")
        self._where = where
        self._buffer = b""
        self.documents = 0  # converted so far

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            batch = next(self._batches, None)
            if batch is None:
                break
            try:
                if self._transform is not None:
                    batch = self._transform(batch)
                text, count = self._encoder.encode(batch)
            except ValueError as error:
                raise ArchiveError(f"{self._where}: {error}") from None
            self.documents += count
            self._buffer += text
        if size < 0:
            out, self._buffer = self._buffer, b""
        else:
            out, self._buffer = self._buffer[:size], self._buffer[size:]
        return out
