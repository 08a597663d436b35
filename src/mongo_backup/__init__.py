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

from ._version import __version__
from .backup.options import BackupOptions, BackupResult
from .backup.run import backup_database, run_backup
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
from .location.catalog import StoredBackup
from .location.prune import PruneOptions, PruneResult, list_backups, run_prune
from .location.retention import Policy
from .restore.options import RestoreOptions
from .restore.run import RestoreResult, run_restore
from .verify.run import VerifyOptions, VerifyResult, run_verify

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
