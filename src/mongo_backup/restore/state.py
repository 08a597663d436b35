"""The progress of a restore, kept on local disk so that ``restore --resume`` can go on.

A restore writes to a database, not to a folder of its own, and its source may be
read-only, so its progress lives in the user's state folder::

    $MONGO_BACKUP_STATE_DIR, or $XDG_STATE_HOME/mongo-backup, or ~/.local/state/mongo-backup
        restores/{key}.json

``key`` names the pair (backup, target): a hash of the manifest's content, the target's
hosts and the target database. The file says, per collection, whether it is ``done``
or how far its inserts got: ``acknowledged`` documents (a prefix of the member: every
batch up to there was answered by the server) and ``limit``, a bound on what may have
been sent. Resuming skips the acknowledged prefix and sends the documents between the
two again; the server refuses those it already has (duplicate ``_id``), and those
refusals are counted as already restored, not as conflicts. The state is saved before
any document past ``limit`` is sent, so nothing the server may hold is ever beyond it.

The whole file is written once the collections are prepared (:meth:`RestoreState.save`);
after that each change of one collection is a line appended to ``{key}.journal``
(:meth:`RestoreState.note`), fsynced when it raises a ``limit``. Rewriting the whole file
for each change cost a restore of 2,000 small collections minutes (quadratic); a line
costs the same for the first collection and the last. Lines carry the generation of the
file they follow, so a journal left by a crash between a new file and its removal is
never applied over the newer file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..archive.manifest import Manifest
from ..files import write_json_atomic

logger = logging.getLogger(__name__)

STATE_FORMAT = "mongo-backup-restore-state"
STATE_VERSION = 1


def state_dir() -> Path:
    explicit = os.environ.get("MONGO_BACKUP_STATE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "mongo-backup"


def state_path(manifest: Manifest, hosts: list[str], database: str) -> Path:
    identity = json.dumps(
        {"backup": asdict(manifest), "hosts": sorted(hosts), "database": database},
        sort_keys=True,
        default=str,
    )
    key = hashlib.sha256(identity.encode("utf-8")).hexdigest()[:32]
    return state_dir() / "restores" / f"{key}.json"


@dataclass
class CollectionState:
    status: str = "inserting"  # "inserting" or "done"
    acknowledged: int = 0
    limit: int = 0


@dataclass
class RestoreState:
    source: str
    database: str
    collections: dict[str, CollectionState] = field(default_factory=dict)
    format: str = STATE_FORMAT
    format_version: int = STATE_VERSION
    generation: int = 0  # of the last whole save: older journal lines are stale
    # Written by a one-pass restore (restore/one_pass.py) before the backup was checked
    # whole: every collection here was created by it, and goes if the backup proves damaged.
    unverified: bool = False

    def save(self, path: Path) -> None:
        """The whole state, atomically; the journal starts again after it."""
        self.generation += 1
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        data = {item.name: getattr(self, item.name) for item in fields(self)}
        data["collections"] = {name: vars(entry) for name, entry in self.collections.items()}
        write_json_atomic(path, data)
        with contextlib.suppress(OSError):
            journal_path(path).unlink()

    def note(self, path: Path, name: str, durable: bool = False) -> None:
        """Collection ``name``'s state, appended to the journal (on disk before this
        returns when ``durable``: a raised ``limit`` must be, before the batch is sent)."""
        line = {"generation": self.generation, "name": name, **vars(self.collections[name])}
        fd = os.open(journal_path(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8"))
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)


def journal_path(path: Path) -> Path:
    return path.with_suffix(".journal")


def _apply_journal(state: RestoreState, path: Path) -> None:
    """The journal's lines of ``state``'s generation, in order (a torn last one left out)."""
    try:
        text = journal_path(path).read_bytes()
    except FileNotFoundError:
        return
    for raw in text.splitlines():
        try:
            line = json.loads(raw)
            if line.get("generation") != state.generation:
                continue
            state.collections[str(line["name"])] = CollectionState(
                str(line["status"]), int(line["acknowledged"]), int(line["limit"])
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            continue


def load_state(path: Path) -> RestoreState | None:
    """The saved state, or None when there is none (or none this version can use)."""
    try:
        data = json.loads(path.read_bytes())
        if data.get("format") != STATE_FORMAT or data.get("format_version") != STATE_VERSION:
            return None
        data["collections"] = {
            name: CollectionState(**value) for name, value in data["collections"].items()
        }
        state = RestoreState(**data)
        _apply_journal(state, path)
        return state
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, AttributeError, KeyError) as error:
        logger.warning("ignoring an unreadable restore state %s (%s)", path, error)
        return None


def remove_state(path: Path) -> None:
    for stale in (path, journal_path(path)):
        with contextlib.suppress(OSError):
            stale.unlink()


class Watermark:
    """How many documents of a member the server has answered for, as a prefix.

    Batches go to several insert workers and come back in any order; the prefix
    advances only over batches that all came back. ``send`` is called in member
    order by one thread; ``answered`` from any worker."""

    def __init__(self, start: int) -> None:
        self.acknowledged = start
        self.sent = start
        self._sizes: dict[int, int] = {}
        self._answered: set[int] = set()
        self._next_sent = 0
        self._next_answered = 0
        self._lock = threading.Lock()

    def send(self, documents: int) -> int:
        """Record a batch about to be sent; returns its ticket for :meth:`answered`."""
        with self._lock:
            ticket = self._next_sent
            self._next_sent += 1
            self._sizes[ticket] = documents
            self.sent += documents
            return ticket

    def answered(self, ticket: int) -> None:
        with self._lock:
            self._answered.add(ticket)
            while self._next_answered in self._answered:
                self._answered.remove(self._next_answered)
                self.acknowledged += self._sizes.pop(self._next_answered)
                self._next_answered += 1


def progress_hook(
    state: RestoreState, path: Path, name: str, watermark: Watermark, step: int, interval: float
) -> Callable[[int], None]:
    """A function to call before each batch is sent (with its size): saves the state
    when the batch would pass the saved ``limit`` (raising it by ``step``) or when
    ``interval`` seconds have passed, so the acknowledged prefix stays recent."""
    entry = state.collections[name]
    last_save = time.monotonic()

    def before_send(documents: int) -> None:
        nonlocal last_save
        now = time.monotonic()
        if watermark.sent + documents > entry.limit or now - last_save >= interval:
            entry.acknowledged = watermark.acknowledged
            raised = watermark.sent + documents > entry.limit
            entry.limit = max(entry.limit, watermark.sent + documents + step)
            state.note(path, name, durable=raised)
            last_save = now

    return before_send
