"""Backups kept at a location (a folder or an object store): verified uploads, fetching
them back, and what a listing shows of them.

Uploading (:func:`upload_file`, :func:`upload_stream`) never leaves a short or damaged
object under an archive's name: the bytes go under a temporary key, what the store then
holds is read back and its size and SHA-256 compared with what was sent, and only then is
it copied to the final key, followed by a ``KEY.sha256`` sidecar in ``sha256sum`` format
(the completion marker: ``sha256sum -c`` checks a downloaded archive with it). The
archive's own metadata (database, kind, parent, ...) rides on the object, so ``list`` and
``prune`` need no download, even of an encrypted archive.

Fetching (:func:`fetch_chain`) downloads an archive (and, for an increment, its parents)
into a working folder, checking each against its recorded SHA-256, and decrypts ``.age``
archives with the given identities.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from .archive import open_backup
from .destinations import Destination, DestinationError, is_url, open_destination
from .destinations import split_archive_url as split_url
from .encryption import SUFFIX as AGE_SUFFIX
from .encryption import decrypt_file, identities
from .errors import ArchiveError, ConfigError
from .manifest import Manifest

logger = logging.getLogger(__name__)

ARCHIVE_NAME = re.compile(r"^(backup_\d{8}_\d{6}(?:_\d+)?)\.tar(?:\.gz|\.zst)?(?:\.age)?$")
SHA_SUFFIX = ".sha256"
_CHUNK = 1 << 20


def metadata_for(manifest: Manifest, encrypted: bool) -> dict[str, str]:
    """What a listing shows of an archive without opening it (values percent-encoded:
    stores keep printable ASCII only)."""
    data = {
        "mb_id": manifest.backup_id or "",
        "mb_database": quote(manifest.database, safe=""),
        "mb_kind": manifest.kind,
        "mb_parent": (manifest.parent or {}).get("id", ""),
        "mb_started": manifest.started_at,
        "mb_collections": str(sum(e.type != "changes" for e in manifest.collections)),
        "mb_failed": str(len(manifest.failed)),
        "mb_consistency": manifest.consistency,
        "mb_encrypted": "yes" if encrypted else "no",
    }
    return {key: value for key, value in data.items() if value}


class _Hashing:
    """Chunks passed on while their SHA-256 and size are taken."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = chunks
        self.digest = hashlib.sha256()
        self.size = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            self.digest.update(chunk)
            self.size += len(chunk)
            yield chunk


def _file_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            yield chunk


def _stored_digest(destination: Destination, key: str) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with destination.open(key) as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def upload_file(destination: Destination, path: Path, key: str, metadata: dict[str, str]) -> str:
    """Upload a finished archive file; see the module's contract. Returns its URL."""
    return upload_stream(destination, _file_chunks(path), key, metadata, path.stat().st_size)


def upload_stream(
    destination: Destination,
    chunks: Iterable[bytes],
    key: str,
    metadata: dict[str, str],
    size_hint: int | None = None,
) -> str:
    """Upload an archive as it is produced; see the module's contract."""
    temporary = f"{key}.partial-{uuid.uuid4().hex[:12]}"
    hashing = _Hashing(chunks)
    try:
        destination.put_stream(temporary, hashing, metadata=metadata, size_hint=size_hint)
        sent = hashing.digest.hexdigest()
        stored, size = _stored_digest(destination, temporary)
        if (stored, size) != (sent, hashing.size):
            raise DestinationError(
                f"the store holds {size} bytes with SHA-256 {stored[:16]}... where "
                f"{hashing.size} bytes with {sent[:16]}... were sent: upload not kept"
            )
        destination.copy(temporary, key)
        final = destination.stat(key)
        if final is None or final.size != size:
            raise DestinationError(f"{key}: the copy under the final name is not complete")
        marker = f"{sent}  {key.rsplit('/', 1)[-1]}\n".encode()
        destination.put_stream(key + SHA_SUFFIX, [marker])
    finally:
        with contextlib.suppress(DestinationError):
            destination.delete(temporary)
    url = f"{destination.url.rstrip('/')}/{key}"
    logger.info("uploaded %s (%d bytes, sha256 %s)", url, size, sent)
    return url


def recorded_digest(destination: Destination, key: str) -> str | None:
    """The SHA-256 the upload recorded for ``key`` (its sidecar), if any."""
    if destination.stat(key + SHA_SUFFIX) is None:
        return None
    with destination.open(key + SHA_SUFFIX) as handle:
        text = handle.read(4096).decode("ascii", "replace")
    digest = text.split()[0] if text.split() else ""
    return digest if re.fullmatch(r"[0-9a-f]{64}", digest) else None


@contextlib.contextmanager
def local_copy(
    source: str, identity: Path | None = None, endpoint_url: str | None = None
) -> Iterator[Path]:
    """``source`` (a path or URL, maybe ``.age``) as a local, decrypted archive or
    folder, with the parents of an increment beside it. Downloads and decryptions go
    to a temporary folder, removed afterwards."""
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
    target = work / path.name.removesuffix(AGE_SUFFIX)
    decrypt_file(path, target, keys, str(path))
    manifest = _manifest_of(target)
    seen = {target.name}
    while manifest.kind == "incremental" and manifest.parent:
        parent = manifest.parent["id"]
        found = sorted(p for p in path.parent.glob(f"{parent}.tar*") if ARCHIVE_NAME.match(p.name))
        if not found or found[0].name in seen:
            break  # restore and verify report the broken chain
        seen.add(found[0].name)
        if found[0].name.endswith(AGE_SUFFIX):
            plain = work / found[0].name.removesuffix(AGE_SUFFIX)
            decrypt_file(found[0], plain, keys, str(found[0]))
        else:
            plain = work / found[0].name
            plain.symlink_to(found[0].absolute())
        manifest = _manifest_of(plain)
    return target


def fetch_chain(source: str, work: Path, keys: list[Any] | None, endpoint: str | None) -> Path:
    destination, key = split_url(source, endpoint_url=endpoint)
    target = _fetch(destination, key, work, keys)
    manifest = _manifest_of(target)
    names = {path.name for path in work.iterdir()}
    while manifest.kind == "incremental" and manifest.parent:
        parent = manifest.parent["id"]
        found = [
            info.key
            for info in destination.list(parent)
            if (match := ARCHIVE_NAME.match(info.key)) and match.group(1) == parent
        ]
        if not found:
            break  # restore and verify report the broken chain
        fetched = _fetch(destination, found[0], work, keys)
        if fetched.name in names:
            break
        names.add(fetched.name)
        manifest = _manifest_of(fetched)
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
    digest = hashlib.sha256()
    with destination.open(key) as source, open(target, "wb") as out:
        _copy(source, out, digest)
    if expected is not None and digest.hexdigest() != expected:
        raise ArchiveError(
            f"{shown}: the stored archive is damaged (SHA-256 {digest.hexdigest()[:16]}... "
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


def _copy(source: IO[bytes], out: IO[bytes], digest: Any) -> None:
    while chunk := source.read(_CHUNK):
        digest.update(chunk)
        out.write(chunk)


def open_location(location: str, endpoint_url: str | None) -> Destination:
    """The destination a ``list``/``prune`` LOCATION names: a URL, or a folder (an
    ``--out-dir``: its ``backup_data`` folder, where the archives are)."""
    if not is_url(location) and (Path(location) / "backup_data").is_dir():
        location = str(Path(location) / "backup_data")
    return open_destination(location, endpoint_url=endpoint_url)
