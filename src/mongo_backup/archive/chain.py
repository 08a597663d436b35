"""Chains of backups: a full backup and the increments taken after it.

An incremental backup's manifest names its parent: the backup's id (its archive name
without suffix), the parent manifest's own SHA-256 (which covers every member's
checksum, so the link pins the parent's whole content) and the database. A chain is
kept in one folder (``OUT_DIR/backup_data``); restore, verify and inspect find each
parent there by id.

Contracts:
- :func:`find_base` returns the backup an increment continues: ``--base`` if given,
  else the newest archive of the same database in ``OUT_DIR/backup_data``.
- :func:`resolve_chain` returns the chain ending at an archive, full backup first, or
  raises :class:`ArchiveError` naming the first missing or mismatching link; it reads
  only manifests, so a broken chain is refused before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ArchiveError, ConfigError
from ..names import ARCHIVE_FOLDER, ARCHIVE_NAME, SUFFIXES
from .manifest import Manifest
from .reader import open_backup

MAX_CHAIN = 10_000


@dataclass
class Link:
    """One backup of a chain: where it is and what its manifest says."""

    path: Path
    manifest: Manifest

    @property
    def id(self) -> str:
        return self.manifest.backup_id or backup_id_of(self.path)


def backup_id_of(path: Path) -> str:
    """An archive's id: its file name without the archive suffix."""
    name = path.name.removesuffix(".age")
    for suffix in sorted(SUFFIXES.values(), key=len, reverse=True):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def read_manifest(path: Path) -> Manifest:
    with open_backup(path) as reader:
        return reader.manifest


def parent_link(base: Link) -> dict[str, Any]:
    """What an increment records of its parent."""
    assert base.manifest.checksum is not None
    return {
        "id": base.id,
        "manifest_sha256": base.manifest.checksum,
        "database": base.manifest.database,
    }


def _order(path: Path) -> tuple[str, int]:
    match = ARCHIVE_NAME.match(path.name)
    return (match.group(2), int(match.group(3) or 0)) if match else ("", 0)


def archives_in(folder: Path) -> list[Path]:
    """The archives in ``folder``, newest first (by the time in their names)."""
    if not folder.is_dir():
        return []
    found = [
        path
        for path in folder.iterdir()
        if ARCHIVE_NAME.match(path.name) and not path.name.endswith(".age") and path.is_file()
    ]
    return sorted(found, key=_order, reverse=True)


def find_base(out_dir: Path, db: str, base: Path | None) -> Link:
    """The backup an increment of database ``db`` continues; ConfigError if none."""
    if base is not None:
        if base.name.endswith(".age"):
            raise ConfigError(
                f"--base {base} is encrypted: increments of encrypted backups are not supported yet"
            )
        if not base.is_file():
            raise ConfigError(f"--base {base}: no such backup archive")
        link = Link(base, read_manifest(base))
        if link.manifest.database != db:
            raise ConfigError(
                f"--base {base} is a backup of database {link.manifest.database!r}, not {db!r}"
            )
        return link
    folder = out_dir / ARCHIVE_FOLDER
    encrypted = sorted(
        (p for p in folder.glob("backup_*.age") if ARCHIVE_NAME.match(p.name)),
        key=_order,
        reverse=True,
    )
    newest = archives_in(folder)
    if encrypted and (not newest or _order(encrypted[0]) > _order(newest[0])):
        raise ConfigError(
            f"the newest backup in {folder} is encrypted ({encrypted[0].name}): increments "
            "of encrypted backups are not supported yet; take a full backup"
        )
    for path in newest:
        try:
            manifest = read_manifest(path)
        except ArchiveError:
            continue  # not readable: not a base to build on
        if manifest.database == db:
            return Link(path, manifest)
    raise ConfigError(
        f"no backup of database {db!r} in {folder} to take an increment from: "
        "take a full backup first (or name one with --base; with --dest, keep the local "
        "copies with --keep-local)"
    )


def find_parent(child: Link) -> Link:
    """The parent of an increment, from the increment's folder; ArchiveError if it is
    missing or is not the backup the increment was taken from."""
    parent = child.manifest.parent
    assert parent is not None
    candidates = [child.path.parent / f"{parent['id']}{suffix}" for suffix in SUFFIXES.values()]
    found = [path for path in candidates if path.is_file()]
    if not found:
        raise ArchiveError(
            f"broken chain: {child.path.name} was taken after {parent['id']}, which is not "
            f"in {child.path.parent}"
        )
    link = Link(found[0], read_manifest(found[0]))
    if link.manifest.checksum != parent["manifest_sha256"]:
        raise ArchiveError(
            f"broken chain: {link.path} is not the backup {child.path.name} was taken after "
            "(its manifest checksum differs)"
        )
    if link.manifest.database != child.manifest.database:
        raise ArchiveError(
            f"broken chain: {link.path} is a backup of {link.manifest.database!r}, "
            f"not {child.manifest.database!r}"
        )
    return link


def resolve_chain(path: Path, manifest: Manifest | None = None) -> list[Link]:
    """The chain ending at ``path``: the full backup first, then each increment."""
    link = Link(path, manifest if manifest is not None else read_manifest(path))
    chain = [link]
    while link.manifest.kind == "incremental":
        if len(chain) > MAX_CHAIN:
            raise ArchiveError(f"{path}: the chain is longer than {MAX_CHAIN} backups (a loop?)")
        link = find_parent(link)
        if any(other.path.resolve() == link.path.resolve() for other in chain):
            raise ArchiveError(f"broken chain: {link.path} is its own ancestor")
        chain.append(link)
    chain.reverse()
    return chain
