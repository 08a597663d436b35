"""``--stream``'s upload (backup/live_archive.StreamUpload), against an in-memory
destination: it takes the archive's bytes while they are written (the upload overlaps
the export), puts the final metadata on the sidecar, and leaves nothing visible when
the backup stops or the store fails."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import pytest

from mongo_backup.backup.live_archive import StreamUpload
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
