"""mongo-backup: lossless, streaming, verifiable logical backups of MongoDB databases.

The library API (the CLI is a thin layer over it)::

    from mongo_backup import backup, backup_database, restore, verify
    result = backup("mongodb://localhost", "shop", "backups")   # -> BackupResult
    path = backup_database(uri, "shop", "backup_dtb")           # the seed's API -> str
    report = verify(str(result.archive))                        # -> VerifyResult
    restored = restore(str(result.archive), uri, "shop_copy")   # -> RestoreResult

(The functions share their names with the modules that hold them; ``importlib`` gives
the modules where needed.)

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
from .restore import RestoreOptions, RestoreResult, restore
from .verify import VerifyResult, verify

__all__ = [
    "ArchiveError",
    "BackupOptions",
    "BackupResult",
    "ConfigError",
    "ConnectionFailed",
    "LineFormatError",
    "MongoBackupError",
    "RestoreOptions",
    "RestoreResult",
    "VerifyResult",
    "__version__",
    "backup",
    "backup_database",
    "restore",
    "verify",
]
