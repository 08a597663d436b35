"""Continuous backups (``mongo-backup watch``): every change is at most one interval
(plus the time to close one increment) away from being in a closed archive.

A watch takes a full backup (or continues the newest backup of the database in the
location, or first resumes an unfinished one), then every ``interval`` seconds a
change-stream increment (see :mod:`.increments`) continuing the previous backup: each a
normal archive of the chain, uploaded with ``--dest``, encrypted with ``--encrypt-to``,
restorable to any second with ``restore --until``. With ``max_increment_bytes`` an
increment stops near that size and the next one starts at once; with ``full_every`` a
new full backup starts a new chain once the current chain's full backup is that old.

Contracts:
- Where the watch stands is saved durably after every closed backup in
  ``{out_dir}/.watch/{db}/state.json``: the manifest of the last closed backup, which
  holds its point in the server's history (cluster time and resume token). A watch
  killed at any moment and started again continues from it with no gap and no
  duplicate, also when the archives are encrypted or uploaded without a local copy.
  An archive closed after the state was saved (a kill in between) is newer and is
  continued instead; an unfinished working folder (a kill inside a backup) is resumed
  by the first cycle.
- A failed cycle (server down, step-down, network cut) is logged at WARNING and tried
  again after ``retry_wait`` seconds; the next increment starts where the last closed
  one ended, so a failure loses nothing. History the server no longer has
  (:class:`HistoryLost`) starts a new full backup, said at WARNING. Configuration errors
  and a location held by another watch of the same database end the watch.
- ``stop`` (an event the CLI sets on SIGTERM/SIGINT) ends the watch after one last
  increment that closes the open window.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..archive.chain import Link, find_base, resolve_chain
from ..archive.manifest import Manifest, manifest_bytes, parse_manifest
from ..errors import ArchiveError, ConfigError, HistoryLost, Interrupted, MongoBackupError
from ..files import write_json_atomic
from ..location.locking import location_lock
from ..mongo.cluster_time import from_json
from ..mongo.connection import connect
from ..mongo.source import MongoSource
from ..names import encode_stem, id_order
from ..redact import uri_secrets
from .options import BackupOptions, BackupResult
from .run import KeptConnection, run_backup

logger = logging.getLogger(__name__)

STATE_FORMAT = "mongo-backup-watch"
STATE_FOLDER = ".watch"
CLOSING_TRIES = 5  # a failing closing increment is tried this often before the watch ends


@dataclass
class WatchOptions:
    backup: BackupOptions  # what every backup of the watch is: source, location, format
    interval: float = 60.0  # seconds between increments
    max_increment_bytes: int | None = None  # an increment stops near this many bytes
    full_every: dt.timedelta | None = None  # a new chain once its full backup is this old
    retry_wait: float = 5.0  # after a failed cycle (at most ``interval``)

    def check(self) -> None:
        if not 0 < self.interval <= 366 * 86400:
            raise ConfigError("--interval must be a positive number of seconds")
        if self.max_increment_bytes is not None and self.max_increment_bytes < 1:
            raise ConfigError("--max-increment-bytes must be positive")
        if self.full_every is not None and self.full_every <= dt.timedelta(0):
            raise ConfigError("--full-every must be positive")
        if self.backup.incremental or self.backup.since_field or self.backup.base:
            raise ConfigError(
                "watch takes change-stream increments itself: drop --incremental, "
                "--since-field and --base"
            )
        self.backup.check()


@dataclass
class Cycle:
    """One backup of the watch, closed or failed."""

    kind: str  # "full" or "incremental"
    started: dt.datetime
    duration: float = 0.0
    result: BackupResult | None = None
    error: str | None = None
    chain_length: int = 0  # backups in the chain the last closed one ends
    lag: float | None = None  # seconds between the end of its window and its closing
    capped: bool = False  # stopped at max_increment_bytes: more changes are waiting

    @property
    def ok(self) -> bool:
        return self.result is not None and self.result.complete


@dataclass
class WatchResult:
    cycles: int = 0
    fulls: int = 0
    increments: int = 0
    failures: int = 0
    last: Cycle | None = None
    history: list[str] = field(default_factory=list)  # archive locations, oldest first

    @property
    def complete(self) -> bool:
        """The last cycle (the one that closed the window on stopping) succeeded."""
        return self.last is None or self.last.ok

    def to_json(self) -> dict[str, Any]:
        last = self.last
        return {
            "cycles": self.cycles,
            "fulls": self.fulls,
            "increments": self.increments,
            "failures": self.failures,
            "last": None
            if last is None
            else {
                "kind": last.kind,
                "location": last.result.location if last.result else None,
                "error": last.error,
                "lag_s": last.lag,
                "chain_length": last.chain_length,
            },
            "complete": self.complete,
        }


def state_folder(out_dir: Path, db: str) -> Path:
    return Path(out_dir) / STATE_FOLDER / encode_stem(db)


def run_watch(
    opts: WatchOptions,
    stop: threading.Event,
    report: Callable[[Cycle], None] | None = None,
) -> WatchResult:
    """Back up continuously until ``stop`` is set; ``report`` sees every cycle."""
    opts.check()
    _require_change_streams(opts.backup)
    folder = state_folder(opts.backup.out_dir, opts.backup.db)
    folder.mkdir(parents=True, exist_ok=True)
    with location_lock(folder, f"a watch of {opts.backup.db!r}"):
        return _Watcher(opts, folder, report or (lambda cycle: None)).run(stop)


def _require_change_streams(backup: BackupOptions) -> None:
    """Refuse a standalone server before the first backup, not after it."""
    client = connect(backup.uri, timeout=backup.timeout)
    try:
        source = MongoSource(client, backup.db, uri_secrets(backup.uri))
        topology = source.server_info()["topology"]
    finally:
        client.close()
    if topology == "standalone":
        raise ConfigError(
            "watch follows the change stream: it needs a replica set or sharded cluster "
            "(this server is standalone; take backups with --since-field increments instead)"
        )


class _Watcher:
    def __init__(self, opts: WatchOptions, folder: Path, report: Callable[[Cycle], None]):
        self.opts, self.state_path, self.report = opts, folder / "state.json", report
        self.result = WatchResult()
        self.base: Link | None = None  # the last closed backup
        self.full_started: dt.datetime | None = None  # when the chain's full backup began
        self.chain_length = 0
        # One client and one change stream for all the increments: a cycle every few
        # seconds must not pay a connection, a handshake and an aggregate each time.
        self.kept: KeptConnection | None = None
        self._load_base()

    def run(self, stop: threading.Event) -> WatchResult:
        try:
            return self._run(stop)
        finally:
            self._drop_connection()

    def _run(self, stop: threading.Event) -> WatchResult:
        resume = True  # the first cycle finishes what a killed watch had begun
        while True:
            cycle = self._cycle(resume)
            resume = False
            if stop.is_set():
                break
            if cycle.ok and cycle.capped:
                continue  # more changes are waiting: the next increment now
            if cycle.result is None and self.base is None and cycle.error is None:
                continue  # history lost: the new full backup now
            wait = self.opts.interval - cycle.duration if cycle.result else self.opts.retry_wait
            if stop.wait(max(0.0, min(wait, self.opts.interval))):
                break
        if self.base is not None:  # else there is no chain to close
            logger.info("stopping: one last increment closes the open window")
            self._close_window()
        return self.result

    def _close_window(self) -> None:
        """Increments up to now, riding out a passing fault (a few tries, as a backup's
        own retries do): the result's ``last`` says whether the window was closed."""
        failures = 0
        while failures < CLOSING_TRIES:
            cycle = self._cycle(resume=False)
            if cycle.ok and cycle.capped:
                continue
            if cycle.result is not None:
                return
            failures += 1
            time.sleep(min(self.opts.retry_wait, self.opts.interval))

    # -- one cycle -------------------------------------------------------------------------

    def _next_kind(self) -> str:
        if self.base is None:
            return "full"
        if "cluster_time" not in (self.base.manifest.point or {}):
            # Its change capture failed (said at WARNING then): no increment can start
            # from it, a new full backup can.
            logger.warning(
                "%s records no point in the server's history: the next backup is a full one",
                self.base.id,
            )
            return "full"
        every, started = self.opts.full_every, self.full_started
        if every is not None and started is not None and dt.datetime.now(dt.UTC) - started >= every:
            logger.info("the chain's full backup is older than --full-every: a new full")
            return "full"
        return "incremental"

    def _cycle(self, resume: bool) -> Cycle:
        kind = self._next_kind()
        started = time.monotonic()
        cycle = Cycle(kind, dt.datetime.now(dt.UTC))
        incremental = kind == "incremental"
        options = replace(
            self.opts.backup,
            incremental=incremental,
            resume=resume,
            max_increment_bytes=self.opts.max_increment_bytes if incremental else None,
        )
        try:
            if incremental and self.kept is None:
                self.kept = KeptConnection()
            result = run_backup(options, None, self.base if incremental else None, self.kept)
        except HistoryLost as error:
            logger.warning("%s: starting a new chain with a full backup", error)
            self._drop_connection()
            self.base = None
            cycle.duration = time.monotonic() - started
            return self._close(cycle)
        except (ConfigError, Interrupted):  # a second signal stops the watch at once
            raise
        except MongoBackupError as error:
            self._drop_connection()  # the next cycle starts from a clean connection
            cycle.error = str(error)
            cycle.duration = time.monotonic() - started
            logger.warning(
                "the %s backup failed (%s); trying again in %g s: the next one starts where "
                "the last closed one ended",
                kind,
                error,
                min(self.opts.retry_wait, self.opts.interval),
            )
            return self._close(cycle)
        cycle.duration = time.monotonic() - started
        cycle.result = result
        cycle.kind = result.manifest.kind  # a resumed unfinished backup may be either
        self._advance(result)
        cycle.chain_length = self.chain_length
        cycle.lag = _lag(result.manifest)
        cycle.capped = _capped(result.manifest, self.opts.max_increment_bytes)
        return self._close(cycle)

    def _drop_connection(self) -> None:
        if self.kept is not None:
            self.kept.close()
            self.kept = None

    def _close(self, cycle: Cycle) -> Cycle:
        self.result.cycles += 1
        if cycle.result is None:
            self.result.failures += 1
        elif cycle.kind == "full":
            self.result.fulls += 1
        else:
            self.result.increments += 1
        if cycle.result is not None:
            self.result.history.append(cycle.result.location)
        self.result.last = cycle
        self.report(cycle)
        return cycle

    def _advance(self, result: BackupResult) -> None:
        """The closed backup becomes the base of the next increment, durably."""
        written = manifest_bytes(result.manifest)
        manifest = parse_manifest(written)  # with its checksum
        self.base = Link(Path(result.location), manifest)
        if manifest.kind == "full":
            self.full_started = dt.datetime.fromisoformat(manifest.started_at)
            self.chain_length = 1
        else:
            self.chain_length += 1
        write_json_atomic(
            self.state_path,
            {
                "format": STATE_FORMAT,
                "database": manifest.database,
                "location": result.location,
                "manifest": written.decode("utf-8"),
                "full_started_at": self.full_started.isoformat() if self.full_started else None,
                "chain_length": self.chain_length,
            },
        )

    # -- where a watch starts ----------------------------------------------------------------

    def _load_base(self) -> None:
        db, out_dir = self.opts.backup.db, Path(self.opts.backup.out_dir)
        saved = self._saved_base()
        try:
            local: Link | None = find_base(out_dir, db, None)
        except ConfigError:
            local = None
        if local is not None and (saved is None or id_order(local.id) > id_order(saved[0].id)):
            try:
                chain = resolve_chain(local.path, local.manifest)
            except ArchiveError as error:
                logger.warning("%s: the next backup is a full one", error)
                return
            self.base, self.chain_length = local, len(chain)
            self.full_started = dt.datetime.fromisoformat(chain[0].manifest.started_at)
        elif saved is not None:
            self.base, self.full_started, self.chain_length = saved
        if self.base is not None:
            logger.info("continuing the chain after %s", self.base.id)

    def _saved_base(self) -> tuple[Link, dt.datetime | None, int] | None:
        if not self.state_path.is_file():
            return None
        try:
            data = json.loads(self.state_path.read_text(encoding="utf-8"))
            if data.get("format") != STATE_FORMAT:
                raise ValueError("not a watch state")
            manifest = parse_manifest(data["manifest"].encode("utf-8"))
            if manifest.database != self.opts.backup.db:
                raise ValueError(f"a watch of database {manifest.database!r}")
            started = data.get("full_started_at")
            full = dt.datetime.fromisoformat(started) if started else None
            link = Link(Path(str(data["location"])), manifest)
            return link, full, int(data.get("chain_length") or 1)
        except (OSError, ValueError, KeyError, TypeError, ArchiveError) as error:
            logger.warning(
                "ignoring %s (%s): the next backup is a full one", self.state_path, error
            )
            return None


def _lag(manifest: Manifest) -> float | None:
    """Seconds between the end of the backup's window and now (its recovery point)."""
    point = (manifest.point or {}).get("cluster_time")
    if point is None:
        return None
    return max(0.0, time.time() - from_json(point).time)


def _capped(manifest: Manifest, max_bytes: int | None) -> bool:
    changes = manifest.changes
    return max_bytes is not None and changes is not None and changes.bytes >= max_bytes
