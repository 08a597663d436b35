"""The project's exceptions, each with the exit code the CLI turns it into.

    MongoBackupError (exit 1)            base class: everything the tool raises on purpose
    ├── ConfigError (exit 2)             missing or invalid configuration, bad usage
    ├── ConnectionFailed (exit 1)        server unreachable, authentication refused
    ├── OutputError (exit 1)             the backup cannot be written (disk full, read-only)
    ├── ArchiveError (exit 1)            damaged, foreign or hostile archive / folder
    │   └── LineFormatError (exit 1)     a line that is not a document (names file and line)
    ├── RestoreConflict (exit 3)         (reserved) data written, but some documents refused
    └── Interrupted (exit 130)           Ctrl-C / SIGINT

Messages are one line and never carry credentials: code that builds them from driver
exceptions passes the text through :func:`mongo_backup.redact.scrub_text` first.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_PARTIAL = 3
EXIT_INTERRUPTED = 130


class MongoBackupError(Exception):
    """Base class; ``exit_code`` is what the CLI exits with."""

    exit_code = EXIT_FAILURE


class ConfigError(MongoBackupError):
    exit_code = EXIT_CONFIG


class ConnectionFailed(MongoBackupError):
    exit_code = EXIT_FAILURE


class OutputError(MongoBackupError):
    exit_code = EXIT_FAILURE


class ArchiveError(MongoBackupError):
    exit_code = EXIT_FAILURE


class LineFormatError(ArchiveError):
    def __init__(self, member: str, line: int, problem: str) -> None:
        super().__init__(f"{member}, line {line}: {problem}")
        self.member = member
        self.line = line
        self.problem = problem


class Interrupted(MongoBackupError):
    exit_code = EXIT_INTERRUPTED
