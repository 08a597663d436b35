"""Exit codes: the one place that turns what a command returned or raised into one.

    0    success
    1    failure (every MongoBackupError but the two below; a damaged backup on verify)
    2    missing or invalid configuration, usage error (ConfigError, argparse)
    3    finished, but some collections, documents or changes failed (the result says
         which): a backup or restore that is not ``complete``
    130  interrupted (Ctrl-C, SIGINT)

Cores never choose exit codes: they return results (``complete``, ``ok``) and raise
errors of the tree in :mod:`mongo_backup.errors`, whose classes name their code.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, TypeAlias

from ..errors import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PARTIAL,
    MongoBackupError,
)

if TYPE_CHECKING:
    from ..backup.options import BackupResult
    from ..backup.watch import WatchResult
    from ..location.status import StatusReport
    from ..restore.run import RestoreResult
    from ..verify.run import VerifyResult

HELP = (
    "exit codes: 0 success, 1 failure, 2 missing/invalid configuration or usage, "
    "3 done but some collections or documents failed, 130 interrupted"
)

# What a command handler returns: a core's result, a plain verdict, or nothing (success).
Outcome: TypeAlias = (
    "BackupResult | RestoreResult | VerifyResult | WatchResult | StatusReport | bool | None"
)


def _finished(result: Any) -> int:  # a backup, a restore
    return EXIT_OK if result.complete else EXIT_PARTIAL


def _watched(result: Any) -> int:  # the last cycle closed the window, or not
    if result.complete:
        return EXIT_OK
    return EXIT_PARTIAL if result.last and result.last.result else EXIT_FAILURE


def _checked(result: Any) -> int:  # a verify, a status
    return EXIT_OK if result.ok else EXIT_FAILURE


# The result classes, by module and name, and how each reads. They are looked up among
# the loaded modules, not imported: an outcome can only be of a loaded module's class,
# and importing them all would load every command's core at each start (20-25 ms of CPU).
_READINGS = (
    ("backup.options", "BackupResult", _finished),
    ("restore.result", "RestoreResult", _finished),
    ("backup.watch", "WatchResult", _watched),
    ("verify.run", "VerifyResult", _checked),
    ("location.status", "StatusReport", _checked),
)


def exit_code_for(outcome: Outcome) -> int:
    """The exit code of a command that returned ``outcome``."""
    for module, name, reading in _READINGS:
        loaded = sys.modules.get(f"mongo_backup.{module}")
        cls = getattr(loaded, name, None)
        if cls is not None and isinstance(outcome, cls):
            return reading(outcome)
    if outcome is False:
        return EXIT_FAILURE
    return EXIT_OK


def with_exit_code(result: BackupResult | RestoreResult) -> dict[str, object]:
    """A result's JSON report with the exit code the command ends with."""
    return {**result.to_json(), "exit_code": exit_code_for(result)}


def exit_code_for_error(error: BaseException) -> int:
    """The exit code of a command that raised ``error``."""
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(error, MongoBackupError):
        return error.exit_code
    return EXIT_FAILURE
