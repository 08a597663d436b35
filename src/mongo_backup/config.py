"""Connection settings from flags, the environment and a ``.env`` file.

Precedence, as the seed script's guide describes it: a command-line flag wins over the
process environment, which wins over ``.env`` in the working directory. ``.env`` is only
read (python-dotenv), never written, and never copied into ``os.environ``.
"""

from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from dotenv import dotenv_values

from .errors import ConfigError
from .redact import redact_uri

URI_VARIABLE = "MONGO_URI"
DB_VARIABLE = "MONGO_DB"


@dataclass(frozen=True)
class ConnectionSettings:
    uri: str
    db: str

    def __repr__(self) -> str:  # never show credentials, even in a debugger or traceback
        return f"ConnectionSettings(uri={redact_uri(self.uri)!r}, db={self.db!r})"


def _dotenv(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def database_from_uri(uri: str) -> str | None:
    """The default database named in the URI's path (``mongodb://host/NAME``), if any."""
    rest = uri.split("://", 1)[-1]
    path = rest.split("/", 1)[1] if "/" in rest else ""
    name = urllib.parse.unquote(path.split("?", 1)[0])
    return name or None


def resolve_connection(
    uri: str | None,
    db: str | None,
    *,
    env: dict[str, str] | None = None,
    dotenv_path: str | os.PathLike[str] = ".env",
    require_db: bool = True,
) -> ConnectionSettings:
    """Settle the URI and database name, or raise :class:`ConfigError` (exit 2)."""
    environment = dict(os.environ) if env is None else env
    from_file = _dotenv(Path(dotenv_path))

    def pick(flag: str | None, name: str) -> str | None:
        for value in (flag, environment.get(name), from_file.get(name)):
            if value:
                return value
        return None

    final_uri = pick(uri, URI_VARIABLE)
    if not final_uri:
        raise ConfigError(
            f"no MongoDB connection string: pass --mongo-uri or set {URI_VARIABLE} "
            "(environment or .env)"
        )
    if not final_uri.startswith(("mongodb://", "mongodb+srv://")):
        raise ConfigError(
            f"invalid connection string {redact_uri(final_uri)!r}: "
            "it must start with mongodb:// or mongodb+srv://"
        )
    final_db = pick(db, DB_VARIABLE) or database_from_uri(final_uri)
    if require_db and not final_db:
        raise ConfigError(
            f"no database name: pass --mongo-db or set {DB_VARIABLE} (environment or .env)"
        )
    if final_db:
        validate_database_name(final_db)
    return ConnectionSettings(uri=final_uri, db=final_db or "")


def validate_database_name(name: str) -> None:
    bad = set('/\\. "$\x00') & set(name)
    if bad or len(name.encode()) > 63:
        raise ConfigError(f"invalid database name {name!r}")
