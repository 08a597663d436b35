"""``--config FILE`` and ``--profile NAME``: settings from a TOML file (standard ``tomllib``).

The file's top-level keys apply to every profile; ``[profile.NAME]`` tables add to and
override them. A key is a flag's long name without the dashes (``out-dir`` or
``out_dir``); it applies to each command that has that flag, and a key that no command
has is an error (a typo must not be ignored). Flags on the command line win over the file.
Values: a string, number or boolean as the flag takes it; a list for repeatable flags
(``encrypt-to``, ``collection``); ``true`` for switches. Positional arguments (the archive
of ``restore``, the location of ``list``) are not taken from the file.

Secrets: ``${NAME}`` in a string is replaced by the environment variable ``NAME`` (unset:
an error), and ``password-file`` names a file holding the password. A file that holds a
secret itself (a ``password``, or a ``uri`` with a password) must be private to its owner
(mode 0600 or stricter): anything else is refused with one line.
"""

from __future__ import annotations

import argparse
import os
import re
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..redact import redact_uri, uri_secrets

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
MAX_CONFIG_BYTES = 1 << 20
SECRET_KEYS = ("password",)


def add_config_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="read settings from this TOML file (see README: A configuration file)",
    )
    group.add_argument("--profile", metavar="NAME", help="the [profile.NAME] of --config to use")


def preparse(argv: Sequence[str]) -> tuple[Path | None, str | None]:
    """``--config`` and ``--profile`` wherever they are on the command line."""
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--config", type=Path)
    early.add_argument("--profile")
    known, _ = early.parse_known_args(list(argv))
    if known.profile is not None and known.config is None:
        raise ConfigError("--profile names a part of a --config file: give --config FILE")
    return known.config, known.profile


def load_settings(path: Path, profile: str | None) -> dict[str, Any]:
    """The file's settings for ``profile`` (top level, then the profile's table), with
    ``${VAR}`` expanded; ConfigError for anything wrong, naming the file."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
            mode = os.fstat(handle.fileno()).st_mode
    except OSError as error:
        raise ConfigError(f"cannot read the config file {path}: {error.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path} is larger than a config file can be")
    import tomllib  # only when there is a file to read: ~2 ms of every start otherwise

    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path} is not valid TOML: {error}") from None
    profiles = data.pop("profile", {})
    if not isinstance(profiles, dict) or not all(isinstance(v, dict) for v in profiles.values()):
        raise ConfigError(f"{path}: 'profile' must hold [profile.NAME] tables only")
    settings = {_key(k): v for k, v in data.items()}
    if profile is not None:
        if profile not in profiles:
            known = ", ".join(sorted(profiles)) or "none"
            raise ConfigError(f"{path} has no [profile.{profile}] (profiles: {known})")
        settings |= {_key(k): v for k, v in profiles[profile].items()}
    for key, value in settings.items():
        if isinstance(value, dict):
            raise ConfigError(f"{path}: {key} is a table; settings are values")
    _refuse_inline_secrets(path, mode, settings)
    return {key: _expand(value, path, key) for key, value in settings.items()}


def _key(name: str) -> str:
    return name.strip().replace("-", "_")


def _refuse_inline_secrets(path: Path, mode: int, settings: dict[str, Any]) -> None:
    inline = [key for key in SECRET_KEYS if settings.get(key)]
    uri = settings.get("uri")
    if isinstance(uri, str) and uri_secrets(_VARIABLE.sub("", uri)):
        inline.append("uri (with a password)")
    if inline and stat.S_IMODE(mode) & 0o077:
        raise ConfigError(
            f"{path} holds a secret ({', '.join(inline)}) but others may read it "
            f"(mode {stat.S_IMODE(mode):04o}): chmod 600 {path}, or use password_file or ${{VAR}}"
        )


def _expand(value: Any, path: Path, key: str) -> Any:
    if isinstance(value, list):
        return [_expand(item, path, key) for item in value]
    if not isinstance(value, str):
        return value

    def variable(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ConfigError(f"{path}: {key} uses ${{{name}}}, which is not set")
        return os.environ[name]

    return _VARIABLE.sub(variable, value)


def apply_settings(
    parser: argparse.ArgumentParser, argv: Sequence[str], settings: dict[str, Any], path: Path
) -> None:
    """Make ``settings`` the defaults of the command ``argv`` runs (flags still win)."""
    commands = _subparsers(parser)
    everywhere = {a.dest for sub in commands.values() for a in sub._actions}
    unknown = sorted(set(settings) - everywhere)
    if unknown:
        raise ConfigError(f"{path}: no command has a setting named {', '.join(unknown)}")
    name = next((arg for arg in argv if arg in commands), None)
    if name is None:
        return
    sub = commands[name]
    actions: dict[str, argparse.Action] = {}
    for action in sub._actions:  # the first flag of a setting (--compress, not --gzip)
        if action.option_strings:
            actions.setdefault(action.dest, action)
    defaults: dict[str, Any] = {}
    for key, value in settings.items():
        if key in actions:
            defaults[key] = _typed(actions[key], value, path)
    sub.set_defaults(**defaults)


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _typed(action: argparse.Action, value: Any, path: Path) -> Any:
    """``value`` as the flag would have produced it."""
    where = f"{path}: {action.dest}"
    if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
        if not isinstance(value, bool):
            raise ConfigError(f"{where} is a switch: true or false")
        return value
    if isinstance(action, argparse._CountAction):
        return int(value)
    if isinstance(action, argparse._AppendAction):
        items = value if isinstance(value, list) else [value]
        return [_converted(action, item, where) for item in items]
    if isinstance(value, list | bool):
        raise ConfigError(f"{where} takes one value")
    return _converted(action, value, where)


def _converted(action: argparse.Action, value: Any, where: str) -> Any:
    text = str(value)
    try:
        converted = action.type(text) if callable(action.type) else text
    except argparse.ArgumentTypeError as error:
        raise ConfigError(f"{where}: {error}") from None
    except (TypeError, ValueError):
        kind = getattr(action.type, "__name__", "")
        raise ConfigError(f"{where}: invalid {kind} value: {value!r}") from None
    if action.choices is not None and converted not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise ConfigError(f"{where}: {value!r} is not one of {choices}")
    return converted


def shown(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` with every secret hidden, for ``config show``."""
    visible: dict[str, Any] = {}
    for key, value in settings.items():
        if key in SECRET_KEYS:
            visible[key] = "***"
        elif key == "uri" and isinstance(value, str):
            visible[key] = redact_uri(value)
        else:
            visible[key] = value
    return visible
