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

from ..backup.options import BackupResult
from ..backup.watch import WatchResult
from ..errors import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PARTIAL,
    MongoBackupError,
)
from ..location.status import StatusReport
from ..restore.run import RestoreResult
from ..verify.run import VerifyResult

HELP = (
    "exit codes: 0 success, 1 failure, 2 missing/invalid configuration or usage, "
    "3 done but some collections or documents failed, 130 interrupted"
)

# What a command handler returns: a core's result, a plain verdict, or nothing (success).
Outcome = BackupResult | RestoreResult | VerifyResult | WatchResult | StatusReport | bool | None


def exit_code_for(outcome: Outcome) -> int:
    """The exit code of a command that returned ``outcome``."""
    if isinstance(outcome, BackupResult | RestoreResult):
        return EXIT_OK if outcome.complete else EXIT_PARTIAL
    if isinstance(outcome, WatchResult):  # the last cycle closed the window, or not
        if outcome.complete:
            return EXIT_OK
        return EXIT_PARTIAL if outcome.last and outcome.last.result else EXIT_FAILURE
    if isinstance(outcome, VerifyResult | StatusReport):
        return EXIT_OK if outcome.ok else EXIT_FAILURE
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
