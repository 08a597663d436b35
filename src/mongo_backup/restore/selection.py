"""Which of a backup's namespaces a restore writes, under which names, and how.

Shared by the restore of an archive (:mod:`.run`) and of a stream read as it arrives
(:mod:`.streamed`): the selection (``--db``, ``--collection``, ``--ns-include`` and their
exclusions), the renames (``--ns-from``/``--ns-to``), the write settings and the client
the documents go through, each checked
against the manifest with one clear :class:`ConfigError` before anything is written.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pymongo import MongoClient

from ..archive.manifest import CollectionEntry, Manifest
from ..errors import ConfigError
from ..mongo.connection import connect, durable_writes
from ..names import ALL_DATABASES, collection_filter, unmatched_patterns
from .namespaces import WriteSettings
from .options import RestoreOptions
from .renames import NamespaceRenamer, Renamer, parse_renames

logger = logging.getLogger(__name__)


def wanted_namespaces(opts: RestoreOptions, source_db: str) -> Callable[[str], bool]:
    """The collections restored: by name, and by the backup's namespaces (of a backup of
    several databases, those of ``--db`` alone when it is given)."""
    kept = collection_filter(
        opts.collections, opts.exclude, source_db, opts.ns_include, opts.ns_exclude
    )
    if source_db != ALL_DATABASES or not opts.db:
        return kept
    prefix = f"{opts.db}."
    return lambda namespace: namespace.startswith(prefix) and kept(namespace)


def check_users_and_roles(opts: RestoreOptions, manifest: Manifest, target: str) -> None:
    """--users-and-roles needs the member, and users keep their databases: a restore
    that renames would give them roles on databases that are not the restored ones."""
    if not opts.users_and_roles:
        if manifest.users is not None:
            logger.info("the backup holds users and roles: --users-and-roles restores them")
        return
    if manifest.users is None:
        raise ConfigError(
            "--users-and-roles: the backup holds no users and roles (it was made without "
            "--users-and-roles)"
        )
    if target != manifest.database or opts.ns_from:
        raise ConfigError(
            "--users-and-roles restores users and roles into the databases they were "
            "defined in: leave out --db NAME (another name) and --ns-from/--ns-to"
        )


def renames_of(opts: RestoreOptions, manifest: Manifest) -> tuple[Renamer, list[CollectionEntry]]:
    """The renames (--ns-from/--ns-to) of the backup's selected entries, its target
    database settled; the selected entries."""
    selected = selected_entries(manifest, opts)
    pairs = parse_renames(opts.ns_from, opts.ns_to)
    several = manifest.database == ALL_DATABASES
    names = NamespaceRenamer(pairs) if several else Renamer(manifest.database, pairs)
    names.target_db([entry.name for entry in selected], opts.db)
    _refuse_merged_names(names, selected)
    return names, selected


def _refuse_merged_names(names: Renamer, selected: list[CollectionEntry]) -> None:
    """Two collections renamed to one name would be mixed into one: refused."""
    seen: dict[str, str] = {}
    for entry in selected:
        target = names.collection(entry.name)
        if target in seen:
            raise ConfigError(
                f"--ns-to renames both {seen[target]!r} and {entry.name!r} to {target!r}"
            )
        seen[target] = entry.name


def write_settings(opts: RestoreOptions, source_db: str) -> WriteSettings:
    return WriteSettings(
        wanted=wanted_namespaces(opts, source_db),
        drop=opts.drop,
        indexes=opts.indexes,
        options=opts.options,
        dry_run=opts.dry_run,
        bypass_validation=opts.bypass_validation,
        jobs=opts.jobs,
        batch_size=opts.batch_size,
        checked=opts.verify_first,
        until=opts.until,
        users_and_roles=opts.users_and_roles,
    )


def selected_entries(manifest: Manifest, opts: RestoreOptions) -> list[CollectionEntry]:
    if manifest.database == ALL_DATABASES:
        _check_database_selection(manifest, opts)
    names = {entry.name for entry in manifest.collections}
    unknown = sorted(set(opts.collections) - names)
    if unknown:
        raise ConfigError(f"the backup has no collection named {', '.join(map(repr, unknown))}")
    unmatched = unmatched_patterns(opts.ns_include, manifest.database, names)
    if unmatched:
        raise ConfigError(
            f"--ns-include {', '.join(map(repr, unmatched))} matches no namespace of the "
            f"backup (database {manifest.database!r})"
        )
    wanted = wanted_namespaces(opts, manifest.database)
    return [entry for entry in manifest.collections if entry.is_collection and wanted(entry.name)]


def _check_database_selection(manifest: Manifest, opts: RestoreOptions) -> None:
    """A backup of several databases: --db picks one of them; collections are chosen by
    namespace."""
    if opts.collections or opts.exclude:
        raise ConfigError(
            "this backup holds several databases: choose collections with --ns-include / "
            "--ns-exclude DB.COLLECTION (--collection names one database's)"
        )
    held = manifest.databases or []
    if opts.db and opts.db not in held:
        raise ConfigError(
            f"the backup holds no database {opts.db!r} (it holds {', '.join(held) or 'none'}); "
            "restore one under another name with --ns-from / --ns-to"
        )


def inserts_client(opts: RestoreOptions) -> MongoClient[Any]:
    """The client the documents go through. retryWrites=False: the inserter sends a
    batch again itself, and counts what the first try had written as restored (see
    mongo/inserter.py). Acknowledged means durable (journaled, on a majority), as
    mongorestore's default: the progress kept for --resume counts acknowledged documents,
    and a server that crashed before its journal held them would lose them for good
    (found by the chaos campaign: a SIGKILLed server lost a batch the restore had
    counted)."""
    return connect(
        opts.uri,
        timeout=opts.timeout,
        stall_timeout=opts.stall_timeout,
        retryWrites=False,
        **durable_writes(opts.uri),
    )
