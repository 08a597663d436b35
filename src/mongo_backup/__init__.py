"""mongo-backup: lossless, streaming, verifiable logical backups of MongoDB databases.

The library API (the CLI is a thin layer over it)::

    from mongo_backup import backup, backup_database
    result = backup("mongodb://localhost", "shop", "backups")   # -> BackupResult
    path = backup_database(uri, "shop", "backup_dtb")           # the seed's API -> str

Libraries log through ``logging.getLogger("mongo_backup...")`` and add no handlers;
only the CLI configures logging.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .backup import BackupOptions, BackupResult, backup, backup_database
from .errors import (
    ArchiveError,
    ConfigError,
    ConnectionFailed,
    LineFormatError,
    MongoBackupError,
)

__all__ = [
    "ArchiveError",
    "BackupOptions",
    "BackupResult",
    "ConfigError",
    "ConnectionFailed",
    "LineFormatError",
    "MongoBackupError",
    "__version__",
    "backup",
    "backup_database",
]
