"""mongo-backup: lossless, streaming, verifiable logical backups of MongoDB databases.

The library API (the CLI is a thin layer over it); everything named in ``__all__`` is
public, everything else is private and may change::

    from mongo_backup import BackupOptions, run_backup, run_restore, RestoreOptions
    result = run_backup(BackupOptions(uri="mongodb://localhost", db="shop"))
    path = backup_database(uri, "shop", "backup_dtb")           # the seed's API -> str
    report = run_verify(VerifyOptions(source=str(result.archive)))
    restored = run_restore(RestoreOptions(source=report.location, uri=uri, db="copy"))
    kept = run_prune(PruneOptions(location="backups", policy=Policy(last=7)))
    rows = list_backups("s3://bucket/prefix")

Layers (see ARCHITECTURE.md), each importing only those below it:

    cli/                       parse, report, exit codes
    backup/ restore/ verify/   the cores: compute and return results
    location/                  where backups live: transfer, catalog, retention, prune
    archive/                   the archive format
    mongo/  destinations/      the edges: MongoDB, the byte stores
    errors files names redact retry _version    the ground

Libraries log through ``logging.getLogger("mongo_backup...")`` and add no handlers;
only the CLI configures logging.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (
    ArchiveError,
    CheckpointError,
    ConfigError,
    ConnectionFailed,
    DestinationError,
    EmbeddedServerError,
    HistoryLost,
    Interrupted,
    LineFormatError,
    LockedError,
    MongoBackupError,
    OutputError,
)

# The cores load on first use: ``import mongo_backup.<anything>`` runs this file first, and
# the command line starts many times a day (cron, hooks, the fault campaign); a command
# should pay only for what it uses.
_LAZY = {
    "BackupOptions": ".backup.options",
    "BackupResult": ".backup.options",
    "backup_database": ".backup.run",
    "run_backup": ".backup.run",
    "StoredBackup": ".location.catalog",
    "PruneOptions": ".location.prune",
    "PruneResult": ".location.prune",
    "list_backups": ".location.prune",
    "run_prune": ".location.prune",
    "Policy": ".location.retention",
    "RestoreOptions": ".restore.options",
    "RestoreResult": ".restore.run",
    "run_restore": ".restore.run",
    "VerifyOptions": ".verify.run",
    "VerifyResult": ".verify.run",
    "run_verify": ".verify.run",
}

if TYPE_CHECKING:
    from .backup.options import BackupOptions, BackupResult
    from .backup.run import backup_database, run_backup
    from .location.catalog import StoredBackup
    from .location.prune import PruneOptions, PruneResult, list_backups, run_prune
    from .location.retention import Policy
    from .restore.options import RestoreOptions
    from .restore.run import RestoreResult, run_restore
    from .verify.run import VerifyOptions, VerifyResult, run_verify


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mongo_backup' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "ArchiveError",
    "BackupOptions",
    "BackupResult",
    "CheckpointError",
    "ConfigError",
    "ConnectionFailed",
    "DestinationError",
    "EmbeddedServerError",
    "HistoryLost",
    "Interrupted",
    "LineFormatError",
    "LockedError",
    "MongoBackupError",
    "OutputError",
    "Policy",
    "PruneOptions",
    "PruneResult",
    "RestoreOptions",
    "RestoreResult",
    "StoredBackup",
    "VerifyOptions",
    "VerifyResult",
    "__version__",
    "backup_database",
    "list_backups",
    "run_backup",
    "run_prune",
    "run_restore",
    "run_verify",
]
