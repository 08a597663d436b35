"""``restore --users-and-roles``: the users and custom roles of a backup's
``~users-and-roles.jsonl`` member (see :mod:`mongo_backup.backup.authz`), recreated
after the documents, into the databases they were defined in.

Roles first (a user's roles must exist), then users; both through
:mod:`mongo_backup.mongo.users`, which keeps what exists unless ``--drop`` (never a
silent password change) and turns every refusal into a problem line: the data restore
stands, and the restore ends incomplete (exit 3) with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import bson
import bson.errors

from ..archive.lines import read_documents
from ..archive.manifest import USERS_FILE
from ..errors import ArchiveError
from ..mongo.users import AuthzOutcome, restore_roles, restore_users


@dataclass
class Authz:
    """What the member holds; ``problem`` when it could not be read (it comes last in
    the archive: the documents are in by then, and stay)."""

    users: list[dict[str, Any]] = field(default_factory=list)
    roles: list[dict[str, Any]] = field(default_factory=list)
    problem: str | None = None


def read_authz_member(stream: Any) -> Authz:
    """The users and roles of the member ``stream`` (verified like any member)."""
    found = Authz()
    try:
        for number, raw in read_documents(stream, USERS_FILE):
            record = bson.decode(raw)
            if isinstance(record.get("user"), dict):
                found.users.append(record["user"])
            elif isinstance(record.get("role"), dict):
                found.roles.append(record["role"])
            else:
                raise ArchiveError(f"{USERS_FILE}: line {number} is neither a user nor a role")
    except (ArchiveError, bson.errors.BSONError) as error:
        return Authz(problem=f"users and roles not restored: {error}")
    return found


def _held(authz: Authz, databases: list[str]) -> tuple[Authz, list[str]]:
    """The records that stay within ``databases`` (the backup's, never admin), and a
    problem for each other one: an archive made for one database must not create an
    admin, nor a user of its own database granted a role on admin (``root``), nor a role
    whose privileges reach other databases."""
    held = set(databases) - {"admin"}
    kept = Authz()
    problems = []
    for kind, records, into in (
        ("role", authz.roles, kept.roles),
        ("user", authz.users, kept.users),
    ):
        for record in records:
            outside = _outside(record, held)
            if outside is None:
                into.append(record)
            else:
                problems.append(
                    f"{kind} {record.get('db')}.{record.get(kind)} reaches {outside}, "
                    "outside the backup's databases: not restored"
                )
    return kept, problems


def _outside(record: dict[str, Any], held: set[str]) -> str | None:
    """The first database (or resource) ``record`` names outside ``held``, if any."""
    named = [record.get("db")]
    for role in record.get("roles") or []:
        named.append(role.get("db") if isinstance(role, dict) else None)
    for privilege in record.get("privileges") or []:
        resource = privilege.get("resource") if isinstance(privilege, dict) else None
        if not isinstance(resource, dict) or "db" not in resource:
            return "the cluster"  # cluster or anyResource privileges
        named.append(resource["db"] or "every database")
    return next((str(db) for db in named if db not in held), None)


def planned_authz(authz: Authz, databases: list[str]) -> AuthzOutcome:
    """What a dry run reports: the roles and users it would create (those that exist are
    then kept, or replaced with --drop), and the records it would refuse."""
    if authz.problem is not None:
        return AuthzOutcome(problems=[authz.problem])
    wanted, foreign = _held(authz, databases)
    return AuthzOutcome(
        roles_created=len(wanted.roles), users_restored=len(wanted.users), problems=foreign
    )


def apply_authz(
    client: Any, authz: Authz, databases: list[str], replace: bool, secrets: list[str]
) -> AuthzOutcome:
    """Recreate the records of ``databases`` (see :func:`_held`): roles, then users."""
    if authz.problem is not None:
        return AuthzOutcome(problems=[authz.problem])
    wanted, foreign = _held(authz, databases)
    outcome = restore_roles(client, wanted.roles, replace, secrets)
    outcome.problems[:0] = foreign
    done = restore_users(client, wanted.users, replace, secrets)
    outcome.users_restored, outcome.users_kept = done.users_restored, done.users_kept
    outcome.problems.extend(done.problems)
    return outcome
