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

import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, cast

from ..archive.tar_stream import TarStream
from ..archive.writer import framed
from ..location.pipe import StdoutWriter, reader_gone
from ..names import MANIFEST_NAME, PLAN_NAME
from .checkpoint import Unit
from .delivery import encrypting

_END = object()
_ABORT = object()
_ABORT_WAIT = 5.0  # seconds: a reader that takes nothing cannot hold a failed backup
_IDLE_CHECK = 0.5  # seconds: how soon a reader gone while nothing is sent is noticed


class _RawStdout:
    """File descriptor 1 written directly: no lock of ``sys.stdout`` is ever held by the
    sending thread (one blocked on a stalled reader would hold it at exit)."""

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            view = view[os.write(1, view) :]
        return len(data)

    def flush(self) -> None:
        pass


class _Stoppable:
    """The sender's output, which refuses every write once the backup has aborted."""

    def __init__(self, out: IO[bytes], stop: threading.Event) -> None:
        self._out = out
        self._stop = stop

    def write(self, data: bytes) -> int:
        if self._stop.is_set():
            raise OSError("the backup stopped")
        return self._out.write(data)

    def flush(self) -> None:
        self._out.flush()


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
        self._writer = StdoutWriter(out if out is not None else _RawStdout())  # type: ignore[arg-type]
        self._on_stdout = out is None
        self._stop = threading.Event()
        self.failure: BaseException | None = None
        # Told of a failure at once (the export stops at its next batch, not at the end
        # of the collection it is reading).
        self.on_failure: Callable[[BaseException], None] | None = None
        self.sent: set[str] = set()
        self._lock = threading.Lock()  # ``sent`` is shared by the export threads
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
        with self._lock:
            if name in self.sent:
                return
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
        """Stop at once, without an end (what is queued is not sent); waits a little
        for the thread, never for a reader that takes nothing."""
        self._stop.set()
        self._queue.put(_ABORT)
        deadline = time.monotonic() + _ABORT_WAIT
        while self._thread.is_alive() and time.monotonic() < deadline:
            self._thread.join(0.1)

    def _wait(self) -> None:
        while self._thread.is_alive():
            self._thread.join(0.2)  # short waits: Ctrl-C reaches the main thread

    def _run(self, produce: Any) -> None:
        try:
            produce(cast(IO[bytes], _Stoppable(cast(IO[bytes], self._writer), self._stop)))
            self._writer.flush()
            lost = self._lost()
            if lost is not None:  # age drops the error of its last write (pyrage 1.4)
                raise lost
        except BaseException as error:
            self.failure = self._lost() or error  # the output's own, not age's wrapping
            if self.on_failure is not None and not self._stop.is_set():
                self.on_failure(self.failure)

    def _lost(self) -> BaseException | None:
        """The output's own error, if it failed."""
        return self._writer.failure

    def _check_reader(self) -> None:
        """While a long collection is exported nothing is written: a reader that went
        away (``| head``) is noticed here, and the export stops at its next batch."""
        gone = reader_gone() if self._on_stdout else None
        if gone is not None:
            self._writer.failure = gone
            raise gone

    def _produce(self, out: IO[bytes]) -> None:
        with framed(out, self._compression) as (target, framing):
            tar = TarStream(target, framing)
            while True:
                try:
                    item = self._queue.get(timeout=_IDLE_CHECK)
                except queue.Empty:
                    self._check_reader()
                    continue
                if item is _ABORT or self._stop.is_set():
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
