"""Object stores through obstore: ``s3://bucket/prefix``, ``gs://bucket/prefix``,
``az://container/prefix``.

Credentials, region and account come from the environment, read by obstore
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_REGION``, ``GOOGLE_*``,
``AZURE_STORAGE_ACCOUNT_NAME``/``AZURE_*``), never from the URL: a URL with user
information is refused, so that no secret can reach ``url``, a log line or the
manifest. ``endpoint_url`` points at an S3-compatible server (MinIO, Ceph, moto), a GCS
or an Azure emulator; plain ``http://`` is accepted for loopback endpoints only, unless
``StoreSettings.allow_http`` says otherwise. Building a destination makes no request.

Contracts, beyond those of :class:`~.base.Destination`:
- Atomic visibility is the stores' own: a single PUT, or a multipart upload that only
  becomes an object when completed. A stream that fits in its first part goes up in
  one PUT. The upload of a stream whose iterator raises is aborted; if the
  abort itself fails (the server is gone), the upload stays pending, invisible, until a
  lifecycle rule removes it (configure one: AbortIncompleteMultipartUpload on S3).
- Metadata is the stores' user metadata (``x-amz-meta-*``, ``x-goog-meta-*``,
  ``x-ms-meta-*``), sent with the object, so it is there exactly when the object is.
- Retries, two levels. Each HTTP request (a PUT, a part, a ranged GET) is retried by
  obstore on 5xx, connection failures and timeouts, ``request_retries`` times, backing
  off from ``retry.base_delay`` to ``retry.max_delay``. A whole operation that can be
  repeated (every one but ``put_stream``, whose iterator cannot be replayed) is then
  tried again, up to ``retry.retries`` times with ``RetryPolicy.delay``, when it still
  failed transiently. Permanent failures (404, 403, 401) are raised at once.
- ``open`` reads in ranged GETs of ``read_buffer`` bytes, so no single request has to
  outlive ``request_timeout`` however large the object.

What obstore cannot do, and what is done instead:
- Parts of growing size. obstore 0.12 uploads in parts of one fixed size (``put`` and
  ``open_writer`` alike), so parts cannot grow as the stream does (8 MiB, doubling
  every 1,000 parts). The size is fixed up front by :func:`~.base.part_size_for` from
  ``size_hint`` (an upper bound the caller knows, such as the database's data size);
  without a hint, 8 MiB parts hold up to 78 GiB, and a longer stream is stopped, and
  its upload aborted, with a message asking for a hint, before the store would refuse
  part 10,001. Memory stays at about ``max_concurrency + 1`` parts.
- Calling the caller's iterator. ``obstore.put(iterable)`` calls the iterator from
  inside obstore's runtime, where any obstore call the iterator makes (reading another
  object, as a copy between stores does) panics. Streams are written through
  ``open_writer`` instead, chunk by chunk from this thread (see :mod:`.storeio`).
- Listing by string prefix. obstore lists by path segment ("a" finds "a/x", not "ab"),
  so ``list`` asks for the prefix's folder and filters.
- Folder markers. obstore drops the trailing "/" of a key, so a zero-byte "folder/"
  object that a console created lists as an object "folder" (which stat() then does
  not find). Nothing this tool writes has such a key.
- Copying more than 5 GiB on S3. obstore copies with one CopyObject request, which S3
  refuses above 5 GiB; larger objects are copied by streaming them through this
  process (read + multipart upload, metadata included).
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, TypeVar

import obstore

from ..errors import DestinationError, InvalidKey, ObjectNotFound
from ..retry import RetryPolicy
from .base import (
    FIRST_PART_SIZE,
    MAX_PARTS,
    ObjectInfo,
    check_key,
    check_metadata,
    check_prefix,
    is_hidden,
    part_size_for,
)
from .storeerrors import describe, environment_secrets, with_retries
from .storeio import RangedReader, StoreFailed, TooLarge, Upload

if TYPE_CHECKING:
    from obstore.store import ObjectStore

logger = logging.getLogger(__name__)

T = TypeVar("T")

# obstore's standard attributes; every other attribute is user metadata.
_STANDARD_ATTRIBUTES = frozenset(
    {
        "Content-Disposition",
        "Content-Encoding",
        "Content-Language",
        "Content-Type",
        "Cache-Control",
        "Storage-Class",
    }
)
S3_COPY_LIMIT = 5 * 1024**3  # CopyObject refuses larger sources


@dataclass(frozen=True)
class StoreSettings:
    """How object stores are talked to. Times in seconds, sizes in bytes."""

    part_size: int = FIRST_PART_SIZE  # the first (smallest) multipart part
    max_concurrency: int = 2  # parts in flight at once; memory is about this + 1 parts
    connect_timeout: float = 10.0
    request_timeout: float = 300.0  # one whole request, such as one part's upload
    request_retries: int = 3  # obstore's retries of one request
    retry_timeout: float = 180.0  # obstore gives up on one request after this long
    retry: RetryPolicy = field(default_factory=RetryPolicy)  # retries of whole operations
    read_buffer: int = 8 * 1024 * 1024  # bytes per ranged GET in open()
    allow_http: bool = False  # plain http to a non-loopback endpoint


class ObjectStoreDestination:
    """One bucket (or container) and prefix of an object store (see the module
    docstring). Build it with :func:`.storeopen.open_object_store`."""

    def __init__(
        self,
        store: ObjectStore,
        url: str,
        *,
        settings: StoreSettings | None = None,
        endpoint: str | None = None,
    ) -> None:
        self._store = store
        self._url = url
        self._scheme = url.split("://", 1)[0]
        self._endpoint = endpoint
        self.settings = settings or StoreSettings()

    @property
    def url(self) -> str:
        return self._url

    def __repr__(self) -> str:
        endpoint = f", endpoint={self._endpoint!r}" if self._endpoint else ""
        return f"ObjectStoreDestination({self._url!r}{endpoint})"

    # -- writing -------------------------------------------------------------------

    def put_file(
        self, key: str, path: Path, *, metadata: dict[str, str] | None = None
    ) -> ObjectInfo:
        check_key(key)
        meta = check_metadata(metadata)
        try:
            size = Path(path).stat().st_size
        except OSError as error:
            raise DestinationError(f"cannot read {path}: {error.strerror or error}") from error
        part = part_size_for(size, self.settings.part_size)
        self._check_fits(key, size, part)
        self._run(
            "write",
            key,
            lambda: self._store.put(
                key,
                Path(path),
                attributes=dict(meta) or None,
                use_multipart=size > part,
                chunk_size=part,
                max_concurrency=self.settings.max_concurrency,
            ),
        )
        return self._stored(key, size, meta)

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
        part = part_size_for(size_hint, self.settings.part_size)
        source = iter(chunks)
        # The first part is gathered here. A stream that ends within it (a manifest, a
        # small archive) goes up in one PUT, which can be retried as it is in memory;
        # an empty stream never meets a store that refuses an upload without parts.
        head: list[bytes] = []
        gathered = 0
        for chunk in source:  # the caller's exceptions pass: nothing is written yet
            head.append(bytes(chunk))
            gathered += len(chunk)
            if gathered >= part:
                break
        else:
            return self._put_whole(key, b"".join(head), meta)
        # The upload is driven from here, chunk by chunk, through obstore's writable
        # file, rather than by handing obstore the iterator: obstore would call the
        # iterator from inside its own runtime, where any obstore call the iterator
        # makes (reading another object, as a copy does) aborts with a panic.
        writer = obstore.open_writer(
            self._store,
            key,
            attributes=dict(meta) or None,
            buffer_size=part,
            max_concurrency=self.settings.max_concurrency,
        )
        upload = Upload(writer, limit=part * MAX_PARTS)
        try:
            for chunk in head:
                upload.send(chunk)
            head.clear()  # sent: no longer held here
            for chunk in source:
                upload.send(bytes(chunk))
            upload.finish()
        except BaseException as error:
            # Whatever happened, the upload must not become an object: abort it. (When
            # finish() itself failed, obstore has spent the writer, and the abort can
            # only report so.)
            self._abort(upload, key, error)
            if isinstance(error, TooLarge):
                raise DestinationError(
                    f"{self._url}: cannot write {key!r}: the stream passed {upload.limit} "
                    f"bytes, all that {MAX_PARTS} parts of {part} bytes hold; "
                    "give a size hint of at least its size"
                ) from None
            if isinstance(error, StoreFailed):
                raise self._error("write", key, error.cause) from None
            raise  # the caller's own exception (or Ctrl-C), unchanged
        return self._stored(key, upload.size, meta)

    def copy(self, source_key: str, target_key: str) -> None:
        check_key(source_key)
        check_key(target_key)
        if source_key == target_key or self._scheme == "s3":
            info = self.stat(source_key)
            if info is None:
                raise ObjectNotFound(f"{self._url}: no object {source_key!r} to copy")
            if source_key == target_key:
                return  # S3 refuses a copy onto itself; it would change nothing anyway
            if info.size > S3_COPY_LIMIT:
                self._copy_through(source_key, target_key, info)
                return
        try:
            self._run("copy", source_key, lambda: self._store.copy(source_key, target_key))
        except ObjectNotFound:
            raise ObjectNotFound(f"{self._url}: no object {source_key!r} to copy") from None

    def delete(self, key: str) -> None:
        check_key(key)
        # GCS and Azure report a missing object; S3 does not.
        with contextlib.suppress(ObjectNotFound):
            self._run("delete", key, lambda: self._store.delete(key))

    # -- reading -------------------------------------------------------------------

    def open(self, key: str) -> BinaryIO:
        check_key(key)
        reader = self._run(
            "read",
            key,
            lambda: obstore.open_reader(self._store, key, buffer_size=self.settings.read_buffer),
        )
        raw = RangedReader(reader, lambda error: self._error("read", key, error))
        return io.BufferedReader(raw, buffer_size=1024 * 1024)

    def stat(self, key: str) -> ObjectInfo | None:
        check_key(key)
        try:
            # A GET without a body: HEAD's reply in obstore lacks the user metadata.
            result = self._run("read", key, lambda: self._store.get(key, options={"head": True}))
        except ObjectNotFound:
            return None
        meta = result.meta
        metadata = {
            name.lower(): value
            for name, value in result.attributes.items()
            if name not in _STANDARD_ATTRIBUTES
        }
        return ObjectInfo(key, meta["size"], meta["last_modified"], metadata)

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        check_prefix(prefix)
        folder = prefix.rpartition("/")[0]

        def listing() -> list[ObjectInfo]:
            found = []
            for batch in self._store.list(prefix=folder or None):
                for meta in batch:
                    key = meta["path"]
                    if key.startswith(prefix) and not is_hidden(key) and _is_key(key):
                        found.append(ObjectInfo(key, meta["size"], meta["last_modified"]))
            return found

        return sorted(self._run("list", prefix or "/", listing), key=lambda info: info.key)

    # -- helpers -------------------------------------------------------------------

    def _run(self, action: str, key: str, call: Callable[[], T]) -> T:
        """``call()`` with retries; failures become DestinationError (ObjectNotFound for
        a missing object)."""
        try:
            return with_retries(
                call, policy=self.settings.retry, what=f"{self._url}: {action} {key!r}"
            )
        except FileNotFoundError as error:
            if action in ("write", "list"):
                # A 404 on a write or a listing is the bucket's (NoSuchBucket).
                raise self._error(action, key, error) from None
            raise ObjectNotFound(f"{self._url}: no object {key!r}") from error
        except Exception as error:
            raise self._error(action, key, error) from None

    def _error(self, action: str, key: str, error: BaseException) -> DestinationError:
        if isinstance(error, DestinationError):
            return error
        reason = describe(error, environment_secrets())
        return DestinationError(f"{self._url}: cannot {action} {key!r}: {reason}")

    def _abort(self, upload: Upload, key: str, error: BaseException) -> None:
        try:
            # WritableFile's only way to abort: leaving its context with an exception.
            upload.writer.__exit__(type(error), error, error.__traceback__)
        except Exception as failure:
            # Either the store is out of reach, or the completion itself failed (the
            # writer is then spent: "already closed") and obstore offers no abort for
            # it. Both leave an upload that is pending, invisible, never an object.
            logger.warning(
                "%s: the upload of %r could not be aborted (%s); it stays invisible "
                "until the bucket's lifecycle rule removes it",
                self._url,
                key,
                describe(failure, environment_secrets()),
            )

    def _put_whole(self, key: str, data: bytes, metadata: dict[str, str]) -> ObjectInfo:
        self._run(
            "write",
            key,
            lambda: self._store.put(
                key, data, attributes=dict(metadata) or None, use_multipart=False
            ),
        )
        return self._stored(key, len(data), metadata)

    def _stored(self, key: str, size: int, metadata: dict[str, str]) -> ObjectInfo:
        """The ObjectInfo of a put, checked against the store: a size that differs from
        what was sent means the upload went wrong somewhere."""
        info = self._run("check", key, lambda: self._store.head(key))
        if info["size"] != size:
            raise DestinationError(
                f"{self._url}: {key!r} holds {info['size']} bytes after {size} were sent"
            )
        return ObjectInfo(key, size, info["last_modified"], dict(metadata))

    def _check_fits(self, key: str, size: int, part: int) -> None:
        if size > part * MAX_PARTS:
            raise DestinationError(
                f"{self._url}: cannot write {key!r}: {size} bytes exceed {MAX_PARTS} "
                f"parts of {part} bytes"
            )

    def _copy_through(self, source_key: str, target_key: str, info: ObjectInfo) -> None:
        part = part_size_for(info.size, self.settings.part_size)
        with self.open(source_key) as reader:
            self.put_stream(
                target_key,
                iter(lambda: reader.read(part), b""),
                metadata=info.metadata,
                size_hint=info.size,
            )


def _is_key(key: str) -> bool:
    try:
        check_key(key)
    except InvalidKey:
        return False  # a "folder/" marker, or a name written by another tool
    return True
