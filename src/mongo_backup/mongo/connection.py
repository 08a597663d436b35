"""Connecting to MongoDB: one client with the project's timeouts, checked by a first
ping that rides out transient faults, and the write concern that makes an acknowledged
write a durable one."""

from __future__ import annotations

import time
from typing import Any

import pymongo.errors
from pymongo import MongoClient

from ..errors import ConnectionFailed
from ..redact import hosts_of, uri_secrets
from ..retry import driver_error_text, is_transient

APP_NAME = "mongo-backup"


def connect(
    uri: str, *, timeout: float = 30.0, stall_timeout: float | None = None, **client_options: Any
) -> MongoClient[Any]:
    """A connected client; :class:`ConnectionFailed` if no server answers in time.

    ``stall_timeout``: an operation that receives no byte from the server for this long
    fails with ``NetworkTimeout``, a transient error that readers retry (re-opening their
    cursor). Without it a server or network path that stalls without closing the
    connection would hold a backup or restore forever."""
    secrets = uri_secrets(uri)
    # Timeouts written in the URI win over the defaults; keyword arguments would
    # override them.
    lowered = uri.lower()
    if stall_timeout is not None and "sockettimeoutms=" not in lowered:
        client_options.setdefault("socketTimeoutMS", int(stall_timeout * 1000))
    if "serverselectiontimeoutms=" not in lowered:
        client_options.setdefault("serverSelectionTimeoutMS", int(timeout * 1000))
    if "connecttimeoutms=" not in lowered:
        client_options.setdefault("connectTimeoutMS", int(min(timeout, 20) * 1000))
    try:
        client: MongoClient[Any] = MongoClient(uri, appname=APP_NAME, **client_options)
    except pymongo.errors.ConfigurationError as error:
        raise ConnectionFailed(
            f"invalid connection string: {driver_error_text(error, secrets)}"
        ) from None
    try:
        _first_ping(client, timeout)
    except pymongo.errors.OperationFailure as error:
        client.close()  # its monitor threads and sockets would outlive the failure
        raise ConnectionFailed(
            f"the server refused the connection: {driver_error_text(error, secrets)}"
        ) from None
    except pymongo.errors.PyMongoError as error:
        client.close()
        hosts = ", ".join(hosts_of(uri)) or "the server"
        raise ConnectionFailed(
            f"cannot reach {hosts} within {timeout:g} s: {driver_error_text(error, secrets)}"
        ) from None
    except BaseException:
        client.close()
        raise
    return client


def durable_writes(uri: str) -> dict[str, Any]:
    """Client options for writes acknowledged only once durable (``w: majority`` and
    journaled); a write concern written in the URI wins."""
    query = uri.split("?", 1)[1] if "?" in uri else ""
    given = {part.split("=", 1)[0].lower() for part in query.replace(";", "&").split("&")}
    if given & {"w", "journal", "wtimeoutms"}:
        return {}
    return {"w": "majority", "journal": True}


def _first_ping(client: MongoClient[Any], timeout: float) -> None:
    """Ping until the server answers; a transient fault (a reset, a stall, a server
    restarting) is tried again until ``timeout`` has passed since the first try."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.admin.command("ping")
            return
        except pymongo.errors.OperationFailure:
            raise
        except pymongo.errors.PyMongoError as error:
            if not is_transient(error) or time.monotonic() + 0.5 > deadline:
                raise
            time.sleep(0.5)
