"""An archive sent while the backup runs: down a pipe (``--archive -``) or up to a
destination (``--stream --dest URL``).

Both go out in the streamed form (:mod:`mongo_backup.archive.streamed`), written by a
:class:`~mongo_backup.backup.pipe_sender.PipeSender`: the plan first, each collection's
member as soon as it is exported, the manifest last. For a pipe the sender writes to
stdout; for ``--stream`` into a :class:`StreamUpload`, whose thread uploads what arrives
(:func:`~mongo_backup.location.transfer.upload_stream`: a temporary key, read back and
checked, copied under its name, the ``.sha256`` sidecar last). So the upload overlaps the
export instead of following it, and no archive file is written.

A multipart upload takes its object's metadata when it begins, before the backup knows
how it ends: the archive object carries what the plan knows, and the sidecar, written
once the manifest is sent, carries the final metadata (failed collections, the window
covered), which ``list`` reads first (:mod:`mongo_backup.location.catalog`).

Contract of :class:`StreamUpload`: ``write`` (from the sender's thread) raises the
upload's own error once it has failed; :meth:`~StreamUpload.finish` ends the stream,
waits for the upload and returns its URL or raises its error; :meth:`~StreamUpload.abort`
ends it without an end, which the upload turns into nothing visible at the destination.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, cast

from ..archive import encryption
from ..archive.encryption import SUFFIX as AGE_SUFFIX
from ..archive.manifest import CollectionEntry, Manifest, manifest_bytes
from ..destinations import Destination, open_destination
from ..errors import ArchiveError, DestinationError, MongoBackupError
from ..location.transfer import metadata_for, upload_stream
from ..names import SUFFIXES
from .checkpoint import Plan
from .manifest_builder import plan_manifest
from .options import BackupOptions
from .pipe_sender import PipeSender

logger = logging.getLogger(__name__)

CHUNK = 1 << 20
QUEUE_CHUNKS = 8
_END = object()
_ABORT_WAIT = 5.0  # seconds: an upload stuck in the network cannot hold a failed backup


class StreamUpload:
    """A file object whose bytes go up to ``key`` at ``destination`` as they come, in
    :data:`CHUNK`-sized pieces through a queue of at most :data:`QUEUE_CHUNKS`: memory
    stays flat whatever the size."""

    def __init__(
        self, destination: Destination, key: str, metadata: dict[str, str], size_hint: int
    ) -> None:
        self._chunks: queue.Queue[object] = queue.Queue(QUEUE_CHUNKS)
        self._buffer = bytearray()
        self._stop = threading.Event()  # set by abort(), or by the upload when it fails
        self._aborted = False
        self._final: dict[str, str] | None = None
        self.url: str | None = None
        self.failure: BaseException | None = None
        # Told of the upload's own failure at once, from its thread (the export stops at
        # its next batch: a store refusing the name at the start costs no export).
        self.on_failure: Callable[[BaseException], None] | None = None
        self._thread = threading.Thread(
            target=self._run,
            args=(destination, key, metadata, size_hint),
            name="archive-upload",
            daemon=True,
        )
        self._thread.start()

    def write(self, data: bytes) -> int:
        """Raises the upload's own error once it has stopped."""
        if self.failure is not None:
            raise self.failure
        self._buffer += data
        while len(self._buffer) >= CHUNK:
            if not self._put(bytes(self._buffer[:CHUNK])):
                raise self.failure or OSError("the upload stopped")
            del self._buffer[:CHUNK]
        return len(data)

    def flush(self) -> None:
        pass  # whole chunks go up; the rest with the next write or at the end

    def finish(self, final_metadata: dict[str, str]) -> str:
        """End the archive; wait for the upload to be checked and named; its URL."""
        self._final = final_metadata
        if not self._buffer or self._put(bytes(self._buffer)):
            self._put(_END)  # else the upload stopped: its error is raised below
        while self._thread.is_alive():
            self._thread.join(0.2)  # short waits: Ctrl-C reaches the main thread
        if self.failure is not None:
            raise self.failure
        if self.url is None:
            raise ArchiveError("the upload was stopped before the archive's end")
        return self.url

    def abort(self) -> None:
        """Stop without an end: the upload keeps nothing. Its thread notices within a
        chunk, whatever it is doing (sending, reading the store's copy back), and removes
        what it wrote before it goes; never waits on a full queue."""
        self._aborted = True
        self._stop.set()
        self._thread.join(_ABORT_WAIT)

    def _put(self, item: object) -> bool:
        """``item`` into the queue once there is room; False if the upload stopped."""
        while not self._stop.is_set():
            with contextlib.suppress(queue.Full):
                self._chunks.put(item, timeout=0.1)
                return True
        return False

    def _received(self) -> Iterator[bytes]:
        while True:
            if self._stop.is_set():
                raise ArchiveError("the backup stopped before the archive's end")
            try:
                item = self._chunks.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is _END:
                return
            yield item  # type: ignore[misc]

    def _run(self, destination: Destination, key: str, meta: dict[str, str], hint: int) -> None:
        try:
            self.url = upload_stream(
                destination,
                self._received(),
                key,
                meta,
                hint,
                final_metadata=lambda: self._final or meta,
                stopped=lambda: self._aborted,
            )
        except BaseException as error:
            self.failure = error
            self._stop.set()  # the sender's next write raises it
            if self.on_failure is not None and not self._aborted:
                self.on_failure(error)


class UploadingSender(PipeSender):
    """The streamed archive, uploaded as it is sent (``--stream --dest``). Its failure
    is the upload's own error where there is one (age, between the two, would wrap it
    in its own)."""

    def __init__(
        self, upload: StreamUpload, folder: Path, compression: str, recipients: list[Any],
        plan: bytes,
    ) -> None:  # fmt: skip
        self.upload = upload
        super().__init__(folder, compression, recipients, plan, out=cast(IO[bytes], upload))
        upload.on_failure = self._upload_failed
        if upload.failure is not None:  # it failed before it could be told (twice: harmless)
            self._upload_failed(upload.failure)

    def _upload_failed(self, error: BaseException) -> None:
        self.failure = error
        if self.on_failure is not None:
            self.on_failure(error)

    def _lost(self) -> BaseException | None:
        return self.upload.failure or super()._lost()

    def abort(self) -> None:
        super().abort()
        self.upload.abort()


def live_sender(
    opts: BackupOptions, folder: Path, plan: Plan, authz: tuple[CollectionEntry, bool] | None
) -> PipeSender:
    """The sender of the archive while the backup runs (``--archive -``, or ``--stream``
    with ``--dest``: ``opts.sent_while_exported``), already given what is finished before
    the export: the users and roles, and the collections a resumed backup had done."""
    recipients = encryption.recipients(opts.encrypt_to) if opts.encrypt_to else []
    extra = [authz[0]] if authz is not None else []
    planned = plan_manifest(folder, plan, extra)
    compression = plan.layout.compress
    sender: PipeSender
    if opts.to_stdout:
        sender = PipeSender(folder, compression, recipients, manifest_bytes(planned))
    else:
        assert opts.dest is not None
        destination = open_destination(opts.dest, endpoint_url=opts.endpoint_url)
        key = f"{folder.name}{SUFFIXES[compression]}" + (AGE_SUFFIX if recipients else "")
        # Canonical JSON text is under three times its BSON (numbers and dates spelt out
        # as $numberLong, $date): a hint that sizes the parts so that 10,000 of them hold
        # the archive (the store's limit) whatever it compresses to.
        hint = 3 * sum(unit.size for unit in plan.units) + (1 << 20)
        upload = StreamUpload(destination, key, metadata_for(planned, bool(recipients)), hint)
        sender = UploadingSender(upload, folder, compression, recipients, manifest_bytes(planned))
    try:
        if authz is not None:
            assert authz[0].file is not None
            sender.send_member(authz[0].file, authz[0].bytes)
        for unit in plan.units:
            if unit.file in plan.done:
                sender.unit_done(unit, plan.done[unit.file])
    except BaseException:
        sender.abort()
        raise
    return sender


def send_rest(
    sender: PipeSender, members: list[tuple[str, int]], manifest: Manifest, encrypted: bool
) -> str | None:
    """Send what is left (joined ranges, the changes) and the manifest, and wait for the
    archive's end: the URL of an upload, None for a pipe. Raises the sender's error."""
    for name, size in members:  # those not sent yet
        sender.send_member(name, size)
    size = sender.finish(manifest_bytes(manifest))
    if isinstance(sender, UploadingSender):
        return sender.upload.finish(metadata_for(manifest, encrypted))
    logger.info("archive written to stdout (%d bytes)", size)
    return None


def broken(error: MongoBackupError, folder: Path) -> MongoBackupError:
    """The sender's error, saying that the exported files wait for ``--resume``."""
    if isinstance(error, DestinationError):
        return DestinationError(
            f"{error}; the exported files are kept in {folder}: run the same backup with "
            "--resume to upload them"
        )
    return ArchiveError(
        f"{error}; the exported files are kept in {folder}: run the same backup "
        "with --resume to write the archive again"
    )
