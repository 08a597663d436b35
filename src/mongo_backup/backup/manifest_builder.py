"""The manifest of a finished backup: the namespaces, their members, and the chain.

Split collections' ranges are joined into one member here (the last step that touches
data files before the archive is written).
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

from .._version import __version__
from ..archive.manifest import CollectionEntry, Manifest
from ..archive.writer import join_parts, member_digest, member_paths, remove_member
from ..errors import OutputError
from ..mongo.source import Intent
from .checkpoint import Plan, Unit, save_plan
from .consistency import Outcome
from .exporter import UnitRunner
from .increments import entry_fields

logger = logging.getLogger(__name__)


def _increment(plan: Plan, outcome: Outcome) -> dict[str, Any] | None:
    increment = plan.increment
    if not increment:
        return None
    if increment["mode"] == "changes":
        assert outcome.point is not None
        return {
            "mode": "changes",
            "field": None,
            "from": increment["from"],
            "to": outcome.point["cluster_time"],
            "deletes_captured": True,
        }
    return {
        "mode": "field",
        "field": increment["field"],
        "from": None,
        "to": None,
        # Stated plainly: documents deleted since the base are still in a restore.
        "deletes_captured": False,
    }


def _entry(intent: Intent, **fields: Any) -> CollectionEntry:
    """The manifest entry of a namespace: what the server said of it, plus ``fields``."""
    return CollectionEntry(
        name=intent.name,
        type=intent.type,
        options=intent.options,
        indexes=intent.indexes,
        uuid=intent.uuid,
        **{"file": None, **fields},
    )


def build_manifest(
    folder: Path,
    plan: Plan,
    runner: UnitRunner,
    outcome: Outcome,
) -> Manifest:
    """Join split collections' ranges, then describe every namespace, where the backup
    stands in the server's history, and (for an increment) what it continues."""
    entries: list[CollectionEntry] = []
    for data in plan.intents:
        intent = Intent(**data)
        units = [unit for unit in plan.units if unit.collection == intent.name]
        if not intent.has_data:
            entries.append(_entry(intent))
        elif intent.name in runner.failed or not all(u.file in plan.done for u in units):
            for unit in units:
                runner.discard(unit)
            error = runner.failed.get(intent.name, "not exported")
            entries.append(_entry(intent, status="failed", error=error))
        else:
            stats = _joined(folder, plan, units)
            entry = _entry(
                intent, file=plan.files[intent.name], **stats, **entry_fields(plan, intent.name)
            )
            logger.info("%s: %d documents, %d bytes", intent.name, entry.count, entry.bytes)
            entries.append(entry)
    if outcome.changes is not None:
        entries.append(outcome.changes)
    return _described(
        folder,
        plan,
        entries,
        kind="incremental" if plan.increment else "full",
        point=outcome.point,
        parent=plan.increment["parent"] if plan.increment else None,
        increment=_increment(plan, outcome),
        consistency=outcome.consistency,
        finished_at=dt.datetime.now(dt.UTC).isoformat(),
        read=_read(plan, runner),
    )


def plan_manifest(folder: Path, plan: Plan, extra: list[CollectionEntry]) -> Manifest:
    """What the backup will hold, before it reads a document: the first member of the
    archive's streamed form (see archive/streamed.py), with every namespace's type, file,
    options and indexes, and no counts or checksums yet (the manifest at the end has them).
    ``extra``: members written before the export (the users and roles)."""
    entries = []
    for data in plan.intents:
        intent = Intent(**data)
        entries.append(_entry(intent, file=plan.files[intent.name] if intent.has_data else None))
    return _described(folder, plan, entries + extra, kind="full", finished_at="")


def _described(folder: Path, plan: Plan, entries: list[CollectionEntry], **fields: Any) -> Manifest:
    """The manifest of ``entries``, with what the plan says of the backup as a whole."""
    layout = plan.layout
    return Manifest(
        backup_id=folder.name,
        database=plan.database,
        databases=plan.databases,
        tool_version=__version__,
        json_format=layout.json_format,
        pretty=layout.pretty,
        compression=layout.compress,
        started_at=plan.started_at,
        server=plan.server,
        hosts=plan.hosts,
        collections=entries,
        query=plan.query,
        **fields,
    )


def _read(plan: Plan, runner: UnitRunner) -> dict[str, Any]:
    """The read preference and every member read, this run's and a resumed run's."""
    members = sorted(set(plan.read.get("members", [])) | runner.source.read_from)
    return {"preference": plan.read.get("preference"), "members": members}


def _joined(folder: Path, plan: Plan, units: list[Unit]) -> dict[str, Any]:
    """The manifest fields of a collection whose units are all done."""
    if len(units) == 1:
        return _stats(plan.done[units[0].file])
    member = units[0].member
    compress, keep_plain = plan.layout.compress, plan.layout.keep_folder
    if member not in plan.done:
        files = [unit.file for unit in units]
        try:
            if all(
                path.exists()
                for file in files
                for path in member_paths(folder, file, compress, keep_plain)
            ):
                size, sha256 = join_parts(folder, member, files, compress, keep_plain)
            else:  # joined, then stopped while removing the ranges: the member is whole
                size, sha256 = member_digest(folder, member, compress, keep_plain)
        except OSError as error:
            raise OutputError(
                f"cannot join the ranges of {units[0].collection!r} in {folder} "
                f"({error.strerror or error}): run the same backup with --resume"
            ) from error
        parts = [plan.done[unit.file] for unit in units]
        plan.done[member] = {
            "count": sum(part["count"] for part in parts),
            "escaped": sum(part["escaped"] for part in parts),
            "bytes": size,
            "sha256": sha256,
        }
        save_plan(folder, plan)
    for unit in units:
        remove_member(folder, unit.file, compress, keep_plain)
    return _stats(plan.done[member])


def _stats(done: dict[str, Any]) -> dict[str, Any]:
    return {key: done[key] for key in ("count", "bytes", "sha256", "escaped")}
