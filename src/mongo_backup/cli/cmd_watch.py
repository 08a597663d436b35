"""``mongo-backup watch``: continuous backups, an increment every ``--interval`` seconds.

SIGTERM and SIGINT close the open increment and end the watch with exit code 0; a second
signal interrupts at once (exit 130, the unfinished backup is resumed by the next
watch).
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from types import FrameType
from typing import TYPE_CHECKING, Any

from .cmd_backup import add_backup_groups, add_destination_options, backup_options, byte_size
from .exits import exit_code_for
from .monitoring import Monitor, add_monitoring_options
from .options import add_connection_options, duration

if TYPE_CHECKING:
    from ..backup.watch import Cycle, WatchResult


def add_parser(commands: Any, parent: argparse.ArgumentParser, epilog: str) -> None:
    parser = commands.add_parser(
        "watch",
        parents=[parent],
        epilog=epilog,
        help="back up continuously: a full backup, then an increment every interval",
        description="Take a full backup (or continue the newest one in OUT_DIR), then follow "
        "the database's change stream and close an increment every --interval seconds, so "
        "that restore --until can bring back any second of the covered window. Needs a "
        "replica set or sharded cluster. SIGTERM or Ctrl-C closes the open increment and "
        "exits 0.",
    )
    add_connection_options(parser, "database to back up (default: $MONGO_DB, then .env)")
    group = parser.add_argument_group("schedule", "how often increments and full backups close")
    group.add_argument(
        "--interval",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="close an increment this often (default: 60)",
    )
    group.add_argument(
        "--max-increment-bytes",
        type=byte_size,
        metavar="BYTES",
        help="close an increment early once its changes reach this size (suffixes KB, MB, GB)",
    )
    group.add_argument(
        "--full-every",
        type=duration,
        metavar="DURATION",
        help="start a new chain with a full backup this often, e.g. 7d or 36h "
        "(default: never; short chains restore faster)",
    )
    add_backup_groups(parser, resume=False)
    add_destination_options(parser)
    add_monitoring_options(parser)
    parser.set_defaults(handler=run)


def _report(cycle: Cycle, monitor: Monitor, quiet: bool) -> None:
    monitor.cycle(cycle)
    if cycle.result is not None and not quiet:
        print(cycle.result.location, flush=True)  # stdout: each archive as it closes


def run(args: argparse.Namespace) -> WatchResult:
    # Imported here: a command loads its own core alone (see exits._READINGS).
    from ..backup.watch import WatchOptions, run_watch

    options = WatchOptions(
        backup=backup_options(args),
        interval=args.interval,
        max_increment_bytes=args.max_increment_bytes,
        full_every=args.full_every,
        retry_wait=min(5.0, args.interval),
    )
    monitor = Monitor.from_args(args, "watch", options.backup.db)
    stop = threading.Event()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def on_signal(number: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt  # asked twice: stop now
        stop.set()

    in_main = threading.current_thread() is threading.main_thread()
    if in_main:
        for sig in previous:
            signal.signal(sig, on_signal)
    try:
        result = run_watch(options, stop, lambda cycle: _report(cycle, monitor, args.json))
    except BaseException as error:
        monitor.failed(error)
        raise
    finally:
        if in_main:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    if args.json:
        print(json.dumps({**result.to_json(), "exit_code": exit_code_for(result)}))
    return result
