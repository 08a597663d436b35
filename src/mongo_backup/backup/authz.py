"""``backup --users-and-roles``: the users and custom roles of the backed-up databases,
as one member of the archive (``~users-and-roles.jsonl``, entry ``$users``).

They are read before any document (``mongo.users.read_users_and_roles``, called by
``backup.run``), so a user who may not read them learns it before anything is written
(the plan's folder is removed); the member is written at once, into the working
folder, and listed in the manifest with its checksum like any member. Each line is one
canonical Extended JSON document, ``{"role": {...}}`` (as ``rolesInfo`` gives it) or
``{"user": {...}}`` (as ``usersInfo`` with ``showCredentials`` gives it: SCRAM salts and
hashes, never a password). The users and roles of ``admin`` are the server's, never a
database's: they are not read (``--include-admin`` copies admin's collections alone).
So the archive holds credentials: the manifest says so
(``credentials: true``), ``inspect`` shows it, and the backup warns once at WARNING
unless the archive is encrypted (``--encrypt-to``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import bson

from ..archive.extjson import BatchEncoder
from ..archive.manifest import USERS_FILE, USERS_NAME, CollectionEntry
from ..archive.writer import MemberWriter

logger = logging.getLogger(__name__)


def write_authz_member(
    folder: Path,
    compress: str,
    keep_plain: bool,
    authz: tuple[list[dict[str, Any]], list[dict[str, Any]]],
    encrypted: bool,
) -> tuple[CollectionEntry, bool]:
    """The member of ``authz`` (users, roles) and whether it holds credentials."""
    users, roles = authz
    records = [{"role": role} for role in roles] + [{"user": user} for user in users]
    raw = b"".join(bson.encode(record) for record in records)
    text, count = BatchEncoder("canonical", False).encode(raw)
    writer = MemberWriter(folder, USERS_FILE, compress, keep_plain)
    try:
        writer.write(text)
        writer.close()
    except BaseException:
        writer.discard()
        raise
    credentials = any(user.get("credentials") for user in users)
    if credentials and not encrypted:
        logger.warning(
            "the archive holds the password hashes of %d users (--users-and-roles): keep "
            "it private, or encrypt it with --encrypt-to",
            len(users),
        )
    logger.info("users and roles: %d users, %d custom roles", len(users), len(roles))
    entry = CollectionEntry(
        name=USERS_NAME,
        type="users",
        file=USERS_FILE,
        count=count,
        bytes=writer.bytes,
        sha256=writer.sha256,
    )
    return entry, credentials
