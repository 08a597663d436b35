"""Delivering a finished backup: encryption (``--encrypt-to``) and the upload to a
destination (``--dest``), from the archive file or, with ``--stream``, straight from the
working folder's compressed members (no archive file is written).

The archive's tar bytes come from :func:`~mongo_backup.archive.writer.write_tar`, run on a
producer thread that writes into a bounded queue; age encryption runs on a second thread
between the two; the upload reads the queue. At most :data:`QUEUE_CHUNKS` chunks of
:data:`CHUNK` bytes wait between them, so memory stays flat whatever the size.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pyrage

from ..archive.encryption import SUFFIX as AGE_SUFFIX
from ..archive.encryption import encrypt_file
from ..archive.manifest import Manifest
from ..archive.tar_stream import compressed_name
from ..archive.writer import SUFFIXES, framed, write_tar
from ..destinations import Destination, open_destination
from ..location.transfer import metadata_for, upload_file, upload_stream

logger = logging.getLogger(__name__)

CHUNK = 1 << 20
QUEUE_CHUNKS = 8
_END = object()


def deliver_file(
    archive: Path,
    manifest: Manifest,
    *,
    dest: str | None,
    endpoint_url: str | None,
    recipients: list[Any],
    keep_local: bool,
) -> tuple[Path | None, str | None]:
    """Encrypt and/or upload a written archive: (the local file left, the URL)."""
    path = archive
    if recipients:
        encrypted = archive.with_name(archive.name + AGE_SUFFIX)
        encrypt_file(archive, encrypted, recipients)
        archive.unlink()
        path = encrypted
        logger.info("encrypted to %d recipient(s): %s", len(recipients), path)
    if dest is None:
        return path, None
    destination = open_destination(dest, endpoint_url=endpoint_url)
    url = upload_file(destination, path, path.name, metadata_for(manifest, bool(recipients)))
    if keep_local:
        return path, url
    path.unlink()
    return None, url


def deliver_stream(
    folder: Path,
    members: list[tuple[str, int]],
    manifest: Manifest,
    *,
    compression: str,
    dest: str,
    endpoint_url: str | None,
    recipients: list[Any],
) -> str:
    """Upload the archive as it is assembled from ``folder``; returns its URL."""
    destination: Destination = open_destination(dest, endpoint_url=endpoint_url)
    name = f"{folder.name}{SUFFIXES[compression]}" + (AGE_SUFFIX if recipients else "")
    size_hint = sum(_size_on_disk(folder, file, compression) for file, _ in members) + (1 << 20)

    produce = _producer(folder, members, compression, recipients)
    metadata = metadata_for(manifest, bool(recipients))
    return upload_stream(destination, _produced(produce), name, metadata, size_hint)


def _producer(
    folder: Path, members: list[tuple[str, int]], compression: str, recipients: list[Any]
) -> Callable[[IO[bytes]], None]:
    """What writes the archive assembled from ``folder`` into a file object, encrypted
    when there are ``recipients``."""

    def tar(out: IO[bytes]) -> None:
        with framed(out, compression) as (target, framing):
            write_tar(folder, members, target, framing)

    return encrypting(tar, recipients) if recipients else tar


def _size_on_disk(folder: Path, file: str, compression: str) -> int:
    path = folder / (compressed_name(file) if compression == "zstd" else file)
    try:
        return path.stat().st_size
    except OSError:
        return 0


class _QueueWriter:
    """A write-only file object that hands CHUNK-sized pieces to a bounded queue."""

    def __init__(self, chunks: queue.Queue[object], stop: threading.Event) -> None:
        self._chunks = chunks
        self._stop = stop
        self._buffer = bytearray()
        self.closed = False

    def write(self, data: bytes) -> int:
        self._buffer += data
        while len(self._buffer) >= CHUNK:
            self._put(bytes(self._buffer[:CHUNK]))
            del self._buffer[:CHUNK]
        return len(data)

    def _put(self, chunk: bytes) -> None:
        while True:
            if self._stop.is_set():  # the upload gave up: stop producing
                raise OSError("the upload stopped")
            try:
                self._chunks.put(chunk, timeout=0.1)
                return
            except queue.Full:
                continue

    def flush(self) -> None:
        pass

    def finish(self) -> None:
        if self._buffer:
            self._put(bytes(self._buffer))
            self._buffer.clear()


def _produced(produce: Callable[[IO[bytes]], None]) -> Iterator[bytes]:
    """The bytes ``produce`` writes, as an iterator; its exception is re-raised here."""
    chunks: queue.Queue[object] = queue.Queue(QUEUE_CHUNKS)
    failure: list[BaseException] = []
    stop = threading.Event()

    def run() -> None:
        writer = _QueueWriter(chunks, stop)
        try:
            produce(writer)  # type: ignore[arg-type]
            writer.finish()
        except BaseException as error:
            failure.append(error)
        finally:
            while not stop.is_set():
                try:
                    chunks.put(_END, timeout=0.1)
                    break
                except queue.Full:
                    continue

    thread = threading.Thread(target=run, name="archive-producer", daemon=True)
    thread.start()
    try:
        while (chunk := chunks.get()) is not _END:
            yield chunk  # type: ignore[misc]
    finally:
        stop.set()
        while thread.is_alive():  # a producer waiting on a full queue sees the stop
            with contextlib.suppress(queue.Empty):
                chunks.get_nowait()
            thread.join(0.05)
    if failure:
        raise failure[0]


def encrypting(
    produce: Callable[[IO[bytes]], None], recipients: list[Any]
) -> Callable[[IO[bytes]], None]:
    """``produce``, its output encrypted with age on the way (through a pipe)."""

    def encrypted(out: IO[bytes]) -> None:
        read_end, write_end = os.pipe()
        failure: list[BaseException] = []

        def feed() -> None:
            with os.fdopen(write_end, "wb") as pipe:
                try:
                    produce(pipe)
                except BaseException as error:
                    failure.append(error)

        feeder = threading.Thread(target=feed, name="archive-plain", daemon=True)
        feeder.start()
        with os.fdopen(read_end, "rb") as pipe:
            pyrage.encrypt_io(pipe, out, recipients)
        feeder.join()
        if failure:
            raise failure[0]

    return encrypted
