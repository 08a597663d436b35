"""``backup --archive -``: the archive sent down the pipe while the backup runs.

The archive goes out in its streamed form (:mod:`mongo_backup.archive.streamed`): the
plan before the first document is read, each collection's member as soon as its export
is finished (its file is complete in the working folder), the members known only at the
end after it (a split collection's, joined; the captured changes), the manifest last.
So a ``restore -`` at the other end creates the collections and inserts the first one's
documents while this side still reads the next: the two overlap instead of running one
after the other.

A thread of its own writes to stdout; the export hands it names, never bytes, so a slow
reader holds no memory here. Contract: :meth:`PipeSender.send_member` and
:meth:`~PipeSender.send_bytes` queue a member; :meth:`~PipeSender.finish` queues the
manifest and the end, waits for everything to be written and returns the bytes written,
or raises the pipe's error (:class:`ArchiveError`, one line); :meth:`~PipeSender.abort`
stops without an end, so the reader sees a cut stream and keeps nothing.
``raise_if_failed`` lets the export stop as soon as the reader has gone away.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import IO, Any, cast

from ..archive.manifest import MANIFEST_NAME, PLAN_NAME
from ..archive.tar_stream import TarStream
from ..archive.writer import framed
from ..location.pipe import StdoutWriter
from .checkpoint import Unit
from .delivery import encrypting

_END = object()
_ABORT = object()


class PipeSender:
    """The streamed archive of ``folder`` into stdout (or ``out``)."""

    def __init__(
        self,
        folder: Path,
        compression: str,
        recipients: list[Any],
        plan: bytes,
        out: IO[bytes] | None = None,
    ) -> None:
        self._folder = folder
        self._compression = compression
        self._queue: queue.Queue[object] = queue.Queue()
        self._writer = StdoutWriter(out)
        self.failure: BaseException | None = None
        self.sent: set[str] = set()
        produce = encrypting(self._produce, recipients) if recipients else self._produce
        self._thread = threading.Thread(
            target=self._run, args=(produce,), name="archive-pipe", daemon=True
        )
        self._thread.start()
        self.send_bytes(PLAN_NAME, plan)

    def send_bytes(self, name: str, data: bytes) -> None:
        self._queue.put(("bytes", name, data))

    def send_member(self, name: str, size: int) -> None:
        """The member ``name`` (``size`` plain bytes), whose working file is complete."""
        if name not in self.sent:
            self.sent.add(name)
            self._queue.put(("file", name, size))

    def unit_done(self, unit: Unit, stats: dict[str, Any]) -> None:
        """A unit is finished: a collection of one unit goes out now (the ranges of a
        split one are joined at the end, and go then). Raises the pipe's error."""
        self.raise_if_failed()
        if unit.parts == 1:
            self.send_member(unit.file, stats["bytes"])

    def raise_if_failed(self) -> None:
        if self.failure is not None:
            raise self.failure

    def finish(self, manifest: bytes) -> int:
        self.send_bytes(MANIFEST_NAME, manifest)
        self._queue.put(_END)
        self._wait()
        self.raise_if_failed()
        return self._writer.bytes

    def abort(self) -> None:
        self._queue.put(_ABORT)
        self._wait()

    def _wait(self) -> None:
        while self._thread.is_alive():
            self._thread.join(0.2)  # short waits: Ctrl-C reaches the main thread

    def _run(self, produce: Any) -> None:
        try:
            produce(cast(IO[bytes], self._writer))
            self._writer.flush()
        except BaseException as error:  # the pipe's own error, not age's wrapping of it
            self.failure = self._writer.failure or error

    def _produce(self, out: IO[bytes]) -> None:
        with framed(out, self._compression) as (target, framing):
            tar = TarStream(target, framing)
            while True:
                item = self._queue.get()
                if item is _ABORT:
                    return  # no end: the reader sees a cut archive
                if item is _END:
                    tar.close()
                    return
                kind, name, payload = cast(tuple[str, str, Any], item)
                if kind == "bytes":
                    tar.add_bytes(name, payload)
                else:
                    tar.add_file(self._folder, name, payload)
                tar.flush()  # the reader gets the member now, not with the next one
