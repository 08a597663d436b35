"""Checkpoints: what an unfinished backup has done, so that ``--resume`` can go on.

A backup's working folder holds, besides the member files:

- ``checkpoint.json``, the *plan*, written by the backup process when the run starts (and
  when split ranges are joined): the database, the options that shape the output, the
  namespaces (with options and indexes, as the manifest will record them), the units.
- ``checkpoint.done.jsonl``, one line appended per finished unit: its result. Rewriting
  the whole plan for each unit cost a backup of 2,000 small collections minutes (the plan
  grows with the namespaces: quadratic); a line costs the same for the first unit and the
  last. :func:`load_plan` reads the plan's ``done`` and then these lines. The lines are
  not fsynced: a line lost with the machine (not with the process: the page cache
  outlives a kill) only means that unit is exported again by ``--resume``, as a unit
  without a checkpoint always is.
- ``{unit file}.checkpoint``, one per unit in progress, written by the converter process
  every second or so, right after it has ended a zstd frame and flushed the unit's files
  to disk: the last ``_id`` written, the document count, the byte count and SHA-256 of
  the plain bytes so far, and the size of each working file at that moment.

A *unit* is one collection, or one ``_id`` range of a split collection. Everything in a
unit's files up to the recorded sizes is durable and complete; anything after (a torn
last line after kill -9) is cut off on resume, and the scan continues after the
recorded ``_id``. Nothing here imports the driver: the converter process uses it too.

The plan and the unit checkpoints are written atomically (temporary file, fsync, rename,
fsync of the folder), so a crash leaves either the old or the new version, never half
of one.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from ..files import write_json_atomic

PLAN_NAME = "checkpoint.json"
DONE_NAME = "checkpoint.done.jsonl"
PLAN_FORMAT = "mongo-backup-checkpoint"
PLAN_VERSION = 1
UNIT_SUFFIX = ".checkpoint"
MAX_PLAN_BYTES = 64 * 1024 * 1024


def encode_key(key: bytes | None) -> str | None:
    return base64.b64encode(key).decode("ascii") if key is not None else None


def decode_key(text: str | None) -> bytes | None:
    return base64.b64decode(text, validate=True) if text is not None else None


@dataclass
class Unit:
    """One stream of documents into one working file: a collection, or one ``_id``
    range ``[lower, upper)`` of it (``part`` of ``parts``; bounds as base64 IdKeys)."""

    collection: str
    file: str  # the working file of this unit (the member's file when parts == 1)
    member: str  # the archive member the unit belongs to
    part: int = 0
    parts: int = 1
    lower: str | None = None
    upper: str | None = None
    ordered: bool = True
    size: int = 0  # estimated bytes, to start the largest units first
    average: int = 0  # bytes per document if the server said, to size the first batch

    @property
    def label(self) -> str:
        return (
            self.collection
            if self.parts == 1
            else f"{self.collection} [{self.part + 1}/{self.parts}]"
        )


@dataclass
class UnitProgress:
    """A unit's durable state: everything up to ``sizes`` is on disk and complete."""

    last_id: str | None
    count: int
    bytes: int
    sha256: str
    escaped: int
    sizes: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Layout:
    """The options that shape a backup's files, saved in its plan: a resumed backup
    writes its members as the first run did, whatever the second run was given."""

    json_format: str = "canonical"
    pretty: bool = False
    compress: str = "zstd"
    keep_folder: bool = False
    batch_size: int = 1000


@dataclass
class Plan:
    database: str
    hosts: list[str]
    started_at: str
    options: dict[str, Any]  # the Layout, as saved (see layout)
    server: dict[str, Any]
    intents: list[dict[str, Any]]
    files: dict[str, str]  # collection -> member file
    units: list[Unit]
    done: dict[str, dict[str, Any]] = field(default_factory=dict)  # unit file -> stats
    # Where the backup stands in the server's history (see consistency.py):
    # {"start": $timestamp, "start_token": resume token, "snapshot": bool}; {} standalone.
    consistency: dict[str, Any] = field(default_factory=dict)
    # An incremental backup (see increments.py): mode, field, parent, since, point.
    increment: dict[str, Any] | None = None
    # --since-field: the field and each collection's high-water mark, read before export.
    since_field: str | None = None
    watermarks: dict[str, Any] = field(default_factory=dict)
    # --query: the filter (canonical Extended JSON) for the collections it names.
    query: dict[str, Any] | None = None
    # The read preference asked ({"mode", "tags"}) and the members read so far.
    read: dict[str, Any] = field(default_factory=dict)
    # A backup of several databases (database ALL_DATABASES): those it holds.
    databases: list[str] | None = None
    format: str = PLAN_FORMAT
    format_version: int = PLAN_VERSION

    @property
    def layout(self) -> Layout:
        return Layout(**self.options)


def save_plan(folder: Path, plan: Plan) -> None:
    # Not dataclasses.asdict: it deep-copies every intent's options and indexes, and
    # json.dumps only reads them.
    data = {item.name: getattr(plan, item.name) for item in fields(plan)}
    data["units"] = [asdict(unit) for unit in plan.units]
    write_json_atomic(folder / PLAN_NAME, data)


def record_done(folder: Path, plan: Plan, unit_file: str, stats: dict[str, Any]) -> None:
    """Note a finished unit in ``plan`` and in the folder's done journal (see above)."""
    plan.done[unit_file] = stats
    line = json.dumps({"file": unit_file, "stats": stats}, ensure_ascii=False) + "\n"
    fd = os.open(folder / DONE_NAME, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)


def _journal(folder: Path) -> dict[str, dict[str, Any]]:
    """The finished units the done journal records; a torn last line is left out."""
    try:
        with open(folder / DONE_NAME, "rb") as handle:
            text = handle.read(MAX_PLAN_BYTES + 1)
    except FileNotFoundError:
        return {}
    except OSError as error:
        raise CheckpointError(f"{folder / DONE_NAME} cannot be read: {error}") from None
    if len(text) > MAX_PLAN_BYTES:
        raise CheckpointError(f"{folder / DONE_NAME} is too large to be a checkpoint")
    done: dict[str, dict[str, Any]] = {}
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line cut short by a crash: that unit is exported again
        if isinstance(entry, dict) and isinstance(entry.get("stats"), dict):
            done[str(entry.get("file"))] = entry["stats"]
    return done


def load_plan(folder: Path) -> Plan:
    path = folder / PLAN_NAME
    try:
        if path.stat().st_size > MAX_PLAN_BYTES:
            raise CheckpointError(f"{path} is too large to be a checkpoint")
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise CheckpointError(f"{folder} has no {PLAN_NAME}: not an unfinished backup") from None
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{path} cannot be read: {error}") from None
    if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT:
        raise CheckpointError(f"{path} is not a mongo-backup checkpoint")
    if data.get("format_version") != PLAN_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {data.get('format_version')!r}; "
            f"this mongo-backup reads version {PLAN_VERSION}"
        )
    try:
        data["units"] = [Unit(**unit) for unit in data["units"]]
        plan = Plan(**data)
    except (KeyError, TypeError) as error:
        raise CheckpointError(f"{path} is damaged ({error})") from None
    plan.done.update(_journal(folder))
    return plan


def unit_progress_path(folder: Path, unit_file: str) -> Path:
    return folder / f"{unit_file}{UNIT_SUFFIX}"


def save_unit_progress(path: Path, progress: UnitProgress) -> None:
    write_json_atomic(path, asdict(progress))


def load_unit_progress(path: Path) -> UnitProgress | None:
    """The unit's last checkpoint, or None if it has none (or an unreadable one: the
    unit then starts again, which is always safe)."""
    try:
        data = json.loads(path.read_bytes())
        progress = UnitProgress(**data)
        decode_key(progress.last_id)
    except (OSError, ValueError, TypeError):
        return None
    return progress


def remove_checkpoints(folder: Path) -> None:
    """Remove the plan and every unit checkpoint (the backup is complete)."""
    for path in [folder / PLAN_NAME, folder / DONE_NAME, *folder.glob(f"*{UNIT_SUFFIX}")]:
        with contextlib.suppress(OSError):
            path.unlink()
