"""``mongo-backup config show``: the settings a ``--config`` file gives a profile, secrets
hidden (the URI's password, ``password``), ``${VAR}`` already expanded."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import ConfigError
from .profiles import shown


def add_parser(commands: Any, parent: argparse.ArgumentParser, epilog: str) -> None:
    parser = commands.add_parser(
        "config",
        parents=[parent],
        epilog=epilog,
        help="show the settings of a --config file's profile (secrets hidden)",
        description="Print the settings --config FILE --profile NAME resolves to: the file's "
        "top-level keys, then the profile's, with ${VAR} expanded and secrets hidden. "
        "Flags given to a command win over these.",
    )
    parser.add_argument("action", choices=("show",), help="show: print the resolved settings")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    if args.config is None:
        raise ConfigError("config show needs --config FILE (and usually --profile NAME)")
    settings = shown(args.settings)
    if args.json:
        print(json.dumps(settings, ensure_ascii=False, default=str))
        return
    print(f"# {args.config}" + (f", profile {args.profile}" if args.profile else ""))
    for key, value in sorted(settings.items()):
        print(f"{key} = {json.dumps(value, ensure_ascii=False, default=str)}")
