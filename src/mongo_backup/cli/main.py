"""Entry point: builds the parser, configures logging, runs one command and turns what
it returned or raised into an exit code (through :mod:`.exits`, the one place that
chooses them; every command's help repeats the list).

Errors reach the user as one line on stderr; ``-v`` adds the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from .._version import __version__
from ..allocator import return_big_blocks_to_the_system
from ..errors import MongoBackupError
from ..redact import scrub_text, uri_secrets
from . import (
    cmd_backup,
    cmd_config,
    cmd_convert,
    cmd_demo,
    cmd_inspect,
    cmd_list,
    cmd_restore,
    cmd_status,
    cmd_verify,
    cmd_watch,
)
from .exits import HELP, Outcome, exit_code_for, exit_code_for_error
from .logs import configure_logging
from .profiles import add_config_options, apply_settings, load_settings, preparse

logger = logging.getLogger("mongo_backup.cli")

EXIT_CODES_HELP = HELP

# Each command module and the commands it adds, in the order --help lists them.
COMMANDS = {
    cmd_backup: ("backup",),
    cmd_watch: ("watch",),
    cmd_restore: ("restore",),
    cmd_verify: ("verify",),
    cmd_inspect: ("inspect",),
    cmd_list: ("list", "prune"),
    cmd_status: ("status",),
    cmd_convert: ("convert",),
    cmd_config: ("config",),
    cmd_demo: ("demo",),
}


def common_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("logging and progress")
    group.add_argument(
        "-v", "--verbose", action="count", default=0, help="more detail; shows tracebacks of errors"
    )
    group.add_argument(
        "-q", "--quiet", action="store_true", help="warnings and errors only, no progress"
    )
    group.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="format of log lines on stderr (default: text)",
    )
    add_config_options(parent.add_argument_group("configuration file"))
    return parent


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser; ``only``: with that command's subparser alone (what a
    run of it needs: building all of them is ~4 ms of every start)."""
    parser = argparse.ArgumentParser(
        prog="mongo-backup",
        description="Lossless, streaming, verifiable logical backups of MongoDB databases.",
        epilog=EXIT_CODES_HELP,
    )
    parser.add_argument("--version", action="version", version=f"mongo-backup {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parent = common_options()
    for module, names in COMMANDS.items():
        if only is None or only in names:
            module.add_parser(commands, parent, EXIT_CODES_HELP)
    return parser


def _command_of(arguments: list[str], config: Path | None) -> str | None:
    """The command a run names first, if the parser may be built for it alone: not for
    --help or --version (they list every command), a mistyped command (its error lists
    them), or a config file (its settings are checked against every command's)."""
    if config is not None or not arguments:
        return None
    first = arguments[0]
    return first if any(first in names for names in COMMANDS.values()) else None


def _secrets_of(args: argparse.Namespace) -> list[str]:
    secrets: list[str] = []
    for attribute in ("uri", "against_uri"):
        value = getattr(args, attribute, None)
        if value:
            secrets += uri_secrets(value)
    return secrets


def run_cli(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (tests call this in-process)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        config, profile = preparse(arguments)
        parser = build_parser(_command_of(arguments, config))
        settings = load_settings(config, profile) if config is not None else {}
        if config is not None:
            apply_settings(parser, arguments, settings, config)
    except MongoBackupError as error:  # before logging exists: the one line by hand
        print(f"mongo-backup: error: {error}", file=sys.stderr)
        return exit_code_for_error(error)
    args = parser.parse_args(arguments)
    args.settings = settings
    secrets = _secrets_of(args)
    # One list, shared with the log formatter: secrets a command learns while it runs
    # (a password from a file or the environment) are appended here and scrubbed at once.
    args.secrets = secrets
    verbosity = -1 if args.quiet else args.verbose
    configure_logging(verbosity, args.log_format, secrets)
    handler: Callable[[argparse.Namespace], Outcome] = args.handler
    try:
        return exit_code_for(handler(args))
    except KeyboardInterrupt as error:
        print("mongo-backup: interrupted", file=sys.stderr)
        return exit_code_for_error(error)
    except MongoBackupError as error:
        _report(error, args, secrets)
        return exit_code_for_error(error)
    except Exception as error:  # a bug or an unforeseen failure: still one clear line
        _report(error, args, secrets, unexpected=True)
        return exit_code_for_error(error)


def _report(
    error: BaseException, args: argparse.Namespace, secrets: list[str], unexpected: bool = False
) -> None:
    all_secrets = secrets
    text = scrub_text(
        str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__,
        all_secrets,
    )
    if unexpected:
        text = f"unexpected {type(error).__name__}: {text}"
    if args.verbose:
        logger.error("%s", text, exc_info=error)
    print(f"mongo-backup: error: {text}", file=sys.stderr)


def main() -> None:
    return_big_blocks_to_the_system()
    code = run_cli(sys.argv[1:])
    if sys.getprofile() is not None or sys.gettrace() is not None:
        sys.exit(code)  # a profiler or coverage writes its data at exit: let it
    # Otherwise leave at once. pymongo's exit handlers wait for its monitor threads (half
    # a second on every run, an eighth of a small backup's wall time); when run_cli
    # returns, every file is closed, every child process waited for and every client
    # closed, so interpreter shutdown has nothing left to do but flush the streams.
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        # A reader that went away, or a closed stream: nothing more can be said.
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)
