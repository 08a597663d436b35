"""``mongo-backup inspect SOURCE``: the manifest as a table, or JSON."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import TYPE_CHECKING, Any

from .options import add_source_options
from .tables import print_table

if TYPE_CHECKING:
    from ..archive.manifest import Manifest


def add_parser(commands: Any, parent: argparse.ArgumentParser, epilog: str) -> None:
    parser = commands.add_parser(
        "inspect",
        parents=[parent],
        epilog=epilog,
        help="show what a backup holds",
        description="Show a backup's manifest: server, times, and per collection its type, "
        "document count, size and status.",
    )
    parser.add_argument("source", metavar="SOURCE", help="archive or backup folder")
    parser.add_argument("--json", action="store_true", help="print the manifest as JSON")
    add_source_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    # Imported here: a command loads its own core alone (see exits._READINGS).
    from ..archive.reader import open_backup
    from ..location.transfer import local_copy

    with (
        local_copy(args.source, args.identity, args.endpoint_url) as local,
        open_backup(local) as reader,
    ):
        manifest = reader.manifest
    if args.json:
        print(json.dumps(dataclasses.asdict(manifest), ensure_ascii=False, indent=2))
        return None
    server = manifest.server
    scope = f"database {manifest.database!r}"
    if manifest.databases is not None:
        held = manifest.databases
        scope = f"{len(held)} database{'s' * (len(held) != 1)} ({', '.join(held)})"
    print(
        f"backup of {scope} from {', '.join(manifest.hosts) or '?'} "
        f"(server {server.get('version', '?')}, {server.get('topology', '?')})"
    )
    print(
        f"started {manifest.started_at}, finished {manifest.finished_at}; "
        f"format {manifest.json_format}{' pretty' if manifest.pretty else ''}, "
        f"compression {manifest.compression}, consistency {manifest.consistency}, "
        f"tool {manifest.tool_version}"
    )
    if manifest.users is not None:
        secret = ", with their password hashes" if manifest.credentials else ""
        print(f"users and roles: {manifest.users.count} of them{secret} (--users-and-roles)")
    if manifest.format == "mongodump":
        print("a mongodump output folder: no checksums (verify checks every document parses)")
    for line in history_lines(manifest):
        print(line)
    known = manifest.counted
    rows = [
        [
            c.name,
            c.type,
            str(c.count) if known else "?",
            str(c.bytes) if known else "?",
            str(len(c.indexes)),
            c.status if c.status == "ok" else f"failed: {c.error}",
        ]
        for c in manifest.collections
    ]
    print_table(
        "collections", ["collection", "type", "documents", "bytes", "indexes", "status"], rows
    )
    return None


def history_lines(manifest: Manifest) -> list[str]:
    """Where the backup stands in the server's history, and what it continues."""
    from ..mongo.cluster_time import from_json, show  # the command line loads no cores

    lines = []
    if manifest.point:
        lines.append(
            f"consistent at cluster time {show(from_json(manifest.point['cluster_time']))}"
        )
    if manifest.kind == "incremental" and manifest.parent:
        increment = manifest.increment or {}
        if increment.get("mode") == "changes":
            what = (
                f"change events from {show(from_json(increment['from']))} "
                f"to {show(from_json(increment['to']))}"
            )
        else:
            what = f"documents whose {increment.get('field')!r} moved on (deletes not captured)"
        lines.append(f"incremental: {what}")
        parent = manifest.parent
        lines.append(f"parent: {parent['id']} (manifest sha256 {parent['manifest_sha256']})")
    else:
        lines.append("full backup")
    if manifest.query is not None:
        query = manifest.query
        lines.append(
            f"partial: only the documents of {', '.join(query['collections'])} matching "
            f"{json.dumps(query['filter'], ensure_ascii=False)} (--query)"
        )
    read = manifest.read or {}
    if read.get("members"):
        mode = (read.get("preference") or {}).get("mode", "primary")
        lines.append(f"read from {', '.join(read['members'])} (read preference {mode})")
    return lines
