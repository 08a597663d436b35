"""A converter thread: the converter process's work (:mod:`.convert_worker`) without the
process, where the conversion does not need the GIL.

The converter is a child process because converting document by document in Python
holds the GIL, and the reading thread must answer the server the moment a batch
arrives. The compact canonical form has a C converter (``archive/_canonical.c``) that
converts whole batches with the GIL released, and zstd, SHA-256 and file writes release
it too: the Python left per batch is a few calls. So for that form (the default) the
same work runs on a thread of the backup's own process. That saves what a process
costs: starting an interpreter and its modules in every export worker (0.04 s of CPU
each) and copying every batch through a pipe, a quarter of a small backup's client CPU.
Relaxed or pretty output, a build without the C converter, and members of documents of
a MiB or more (:class:`SizedConverter`) still get the process.

The thread lowers its own priority by ``niceness`` on Linux, where niceness belongs to
each thread, as the process lowers its own (why, in :mod:`.convert_worker`); the
reading threads keep theirs. Elsewhere it runs at the process's priority.

Contract: the same as :class:`~mongo_backup.backup.convert_worker.ConverterProcess`.
``write`` hands the batch over and returns (back-pressure: at most one batch waits); a
failure on the thread is raised by the next call; after any failure the thread is gone:
``restart`` makes a new one.
"""

from __future__ import annotations

import contextlib
import os
import queue
import sys
import threading
from typing import Any, Protocol

from ..archive.extjson import accelerator
from ..errors import MongoBackupError, OutputError
from ..mongo.prefetch import count_documents
from .checkpoint import Layout
from .convert_child import MemberConversion, MemberSpec, error_reply
from .convert_worker import ConverterProcess

_WAIT = 0.5  # seconds between looks at a thread that may have stopped


class Converter(Protocol):
    """What an export worker needs of its converter (process or thread)."""

    def open(self, spec: MemberSpec) -> None: ...
    def write(self, batch: bytes) -> None: ...
    def checkpoint(self, last_id: str | None) -> None: ...
    def close(self) -> dict[str, Any]: ...
    def discard(self) -> None: ...
    def restart(self) -> None: ...
    def shutdown(self) -> None: ...


def new_converter(layout: Layout, niceness: int) -> Converter:
    """A thread where the C converter does the work (a process still for members of big
    documents: :class:`SizedConverter`), else a process."""
    fast = layout.json_format == "canonical" and not layout.pretty
    if fast and accelerator() is not None:
        return SizedConverter(niceness)
    return ConverterProcess(niceness)


# Documents this big (average of a member's first batch) are converted in a process. A
# thread's conversion shares the backup's memory: a batch, its JSON text and the batches
# waiting behind it, all of one big document each, added 60 MiB to the backup's peak with
# 15 MiB documents (193 MiB against 132). A process keeps its own; and its start is
# nothing beside converting documents that big.
BIG_DOCUMENT = 1 << 20


class SizedConverter:
    """A converter thread, or a converter process for a member of big documents.

    Which one is decided per member, at its first batch (or, for a member resumed from a
    checkpoint, from the checkpoint's bytes per document); ``open`` only records the
    member until then. Same contract as :class:`ConverterThread`."""

    def __init__(self, niceness: int = 0) -> None:
        self._niceness = niceness
        self._thread: ConverterThread | None = None
        self._process: ConverterProcess | None = None
        self._current: Converter | None = None
        self._pending: MemberSpec | None = None  # the member opened, not yet sent

    def _use(self, big: bool) -> Converter:
        if big:
            self._process = self._process or ConverterProcess(self._niceness)
            return self._process
        self._thread = self._thread or ConverterThread(self._niceness)
        return self._thread

    def _opened(self, big: bool = False) -> Converter:
        """The converter of the open member, opened now if it waited for a batch."""
        if self._pending is not None:
            self._current = self._use(big)
            spec, self._pending = self._pending, None
            self._current.open(spec)
        assert self._current is not None, "no member open"
        return self._current

    def open(self, spec: MemberSpec) -> None:
        self._current, self._pending = None, spec
        resume = spec["resume"]
        if resume is not None:  # answered at once: cut back and rehashed before any batch
            # Bytes of JSON a document here, not of BSON: a little more, so a member near
            # the line may go to a process on resume; either converter writes its bytes.
            average = int(resume["bytes"]) // max(1, int(resume["count"]))
            self._opened(big=average >= BIG_DOCUMENT)

    def write(self, batch: bytes) -> None:
        if self._pending is not None:
            self._opened(big=len(batch) >= BIG_DOCUMENT * count_documents(batch))
        self._opened().write(batch)

    def checkpoint(self, last_id: str | None) -> None:
        self._opened().checkpoint(last_id)

    def close(self) -> dict[str, Any]:
        return self._opened().close()

    def discard(self) -> None:
        if self._pending is not None:
            self._pending = None  # nothing was sent: the caller removes the unit's files
            return
        if self._current is not None:
            self._current.discard()

    def restart(self) -> None:
        for converter in (self._thread, self._process):
            if converter is not None:
                converter.restart()
        self._current, self._pending = None, None

    def shutdown(self) -> None:
        for converter in (self._thread, self._process):
            if converter is not None:
                converter.shutdown()


class ConverterThread:
    """One converter thread, fed by one export worker."""

    def __init__(self, niceness: int = 0) -> None:
        self._niceness = niceness
        self._start()

    def _start(self) -> None:
        self._jobs: queue.Queue[tuple[str, Any] | None] = queue.Queue(maxsize=1)
        self._replies: queue.Queue[dict[str, Any]] = queue.Queue()
        self._failure: dict[str, Any] | None = None
        self._thread = threading.Thread(target=self._serve, name="converter", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        _lower_priority(self._niceness)
        member = MemberConversion()
        try:
            self._work(member)
        finally:
            member.abandon()  # a member left open closes its files, as a process's exit does

    def _work(self, member: MemberConversion) -> None:
        while (job := self._jobs.get()) is not None:
            kind, payload = job
            try:
                if kind == "open":
                    member.open(payload)
                    if payload["resume"] is not None:
                        self._replies.put({})
                elif kind == "write":
                    member.write(payload)
                elif kind == "checkpoint":
                    member.checkpoint(payload)
                elif kind == "close":
                    self._replies.put(member.close())
                elif kind == "discard":
                    member.discard()
                    self._replies.put({})
            except Exception as error:  # raised by the worker's next call
                # The files stay, as the process leaves them (see convert_worker).
                self._failure = error_reply(error)
                self._replies.put(self._failure)
                return

    def _raise(self, reply: dict[str, Any]) -> None:
        error = OutputError if reply.get("os_error") else MongoBackupError
        raise error(str(reply["error"]))

    def _send(self, kind: str, payload: Any) -> None:
        while True:
            if self._failure is not None:
                self._raise(self._failure)
            if not self._thread.is_alive():
                raise MongoBackupError("the converter thread stopped")
            try:
                self._jobs.put((kind, payload), timeout=_WAIT)
                return
            except queue.Full:
                continue

    def _reply(self) -> dict[str, Any]:
        while True:
            try:
                reply = self._replies.get(timeout=_WAIT)
            except queue.Empty:
                if not self._thread.is_alive() and self._replies.empty():
                    raise MongoBackupError("the converter thread stopped") from None
                continue
            if "error" in reply:
                self._raise(reply)
            return reply

    def open(self, spec: MemberSpec) -> None:
        self._send("open", spec)
        if spec["resume"] is not None:
            self._reply()

    def write(self, batch: bytes) -> None:
        self._send("write", batch)

    def checkpoint(self, last_id: str | None) -> None:
        self._send("checkpoint", last_id)

    def close(self) -> dict[str, Any]:
        self._send("close", None)
        return self._reply()

    def discard(self) -> None:
        with contextlib.suppress(MongoBackupError):
            self._send("discard", None)
            self._reply()

    def restart(self) -> None:
        """A fresh thread in place of this one (after an error, the old one is gone)."""
        self.shutdown()
        self._start()

    def shutdown(self) -> None:
        while self._thread.is_alive():
            with contextlib.suppress(queue.Full):
                self._jobs.put(None, timeout=_WAIT)
                break
        self._thread.join()


def _lower_priority(niceness: int) -> None:
    """Lower the calling thread's priority (Linux only: elsewhere setpriority with a
    thread's id would name a process)."""
    if niceness <= 0 or not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        thread = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, thread)
        os.setpriority(os.PRIO_PROCESS, thread, min(19, current + niceness))
