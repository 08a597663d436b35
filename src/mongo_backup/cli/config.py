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

from ..errors import ConfigError
from ..names import database_name_problem
from ..redact import authority, redact_uri

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
    from dotenv import dotenv_values  # ~2 ms of a start that has no .env file to read

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
    problem = database_name_problem(name)
    if problem:
        raise ConfigError(problem)


PASSWORD_VARIABLE = "MONGO_PASSWORD"
# Lower-case URI options that say the same as (or include) a flag's option.
_ALIASES = {
    "tls": {"ssl"},
    "tlsCAFile": {"sslcafile", "ssl_ca_certs"},
    "tlsCertificateKeyFile": {"sslpemkeyfile", "ssl_certfile"},
    "tlsAllowInvalidHostnames": {"tlsinsecure", "ssl_match_hostname"},
}
AUTH_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-1", "MONGODB-X509")


@dataclass(frozen=True)
class AuthOptions:
    """Authentication and TLS settings given as flags; they win over the URI's own."""

    username: str | None = None
    password: str | None = None
    auth_source: str | None = None
    auth_mechanism: str | None = None
    tls: bool = False
    tls_ca_file: str | None = None
    tls_certificate_key_file: str | None = None
    tls_allow_invalid_hostnames: bool = False

    def __repr__(self) -> str:  # the password must not show in a traceback
        return f"AuthOptions(username={self.username!r}, password=***, ...)"


def with_auth(uri: str, auth: AuthOptions) -> str:
    """``uri`` with ``auth`` written into it, so that one string carries everything the
    driver needs and every secret in it is known to :func:`~.redact.uri_secrets`."""
    scheme, _, rest = uri.strip().partition("://")
    written = authority(uri)
    userinfo, _, hosts = written.rpartition("@")
    tail = rest[len(written) :].removeprefix("/")
    if auth.username is not None:
        userinfo = urllib.parse.quote(auth.username, safe="")
        if auth.password is not None:
            userinfo += ":" + urllib.parse.quote(auth.password, safe="")
    path, question, query = tail.partition("?")
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True) if question else []
    wanted = {
        "authSource": auth.auth_source,
        "authMechanism": auth.auth_mechanism,
        "tls": "true" if auth.tls or auth.tls_ca_file or auth.tls_certificate_key_file else None,
        "tlsCAFile": auth.tls_ca_file,
        "tlsCertificateKeyFile": auth.tls_certificate_key_file,
        "tlsAllowInvalidHostnames": "true" if auth.tls_allow_invalid_hostnames else None,
    }
    given = {key.lower() for key, value in wanted.items() if value is not None}
    # The URI's older spellings of the same options would conflict with the flags'.
    for key, aliases in _ALIASES.items():
        if key.lower() in given:
            given.update(aliases)
    pairs = [(key, value) for key, value in pairs if key.lower() not in given]
    pairs += [(key, value) for key, value in wanted.items() if value is not None]
    query = urllib.parse.urlencode(pairs, safe="/:", quote_via=urllib.parse.quote)
    credentials = f"{userinfo}@" if userinfo else ""
    return f"{scheme}://{credentials}{hosts}/{path}" + (f"?{query}" if query else "")


READ_PREFERENCES = ("primary", "primaryPreferred", "secondary", "secondaryPreferred", "nearest")


def with_read_preference(uri: str, mode: str | None, tags: list[str]) -> str:
    """``uri`` with ``readPreference`` (and ``readPreferenceTags``, one per tag set, in
    order) set from the flags; the URI's own are replaced. ``tags`` need a mode other
    than primary, as the driver requires."""
    if mode is None and not tags:
        return uri
    if tags and mode in (None, "primary"):
        raise ConfigError("--read-preference-tags needs a --read-preference other than primary")
    base, question, query = uri.partition("?")
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True) if question else []
    pairs = [(k, v) for k, v in pairs if k.lower() not in ("readpreference", "readpreferencetags")]
    pairs.append(("readPreference", str(mode)))
    pairs += [("readPreferenceTags", tag) for tag in tags]
    if "/" not in base.split("://", 1)[-1]:
        base += "/"
    return base + "?" + urllib.parse.urlencode(pairs, safe="/:,", quote_via=urllib.parse.quote)


def password_from(
    *,
    flag: str | None,
    file: str | None,
    env: dict[str, str] | None = None,
    dotenv_path: str | os.PathLike[str] = ".env",
) -> str | None:
    """The password from ``--password-file``, ``--password``, ``MONGO_PASSWORD``
    (environment, then ``.env``), in that order; None if there is none."""
    if file is not None:
        try:
            lines = Path(file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"cannot read the password file {file}: {error}") from None
        if not lines or not lines[0]:
            raise ConfigError(f"the password file {file} is empty")
        return lines[0]
    if flag is not None:
        return flag
    environment = dict(os.environ) if env is None else env
    return environment.get(PASSWORD_VARIABLE) or _dotenv(Path(dotenv_path)).get(PASSWORD_VARIABLE)
