"""``--stream``'s upload (backup/live_archive.StreamUpload), against an in-memory
destination: it takes the archive's bytes while they are written (the upload overlaps
the export), puts the final metadata on the sidecar, and leaves nothing visible when
the backup stops or the store fails."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from pyrage import x25519

from mongo_backup.backup.live_archive import StreamUpload, UploadingSender
from mongo_backup.destinations.base import ObjectInfo
from mongo_backup.destinations.memory import MemoryDestination
from mongo_backup.errors import DestinationError
from mongo_backup.location.catalog import backups_at

MiB = 1 << 20
KEY = "backup_20261205_120000.tar.zst"
PLANNED = {"mb_id": "20261205_120000", "mb_database": "shop", "mb_kind": "full"}
FINAL = {**PLANNED, "mb_failed": "1", "mb_collections": "2"}


class RecordingDestination(MemoryDestination):
    """Remembers how many chunks each upload has taken so far."""

    def __init__(self, fail_after: int | None = None) -> None:
        super().__init__()
        self.taken = 0
        self._fail_after = fail_after

    def put_stream(self, key: str, chunks: Iterable[bytes], **options: Any) -> ObjectInfo:
        def counted() -> Iterable[bytes]:
            for chunk in chunks:
                self.taken += 1
                if self._fail_after is not None and self.taken > self._fail_after:
                    raise DestinationError(f"{self.url}: the store went away")
                yield chunk

        return super().put_stream(key, counted(), **options)


def wait_for(condition: Any, what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_the_upload_takes_the_bytes_while_they_are_written() -> None:
    store = RecordingDestination()
    upload = StreamUpload(store, KEY, PLANNED, 10 * MiB)
    pieces = [bytes([n]) * MiB for n in range(3)]
    for piece in pieces:
        upload.write(piece)
    # Before the end: the upload has the first chunks already.
    wait_for(lambda: store.taken >= 2, "the upload took nothing before the archive's end")
    upload.write(b"tail")
    url = upload.finish(FINAL)
    assert url == f"{store.url}/{KEY}"
    with store.open(KEY) as handle:
        assert handle.read() == b"".join(pieces) + b"tail"
    archive, sidecar = store.stat(KEY), store.stat(KEY + ".sha256")
    assert archive is not None and sidecar is not None
    assert archive.metadata == PLANNED  # what the plan knew when the upload began
    assert sidecar.metadata == FINAL  # what the manifest said at the end
    [listed] = backups_at(store)
    assert listed.status == "1 collection(s) failed" and listed.collections == 2


def test_an_aborted_upload_leaves_nothing() -> None:
    store = RecordingDestination()
    upload = StreamUpload(store, KEY, PLANNED, 10 * MiB)
    upload.write(b"x" * (2 * MiB))
    wait_for(lambda: store.taken >= 1, "the upload never began")
    upload.abort()
    assert store.list() == []


def test_a_store_that_fails_is_the_error_the_writer_sees() -> None:
    store = RecordingDestination(fail_after=1)
    upload = StreamUpload(store, KEY, PLANNED, 10 * MiB)
    with pytest.raises(DestinationError, match="the store went away"):
        for _ in range(100):  # the queue holds a few chunks before the failure shows
            upload.write(b"y" * MiB)
    with pytest.raises(DestinationError, match="the store went away"):
        upload.finish(FINAL)
    assert store.list() == []


def test_a_taken_name_fails_before_anything_is_sent() -> None:
    store = RecordingDestination()
    store.put_stream(KEY, [b"someone else's"])
    store.taken = 0
    upload = StreamUpload(store, KEY, PLANNED, 10 * MiB)
    with pytest.raises(DestinationError, match="already exists"):
        for _ in range(100):
            upload.write(b"z" * MiB)
    assert store.taken == 0
    with store.open(KEY) as handle:
        assert handle.read() == b"someone else's"


class SlowDestination(RecordingDestination):
    """A store that takes ``pause`` seconds before each chunk it reads back (and, with
    ``stall``, before it takes the first chunk of an upload)."""

    def __init__(self, pause: float = 0.0, stall: float = 0.0) -> None:
        super().__init__()
        self._pause, self._stall = pause, stall

    def put_stream(self, key: str, chunks: Iterable[bytes], **options: Any) -> ObjectInfo:
        time.sleep(self._stall)
        return super().put_stream(key, chunks, **options)

    def open(self, key: str) -> Any:
        inner, pause = super().open(key), self._pause

        class Slow:
            def read(self, size: int = -1) -> bytes:
                time.sleep(pause)
                return inner.read(min(size, 256 * 1024) if size > 0 else 256 * 1024)

            def __enter__(self) -> Slow:
                return self

            def __exit__(self, *exc: object) -> None:
                inner.close()

        return Slow()


def test_an_abort_while_the_copy_is_read_back_leaves_nothing() -> None:
    # Ctrl-C after the archive's last byte: the upload is reading the store's copy back.
    store = SlowDestination(pause=0.05)
    upload = StreamUpload(store, KEY, PLANNED, 10 * MiB)
    upload.write(b"r" * (3 * MiB))
    finished: list[Any] = []
    ender = threading.Thread(target=lambda: finished.append(_outcome(upload.finish, FINAL)))
    ender.start()
    wait_for(lambda: any(".partial-" in o.key for o in store.list()), "nothing was sent")
    started = time.monotonic()
    upload.abort()
    assert time.monotonic() - started < 3
    ender.join(10)
    assert store.list() == []  # no temporary object, no archive, no sidecar
    assert isinstance(finished[0], BaseException)


def test_an_abort_with_a_full_queue_and_a_stalled_store_returns_at_once() -> None:
    store = SlowDestination(stall=1.0)
    upload = StreamUpload(store, KEY, PLANNED, 10 * MiB)
    writer = threading.Thread(target=lambda: _outcome(upload.write, b"f" * (12 * MiB)))
    writer.start()  # fills the queue and waits on it
    time.sleep(0.3)
    started = time.monotonic()
    upload.abort()
    writer.join(5)
    assert not writer.is_alive()
    wait_for(lambda: not upload._thread.is_alive(), "the upload's thread never ended")
    assert time.monotonic() - started < 5
    assert store.list() == []


def test_an_encrypted_upload_tells_the_store_s_error(tmp_path: Path) -> None:
    # age between the sender and the upload wraps what the upload raises in its own
    # error: the sender tells the store's.
    store = RecordingDestination()
    store.put_stream(KEY, [b"taken"])
    upload = StreamUpload(store, KEY, PLANNED, 10 * MiB)
    recipient = x25519.Identity.generate().to_public()
    sender = UploadingSender(upload, tmp_path, "zstd", [recipient], b'{"plan": 1}')
    told: list[BaseException] = []
    sender.on_failure = told.append  # the export's abandon
    wait_for(lambda: upload.failure is not None, "the taken name was not refused")
    with pytest.raises(DestinationError, match="already exists"):
        sender.finish(b'{"manifest": 1}')  # written through age after the refusal
    assert isinstance(sender.failure, DestinationError)
    assert told and all(isinstance(error, DestinationError) for error in told)
    sender.abort()


def _outcome(call: Any, *args: Any) -> Any:
    try:
        return call(*args)
    except BaseException as error:
        return error
