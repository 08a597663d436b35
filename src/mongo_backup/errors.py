"""The project's exceptions: one tree, each class with the exit code the CLI turns it into.

    MongoBackupError (exit 1)            base class: everything the tool raises on purpose
    ├── ConfigError (exit 2)             missing or invalid configuration, bad usage
    ├── ConnectionFailed (exit 1)        server unreachable, authentication refused
    ├── OutputError (exit 1)             the backup cannot be written (disk full, read-only)
    ├── ArchiveError (exit 1)            damaged, foreign or hostile archive / folder
    │   └── LineFormatError (exit 1)     a line that is not a document (names file and line)
    ├── CheckpointError (exit 1)         a working folder's checkpoint is missing or damaged
    ├── DestinationError (exit 1)        a store could not do what was asked
    │   ├── ObjectNotFound               open/copy of a key that holds nothing
    │   ├── InvalidKey                   a key that could leave the location
    │   └── StoreFailed / TooLarge       (inside destinations.storeio: a refused chunk, a
    │                                     stream past the part limit; re-raised as above)
    ├── LockedError (exit 1)             another live run holds the location's lock
    ├── HistoryLost (exit 1)             the server no longer holds the changes needed
    ├── RestartNeeded (exit 1)           a scan hit a transient fault and cannot continue
    │                                     where it stopped (retried from the start inside)
    ├── EmbeddedServerError (exit 1)     the demo's embedded server could not start
    └── Interrupted (exit 130)           Ctrl-C / SIGINT

Exit code 3 (partial: a collection failed, documents refused) is not an error: the
backup or restore finished and says so in its result; ``cli/exits.py`` turns results
and errors into exit codes, the one place that does.

Messages are one line and never carry credentials: code that builds them from driver
exceptions passes the text through :func:`mongo_backup.redact.scrub_text` first.

Ground layer: imports nothing from the project.
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
    """The server cannot be reached, or refused the credentials."""


class OutputError(MongoBackupError):
    """The backup cannot be written (disk full, read-only, permissions)."""


class ArchiveError(MongoBackupError):
    """A damaged, foreign or hostile archive or folder."""


class LineFormatError(ArchiveError):
    def __init__(self, member: str, line: int, problem: str) -> None:
        super().__init__(f"{member}, line {line}: {problem}")
        self.member = member
        self.line = line
        self.problem = problem


class CheckpointError(MongoBackupError):
    """A checkpoint that is missing, damaged or written by something else."""


class DestinationError(MongoBackupError):
    """A destination could not do what was asked. The message is one line, names the
    location and the key, and never carries credentials."""


class ObjectNotFound(DestinationError):
    """open() or copy() of a key that holds no object."""


class InvalidKey(DestinationError):
    """A key that could reach outside the location, or that the stores would not keep
    as written."""


class LockedError(MongoBackupError):
    """Another live run holds the location's lock."""


class HistoryLost(MongoBackupError):
    """The server no longer holds the change history a capture needs."""


class RestartNeeded(MongoBackupError):
    """A transient fault in a scan that cannot continue where it stopped."""


class EmbeddedServerError(MongoBackupError):
    """The embedded server could not be started."""


class Interrupted(MongoBackupError):
    exit_code = EXIT_INTERRUPTED
