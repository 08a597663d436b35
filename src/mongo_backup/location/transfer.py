"""Backups kept at a location (a folder or an object store): verified uploads, fetching
them back, and what a listing shows of them.

Uploading (:func:`upload_file`, :func:`upload_stream`) never leaves a short or damaged
object under an archive's name: the bytes go under a temporary key, what the store then
holds is read back and its size and SHA-256 compared with what was sent, and only then is
it copied to the final key (never over an existing archive: an upload to a taken name is
refused), followed by a ``KEY.sha256`` sidecar in ``sha256sum`` format
(the completion marker: ``sha256sum -c`` checks a downloaded archive with it). The
archive's metadata (database, kind, parent, ...) rides on the object and on its sidecar,
so ``list`` and ``prune`` need no download, even of an encrypted archive. The sidecar's
is the final word: an archive uploaded while the backup ran (``--stream``) got its
object's metadata from the plan, before the backup knew how it would end.

Fetching (:func:`fetch_chain`) downloads an archive (and, for an increment, its parents)
into a working folder, checking each against its recorded SHA-256, and decrypts ``.age``
archives with the given identities.
"""

from __future__ import annotations

import contextlib
import logging
import re
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from ..archive.encryption import SUFFIX as AGE_SUFFIX
from ..archive.encryption import decrypt_file, identities
from ..archive.lines import READ_CHUNK, StreamStats
from ..archive.manifest import Manifest
from ..archive.reader import open_backup
from ..destinations import Destination, is_url, open_destination
from ..destinations import split_archive_url as split_url
from ..errors import ArchiveError, ConfigError, DestinationError, Interrupted, ObjectNotFound
from ..names import ARCHIVE_FOLDER, ARCHIVE_NAME
from .pipe import is_stdio, spooled_stdin

logger = logging.getLogger(__name__)

SHA_SUFFIX = ".sha256"


def metadata_for(manifest: Manifest, encrypted: bool) -> dict[str, str]:
    """What a listing shows of an archive without opening it (values percent-encoded:
    stores keep printable ASCII only)."""
    data = {
        "mb_id": manifest.backup_id or "",
        "mb_database": quote(manifest.database, safe=""),
        "mb_kind": manifest.kind,
        "mb_parent": (manifest.parent or {}).get("id", ""),
        "mb_started": manifest.started_at,
        "mb_collections": str(sum(e.is_collection for e in manifest.collections)),
        "mb_failed": str(len(manifest.failed)),
        "mb_consistency": manifest.consistency,
        "mb_encrypted": "yes" if encrypted else "no",
    }
    if manifest.window is not None:  # what ``list`` and ``status`` show as covered
        data["mb_from"], data["mb_to"] = (f"{t}:{i}" for t, i in manifest.window)
    return {key: value for key, value in data.items() if value}


class _Hashing:
    """Chunks passed on while their SHA-256 and size are taken."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = chunks
        self.stats = StreamStats()

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            self.stats.update(chunk)
            yield chunk


def _read_chunks(handle: IO[bytes]) -> Iterator[bytes]:
    while chunk := handle.read(READ_CHUNK):
        yield chunk


def _file_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        yield from _read_chunks(handle)


def _stored_stats(
    destination: Destination, key: str, stopped: Callable[[], bool] | None = None
) -> StreamStats:
    stats = StreamStats()
    with destination.open(key) as handle:
        for chunk in _read_chunks(handle):
            if stopped is not None and stopped():
                raise Interrupted(f"{key}: the upload was stopped while it was read back")
            stats.update(chunk)
    return stats


def upload_file(destination: Destination, path: Path, key: str, metadata: dict[str, str]) -> str:
    """Upload a finished archive file; see the module's contract. Returns its URL."""
    return upload_stream(destination, _file_chunks(path), key, metadata, path.stat().st_size)


def upload_stream(
    destination: Destination,
    chunks: Iterable[bytes],
    key: str,
    metadata: dict[str, str],
    size_hint: int | None = None,
    final_metadata: Callable[[], dict[str, str]] | None = None,
    stopped: Callable[[], bool] | None = None,
) -> str:
    """Upload an archive as it is produced; see the module's contract. The sidecar
    carries ``final_metadata()`` (asked once every chunk is sent), else ``metadata``.
    ``stopped``: asked while the store's copy is read back and before it is named; true
    ends the upload with :class:`Interrupted`, the temporary object removed (the caller
    gave up: a backup that stopped after its last byte was sent)."""
    if destination.stat(key) is not None:
        raise DestinationError(
            f"{key} already exists at {destination.url}: an upload never replaces a backup"
        )
    temporary = f"{key}.partial-{uuid.uuid4().hex[:12]}"
    hashing = _Hashing(chunks)
    try:
        destination.put_stream(temporary, hashing, metadata=metadata, size_hint=size_hint)
        sent, stored = hashing.stats, _stored_stats(destination, temporary, stopped)
        if (stored.sha256, stored.bytes) != (sent.sha256, sent.bytes):
            raise DestinationError(
                f"the store holds {stored.bytes} bytes with SHA-256 {stored.sha256[:16]}... "
                f"where {sent.bytes} bytes with {sent.sha256[:16]}... were sent: upload not kept"
            )
        size = sent.bytes
        if stopped is not None and stopped():
            raise Interrupted(f"{key}: the upload was stopped before it was named")
        destination.copy(temporary, key)
        final = destination.stat(key)
        if final is None or final.size != size:
            raise DestinationError(f"{key}: the copy under the final name is not complete")
        marker = f"{sent.sha256}  {key.rsplit('/', 1)[-1]}\n".encode()
        described = final_metadata() if final_metadata is not None else metadata
        destination.put_stream(key + SHA_SUFFIX, [marker], metadata=described)
    finally:
        with contextlib.suppress(DestinationError):
            destination.delete(temporary)
    url = f"{destination.url.rstrip('/')}/{key}"
    logger.info("uploaded %s (%d bytes, sha256 %s)", url, size, sent.sha256)
    return url


def recorded_digest(destination: Destination, key: str) -> str | None:
    """The SHA-256 the upload recorded for ``key`` (its sidecar), if any."""
    try:
        handle = destination.open(key + SHA_SUFFIX)
    except ObjectNotFound:
        return None
    with handle:
        text = handle.read(4096).decode("ascii", "replace")
    digest = text.split()[0] if text.split() else ""
    return digest if re.fullmatch(r"[0-9a-f]{64}", digest) else None


@contextlib.contextmanager
def local_copy(
    source: str,
    identity: Path | None = None,
    endpoint_url: str | None = None,
    stdin_head: bytes = b"",
) -> Iterator[Path]:
    """``source`` (a path or URL, maybe ``.age``) as a local, decrypted archive or
    folder, with the parents of an increment beside it. Downloads and decryptions go
    to a temporary folder, removed afterwards. ``-`` is an archive read from stdin
    (:func:`~mongo_backup.location.pipe.spooled_stdin`; ``stdin_head``: what was read of
    it already)."""
    if is_stdio(source):
        with spooled_stdin(stdin_head) as spooled:
            try:
                with local_copy(str(spooled), identity, endpoint_url) as path:
                    yield path
            except ArchiveError as error:  # the temporary copy's name says nothing
                raise ArchiveError(str(error).replace(str(spooled), "stdin")) from None
        return
    if not is_url(source) and not source.endswith(AGE_SUFFIX):
        yield Path(source)  # a local archive, and its parents are beside it
        return
    if not is_url(source) and identity is None:
        raise ConfigError(f"{source} is encrypted: pass --identity FILE")
    keys = identities(identity) if identity is not None else None
    with tempfile.TemporaryDirectory(prefix="mongo-backup-fetch-") as work:
        if is_url(source):
            yield fetch_chain(source, Path(work), keys, endpoint_url)
        else:
            assert keys is not None
            yield decrypt_chain(Path(source), Path(work), keys)


def decrypt_chain(path: Path, work: Path, keys: list[Any]) -> Path:
    """A local encrypted archive decrypted into ``work``, with the (maybe encrypted)
    parents of an increment from its folder beside it."""

    def parent(backup_id: str) -> Path | None:
        found = sorted(
            p
            for p in path.parent.glob(f"{backup_id}.tar*")
            if (match := ARCHIVE_NAME.match(p.name)) and match.group(1) == backup_id
        )
        if not found:
            return None
        if not found[0].name.endswith(AGE_SUFFIX):
            plain = work / found[0].name
            plain.symlink_to(found[0].absolute())
            return plain
        plain = work / found[0].name.removesuffix(AGE_SUFFIX)
        decrypt_file(found[0], plain, keys, str(found[0]))
        return plain

    target = work / path.name.removesuffix(AGE_SUFFIX)
    decrypt_file(path, target, keys, str(path))
    return _with_parents(target, parent)


def fetch_chain(source: str, work: Path, keys: list[Any] | None, endpoint: str | None) -> Path:
    """A stored archive downloaded (and decrypted) into ``work``, with the parents of
    an increment from the same location beside it."""
    destination, key = split_url(source, endpoint_url=endpoint)

    def parent(backup_id: str) -> Path | None:
        for info in destination.list(backup_id):
            match = ARCHIVE_NAME.match(info.key)
            if match and match.group(1) == backup_id:
                return _fetch(destination, info.key, work, keys)
        return None

    return _with_parents(_fetch(destination, key, work, keys), parent)


def _with_parents(target: Path, parent: Callable[[str], Path | None]) -> Path:
    """``target``, after ``parent`` has put each ancestor of it beside it. A missing
    ancestor ends the walk: restore and verify then report the broken chain."""
    manifest = _manifest_of(target)
    seen = {target.name}
    while manifest.kind == "incremental" and manifest.parent:
        found = parent(manifest.parent["id"])
        if found is None or found.name in seen:
            break
        seen.add(found.name)
        manifest = _manifest_of(found)
    return target


def _manifest_of(path: Path) -> Manifest:
    with open_backup(path) as reader:
        return reader.manifest


def _fetch(destination: Destination, key: str, work: Path, keys: list[Any] | None) -> Path:
    """Download (checked against the recorded SHA-256) and decrypt one archive."""
    name = key.rsplit("/", 1)[-1]
    shown = f"{destination.url.rstrip('/')}/{key}"
    if destination.stat(key) is None:
        raise ArchiveError(f"{shown}: no such archive")
    expected = recorded_digest(destination, key)
    if expected is None:
        logger.warning("%s has no recorded SHA-256: its download cannot be checked", shown)
    target = work / name
    stats = StreamStats()
    with destination.open(key) as source, open(target, "wb") as out:
        for chunk in _read_chunks(source):
            stats.update(chunk)
            out.write(chunk)
    if expected is not None and stats.sha256 != expected:
        raise ArchiveError(
            f"{shown}: the stored archive is damaged (SHA-256 {stats.sha256[:16]}... "
            f"where the upload recorded {expected[:16]}...)"
        )
    if not name.endswith(AGE_SUFFIX):
        return target
    if keys is None:
        raise ConfigError(f"{shown} is encrypted: pass --identity FILE")
    plain = work / name.removesuffix(AGE_SUFFIX)
    decrypt_file(target, plain, keys, shown)
    target.unlink()
    return plain


def open_location(location: str, endpoint_url: str | None) -> Destination:
    """The destination a ``list``/``prune`` LOCATION names: a URL, or a folder (an
    ``--out-dir``: its ``backup_data`` folder, where the archives are)."""
    if not is_url(location) and (Path(location) / ARCHIVE_FOLDER).is_dir():
        location = str(Path(location) / ARCHIVE_FOLDER)
    return open_destination(location, endpoint_url=endpoint_url)
