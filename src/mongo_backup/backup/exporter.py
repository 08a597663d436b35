"""Exporting units of work: N workers, each with its own cursor and converter.

A unit (see :mod:`.checkpoint`) is a collection or one ``_id`` range of a split one.
:class:`UnitRunner` runs a list of units on ``jobs`` worker threads, largest first, and
records each finished unit in the plan. Each worker owns a converter
(:func:`~mongo_backup.backup.convert_thread.new_converter`: a thread where the C
converter works without the GIL, else a child process): reading (driver, GIL released on
the socket) and converting overlap, and ``jobs`` of those pairs run side by side. Memory
stays flat: each pair holds at most the prefetch bound plus one batch handed over,
whatever the size or number of collections.

While a unit is exported, its converter writes a checkpoint every
``checkpoint_interval`` seconds (ordered units only: a natural-order scan cannot be
continued after an ``_id``). A unit with a checkpoint continues from it.

Failures are of two kinds. A collection that cannot be read (a non-transient server
error, retries exhausted) fails alone: its files are removed, the other units go on,
and the manifest records the failure. Anything that makes the whole backup impossible
(the output cannot be written, Ctrl-C) stops every worker, keeps every file and
checkpoint, and is raised to the caller for ``--resume``.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

from ..archive.writer import remove_member
from ..errors import Interrupted, MongoBackupError, OutputError, RestartNeeded
from ..mongo.prefetch import BATCH_BYTES, count_documents, resumable
from ..mongo.source import MongoSource
from ..redact import scrub_text
from ..retry import RetryPolicy
from .checkpoint import (
    Plan,
    Unit,
    decode_key,
    encode_key,
    load_unit_progress,
    record_done,
    unit_progress_path,
)
from .convert_child import member_spec
from .convert_thread import Converter, new_converter
from .increments import query_for

logger = logging.getLogger(__name__)


class Progress(Protocol):
    """What the core reports while it works; the CLI draws it, tests may record it."""

    def start(self, name: str, total: int) -> None: ...
    def advance(self, name: str, documents: int) -> None: ...
    def finish(self, name: str) -> None: ...


class NoProgress:
    def start(self, name: str, total: int) -> None:
        pass

    def advance(self, name: str, documents: int) -> None:
        pass

    def finish(self, name: str) -> None:
        pass


class _CollectionProgress:
    """One bar per collection, however many units feed it, from any thread."""

    def __init__(self, progress: Progress, units: list[Unit], totals: Callable[[str], int]):
        self._progress = progress
        self._active = not isinstance(progress, NoProgress)
        self._left = {unit.collection: 0 for unit in units}
        for unit in units:
            self._left[unit.collection] += 1
        self._totals = totals
        self._started: set[str] = set()
        self._lock = threading.Lock()

    def start(self, unit: Unit, already: int) -> None:
        if not self._active:
            return
        with self._lock:
            if unit.collection not in self._started:
                self._started.add(unit.collection)
                self._progress.start(unit.collection, self._totals(unit.collection))
        self.advance(unit, already)

    def advance(self, unit: Unit, documents: int) -> None:
        if self._active and documents:
            self._progress.advance(unit.collection, documents)

    def advance_batch(self, unit: Unit, batch: bytes) -> None:
        if self._active:  # counting walks the batch: only for a bar that shows it
            self._progress.advance(unit.collection, count_documents(batch))

    def finish(self, unit: Unit) -> None:
        with self._lock:
            self._left[unit.collection] -= 1
            if self._active and self._left[unit.collection] == 0:
                self._progress.finish(unit.collection)


class UnitRunner:
    """Runs units; afterwards ``failed`` maps collection names to their error text."""

    def __init__(
        self,
        source: MongoSource,
        folder: Path,
        plan: Plan,
        *,
        jobs: int,
        nice: int,
        policy: RetryPolicy,
        checkpoint_interval: float,
        progress: Progress,
        on_done: Callable[[Unit, dict[str, Any]], None] | None = None,
        reader_waits: bool = False,
    ) -> None:
        self.source = source
        # Called on the exporting thread once a unit's files are complete (the pipe
        # sends them); what it raises stops the backup.
        self.on_done = on_done
        # Called once, on the exporting thread that finishes the first unit.
        self.after_first_unit: Callable[[], None] | None = None
        self.reader_waits = reader_waits  # a restore at the other end of a pipe
        self.folder = folder
        self.plan = plan
        self.jobs = jobs
        self.nice = nice
        self.policy = policy
        self.checkpoint_interval = checkpoint_interval
        self.progress = progress
        self.failed: dict[str, str] = {}
        self._stop = threading.Event()
        self._fatal: BaseException | None = None
        self._lock = threading.Lock()

    def run(self, units: list[Unit]) -> None:
        """Export ``units``; raises the first error that stops the whole backup."""
        # Taken from the front, largest first: a deque, so that thousands of small
        # collections cost no scan of the whole list each.
        pending = collections.deque(sorted(units, key=lambda unit: unit.size, reverse=True))
        self._bars = _CollectionProgress(self.progress, units, self.source.estimated_count)
        threads = [
            threading.Thread(
                target=self._work,
                args=(pending, self._smallest_first(n)),
                name=f"export-{n}",
                daemon=True,
            )
            for n in range(min(self.jobs, len(pending)))
        ]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                while thread.is_alive():
                    thread.join(0.2)  # short waits: Ctrl-C reaches the main thread
        except KeyboardInterrupt:
            self._stop.set()
            for thread in threads:
                thread.join()
            raise Interrupted(
                f"interrupted; the partial backup is kept in {self.folder}: "
                "run the same backup with --resume to continue it"
            ) from None
        if isinstance(self._fatal, OutputError):
            raise OutputError(
                f"cannot write the backup in {self.folder}: {self._fatal}; the partial backup "
                "is kept: make room and run the same backup with --resume"
            ) from self._fatal
        if self._fatal is not None:
            raise self._fatal

    def _smallest_first(self, worker: int) -> bool:
        """Whether ``worker`` takes the smallest unit left instead of the largest. For a
        pipe (``reader_waits``), every other worker does: the restore at the other end
        gets a first collection to insert at once, while the largest ones still start
        first on the other workers (a largest-first order finishes soonest overall). An
        upload (``--stream``) waits for nothing: largest first."""
        return self.reader_waits and worker % 2 == 1

    def _work(self, pending: collections.deque[Unit], smallest_first: bool = False) -> None:
        converter: Converter | None = None
        try:
            while not self._stop.is_set():
                with self._lock:
                    take = pending.pop if smallest_first else pending.popleft
                    unit = None
                    while pending and unit is None:
                        unit = take()
                        if unit.collection in self.failed:
                            unit = None  # another range of a collection that failed
                    if unit is None:
                        return
                if converter is None:
                    converter = new_converter(self.plan.layout, self.nice)
                try:
                    stats = self._export(unit, converter)
                except (Interrupted, OutputError) as error:
                    self._stop_all(error)
                    return
                except (MongoBackupError, OSError, ValueError) as error:
                    converter.shutdown()  # it may be gone, or hold the unit's files open
                    converter = None
                    self._fail(unit, error)
                    continue
                with self._lock:
                    record_done(self.folder, self.plan, unit.file, stats)
                with contextlib.suppress(OSError):
                    unit_progress_path(self.folder, unit.file).unlink()
                if self.on_done is not None:
                    self.on_done(unit, stats)
                with self._lock:
                    first, self.after_first_unit = self.after_first_unit, None
                if first is not None:
                    first()
        except BaseException as error:  # a bug: stop everything, report it once
            self._stop_all(error)
        finally:
            if converter is not None:
                converter.shutdown()

    def abandon(self, error: BaseException) -> None:
        """Stop every export at its next batch and make ``run`` raise ``error`` (the
        pipe's reader went away: nothing more can be sent)."""
        self._stop_all(error)

    def _stop_all(self, error: BaseException) -> None:
        with self._lock:
            if self._fatal is None and not isinstance(error, Interrupted):
                self._fatal = error
        self._stop.set()

    def _fail(self, unit: Unit, error: BaseException) -> None:
        message = scrub_text(str(error), self.source.secrets)
        logger.error("collection %r failed: %s", unit.collection, message, exc_info=True)
        with self._lock:
            self.failed.setdefault(unit.collection, message)
        self.discard(unit)
        self._bars.finish(unit)

    def discard(self, unit: Unit) -> None:
        """Remove a unit's files and checkpoint."""
        layout = self.plan.layout
        remove_member(self.folder, unit.file, layout.compress, layout.keep_folder)
        with contextlib.suppress(OSError):
            unit_progress_path(self.folder, unit.file).unlink()

    def _export(self, unit: Unit, converter: Converter) -> dict[str, Any]:
        restarts = 0
        while True:
            try:
                return self._export_once(unit, converter)
            except RestartNeeded as error:
                restarts += 1
                if restarts > self.policy.retries:
                    raise
                delay = self.policy.delay(restarts)
                logger.warning(
                    "%s; %s cannot continue where it stopped, so it starts again "
                    "(retry %d of %d in %.1f s)",
                    error,
                    unit.label,
                    restarts,
                    self.policy.retries,
                    delay,
                )
                converter.discard()
                self.discard(unit)
                time.sleep(delay)

    def _export_once(self, unit: Unit, converter: Converter) -> dict[str, Any]:
        checkpoint = unit_progress_path(self.folder, unit.file)
        resume = load_unit_progress(checkpoint) if unit.ordered else None
        if resume is not None and not resumable(decode_key(resume.last_id)):
            resume = None  # not written by this version: start the unit again
        try:
            converter.open(
                member_spec(
                    self.folder,
                    unit.file,
                    self.plan.layout,
                    checkpoint if unit.ordered else None,
                    asdict(resume) if resume else None,
                )
            )
        except OutputError:
            raise
        except MongoBackupError as error:
            if resume is None:
                raise
            # The files do not match their checkpoint: start the unit over, with a new
            # converter (the old one stopped at the error).
            logger.warning(
                "%s: cannot continue from its checkpoint (%s): starting it again", unit.label, error
            )
            converter.restart()
            self.discard(unit)
            return self._export_once(unit, converter)
        if resume is not None:
            logger.info("%s: continuing after %d documents", unit.label, resume.count)
        self._bars.start(unit, resume.count if resume else 0)
        last_id: bytes | None = None
        batch_size = self.plan.layout.batch_size
        if unit.average:  # big documents: fewer per batch from the first one on
            batch_size = max(1, min(batch_size, BATCH_BYTES // unit.average))
        batches = self.source.raw_batches(
            unit.collection,
            batch_size,
            ordered=unit.ordered,
            lower=decode_key(resume.last_id) if resume else decode_key(unit.lower),
            upper=decode_key(unit.upper),
            inclusive=resume is None,
            policy=self.policy,
            query=query_for(self.plan, unit.collection),
        )
        next_checkpoint = time.monotonic() + self.checkpoint_interval
        try:
            for batch, last_id in batches:
                converter.write(batch)
                self._bars.advance_batch(unit, batch)
                if self._stop.is_set():
                    raise Interrupted("stopped")
                if resumable(last_id) and time.monotonic() >= next_checkpoint:
                    converter.checkpoint(encode_key(last_id))
                    next_checkpoint = time.monotonic() + self.checkpoint_interval
                del batch  # not held while the next one is received (big documents)
            stats = converter.close()
        except Interrupted:
            if resumable(last_id):
                converter.checkpoint(encode_key(last_id))  # Ctrl-C loses nothing
            raise
        finally:
            batches.close()
        self._bars.finish(unit)
        return stats
