"""Option groups that several commands share."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
import urllib.parse
from pathlib import Path

from ..errors import ConfigError
from ..names import namespace_pattern
from ..redact import uri_secrets, userinfo
from .config import (
    AUTH_MECHANISMS,
    AuthOptions,
    ConnectionSettings,
    password_from,
    resolve_connection,
    with_auth,
)

logger = logging.getLogger(__name__)


def add_connection_options(
    parser: argparse.ArgumentParser, db_help: str, several: bool = False
) -> argparse._ArgumentGroup:
    """--uri, --db and the authentication and TLS flags; the connection group, returned.
    ``several``: --db may be given more than once (a backup of several databases)."""
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--uri",
        "--mongo-uri",
        dest="uri",
        metavar="URI",
        help="MongoDB connection string (default: $MONGO_URI, then .env)",
    )
    names = ("--db", "--mongo-db", "-d")
    if several:
        group.add_argument(*names, dest="db", action="append", metavar="NAME", help=db_help)
    else:
        group.add_argument(*names, dest="db", metavar="NAME", help=db_help)
    group.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="give up on an unreachable server after this long (default: 30)",
    )
    group.add_argument(
        "--stall-timeout",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="a server that sends nothing for this long mid-operation is a transient fault: "
        "reads are retried from where they were, a restore stops for --resume "
        "(default: 120)",
    )
    auth = parser.add_argument_group(
        "authentication and TLS (each may also be written in the URI; flags win)"
    )
    auth.add_argument("--username", "-u", metavar="USER", help="user to authenticate as")
    auth.add_argument(
        "--password-file",
        metavar="FILE",
        help="read the password from the first line of FILE (else $MONGO_PASSWORD, "
        "else a prompt on a terminal)",
    )
    auth.add_argument(
        "--password", metavar="PASSWORD", help="the password (shows in the process list: avoid)"
    )
    auth.add_argument("--auth-source", metavar="DB", help="database that holds the user")
    auth.add_argument("--auth-mechanism", choices=AUTH_MECHANISMS, help="default: negotiated")
    auth.add_argument("--tls", action="store_true", help="connect with TLS")
    auth.add_argument("--tls-ca-file", metavar="FILE", help="CA certificates to trust (PEM)")
    auth.add_argument(
        "--tls-certificate-key-file",
        metavar="FILE",
        help="client certificate and key (PEM), for X.509 authentication or mutual TLS",
    )
    auth.add_argument(
        "--tls-allow-invalid-hostnames",
        action="store_true",
        help="accept a server certificate issued for another host name",
    )
    return group


def connection_from(args: argparse.Namespace, require_db: bool = True) -> ConnectionSettings:
    settings = resolve_connection(args.uri, args.db, require_db=require_db)
    auth = auth_from(args, settings.uri)
    if auth == AuthOptions():
        return settings
    uri = with_auth(settings.uri, auth)
    secrets = getattr(args, "secrets", None)
    if isinstance(secrets, list):  # shared with the log formatter (see main.run_cli)
        secrets.extend(uri_secrets(uri))
        secrets.sort(key=len, reverse=True)
    return ConnectionSettings(uri, settings.db)


def auth_from(args: argparse.Namespace, uri: str) -> AuthOptions:
    """The flags' authentication settings, with the password found where it should be."""
    if args.password is not None:
        logger.warning(
            "a password on the command line shows in the process list; "
            "prefer --password-file or MONGO_PASSWORD"
        )
    written = userinfo(uri)  # credentials already in the URI
    password = None
    needs_password = (args.username is not None or written) and (
        args.auth_mechanism != "MONGODB-X509"
    )
    if needs_password and not (args.username is None and ":" in written):
        password = password_from(flag=args.password, file=args.password_file)
        if password is None:
            password = _prompt(args.username)
    return AuthOptions(
        username=(
            args.username
            if args.username is not None or password is None
            else urllib.parse.unquote(written.partition(":")[0])
        ),
        password=password,
        auth_source=args.auth_source,
        auth_mechanism=args.auth_mechanism,
        tls=args.tls,
        tls_ca_file=args.tls_ca_file,
        tls_certificate_key_file=args.tls_certificate_key_file,
        tls_allow_invalid_hostnames=args.tls_allow_invalid_hostnames,
    )


def _prompt(username: str | None) -> str:
    if not sys.stdin.isatty():
        raise ConfigError(
            f"no password for user {username or '(from the URI)'!r}: use --password-file or "
            "set MONGO_PASSWORD (no terminal to ask on)"
        )
    try:
        import getpass  # with termios, pwd and grp: only for the prompt

        return getpass.getpass(f"password for {username or 'the URI user'}: ")
    except (EOFError, KeyboardInterrupt):
        raise ConfigError("no password given") from None


def add_collection_filters(
    parser: argparse.ArgumentParser, title: str = "collections", description: str | None = None
) -> argparse._ArgumentGroup:
    """--collection and --exclude-collection in a group of their own, returned so that a
    command can add what else belongs with them."""
    group = parser.add_argument_group(title, description)
    group.add_argument(
        "--collection",
        "-c",
        action="append",
        default=[],
        metavar="NAME",
        help="only this collection (repeatable)",
    )
    group.add_argument(
        "--exclude-collection",
        action="append",
        default=[],
        metavar="NAME",
        help="skip this collection (repeatable)",
    )
    group.add_argument(
        "--ns-include",
        "--nsInclude",
        action="append",
        default=[],
        type=ns_pattern,
        metavar="DB.COLL",
        help="only the namespaces matching this pattern, * a wildcard: shop.order* "
        "(repeatable; one that matches nothing is an error)",
    )
    group.add_argument(
        "--ns-exclude",
        "--nsExclude",
        action="append",
        default=[],
        type=ns_pattern,
        metavar="DB.COLL",
        help="skip the namespaces matching this pattern (repeatable)",
    )
    return group


def ns_pattern(text: str) -> str:
    try:
        namespace_pattern(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def duration(text: str) -> dt.timedelta:
    """An argument type: ``30d``, ``12h``, ``1w2d`` (see location/retention.py)."""
    from ..location.retention import parse_duration  # the command line loads no cores

    try:
        return parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_source_options(parser: argparse.ArgumentParser) -> None:
    """--identity and --endpoint-url, for commands that read an archive from anywhere."""
    group = parser.add_argument_group("archives in storage or encrypted")
    group.add_argument(
        "--identity",
        type=Path,
        metavar="FILE",
        help="age identity file (AGE-SECRET-KEY-1...) or SSH private key, to decrypt "
        "a .age archive",
    )
    group.add_argument(
        "--endpoint-url",
        metavar="URL",
        help="S3-compatible endpoint when SOURCE is an s3:// URL (MinIO, Ceph, ...)",
    )


def add_database_options(group: argparse._ArgumentGroup) -> None:
    """backup's choice of databases beyond --db, and what else of them it takes."""
    group.add_argument(
        "--all-databases",
        action="store_true",
        help="every database but admin, config and local, into one archive (the default "
        "without --db and $MONGO_DB)",
    )
    group.add_argument(
        "--include-admin",
        action="store_true",
        help="with all databases, admin's collections too (never its users and roles)",
    )
    group.add_argument(
        "--users-and-roles",
        "--dumpDbUsersAndRoles",
        action="store_true",
        help="also the users (with their password hashes) and custom roles of the "
        "databases backed up, in a member of their own; encrypt such archives "
        "(--encrypt-to)",
    )
