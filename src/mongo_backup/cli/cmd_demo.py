"""``mongo-backup demo``: the whole job on an embedded server, nothing to set up."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(commands: Any, parent: argparse.ArgumentParser, epilog: str) -> None:
    parser = commands.add_parser(
        "demo",
        parents=[parent],
        epilog=epilog,
        help="back up, verify and restore a demo database on an embedded server",
        description="Start an embedded SecantusDB server on a free port with a temporary "
        "store, load a small realistic data set, back it up, verify the archive, restore it "
        "into a scratch database, compare, and print a summary.",
    )
    parser.add_argument("--out-dir", default="demo-backups", help="where the demo archive goes")
    parser.add_argument(
        "--documents", type=int, default=2000, help="orders to generate (default 2000)"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> bool:
    from .demo import run_demo

    return run_demo(args.out_dir, args.documents, quiet=args.quiet)
