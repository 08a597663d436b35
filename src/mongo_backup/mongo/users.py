"""Users and custom roles (``--users-and-roles``): read with their credentials, written back.

Reading: ``usersInfo`` with ``showCredentials`` and ``rolesInfo`` with ``showPrivileges``
(built-in roles left out), in each database the backup holds. The users come with their
SCRAM credentials (salted hashes, never a password), which is what lets a restored user
log in with the password it had.

Writing roles: ``createRole``; a role that exists is kept, or replaced with ``updateRole``
when ``replace`` (restore ``--drop``). Roles that inherit other custom roles are created
after them (rounds until nothing more can be created).

Writing users: ``createUser`` takes a password, not a hash, so a user cannot keep its
password through it. MongoDB takes users as mongorestore gives them: documents in the
``admin.system.users`` form in a temporary collection of ``admin``, merged by
``_mergeAuthzCollections``. A user that exists is left alone unless ``replace``: never a
silent password change. A server without that command (SecantusDB) or a restoring user
without the right to run it gets a problem line, not an exception: the data restore it
follows stands.

Contract: :func:`read_users_and_roles` raises :class:`MongoBackupError` (one line) when
the server refuses; :func:`restore_roles` and :func:`restore_users` never raise for a
refusal, they count and describe it in :class:`AuthzOutcome`.
"""

from __future__ import annotations

import secrets as random
from dataclasses import dataclass, field
from typing import Any

import pymongo.errors
from pymongo import MongoClient

from ..errors import MongoBackupError
from ..retry import driver_error_text

# The fields of a system.users document (what _mergeAuthzCollections reads).
_USER_FIELDS = (
    "userId",
    "user",
    "db",
    "credentials",
    "roles",
    "customData",
    "authenticationRestrictions",
)
# A role's authentication restrictions are left out: rolesInfo reports them merged with
# the inherited ones, not in the form createRole takes (said in the README).
_ROLE_FIELDS = ("privileges", "roles")


@dataclass
class AuthzOutcome:
    roles_created: int = 0
    roles_replaced: int = 0
    roles_kept: int = 0
    users_restored: int = 0
    users_kept: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def read_users_and_roles(
    client: MongoClient[Any], databases: list[str], secrets: list[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The users (with credentials) and custom roles defined in ``databases``."""
    users: list[dict[str, Any]] = []
    roles: list[dict[str, Any]] = []
    for name in databases:
        db = client[name]
        try:
            users.extend(
                db.command(
                    "usersInfo", 1, showCredentials=True, showAuthenticationRestrictions=True
                ).get("users", [])
            )
            found = db.command(
                "rolesInfo",
                1,
                showPrivileges=True,
                showBuiltinRoles=False,
            )
        except pymongo.errors.PyMongoError as error:
            raise MongoBackupError(
                f"--users-and-roles: cannot read the users and roles of {name!r}: "
                f"{driver_error_text(error, secrets)}"
            ) from None
        roles.extend(role for role in found.get("roles", []) if not role.get("isBuiltin"))
    return users, roles


def restore_roles(
    client: MongoClient[Any], roles: list[dict[str, Any]], replace: bool, secrets: list[str]
) -> AuthzOutcome:
    outcome = AuthzOutcome()
    pending = list(roles)
    while pending:
        refused: list[tuple[dict[str, Any], str]] = []
        for role in pending:
            problem = _restore_role(client, role, replace, outcome, secrets)
            if problem is not None:
                refused.append((role, problem))
        if len(refused) == len(pending):  # no progress: what is left cannot be created
            outcome.problems.extend(problem for _, problem in refused)
            break
        pending = [role for role, _ in refused]
    return outcome


def _restore_role(
    client: MongoClient[Any],
    role: dict[str, Any],
    replace: bool,
    outcome: AuthzOutcome,
    secrets: list[str],
) -> str | None:
    """Create (or replace) one role; the problem when the server refuses."""
    name, where = str(role.get("role", "")), str(role.get("db", ""))
    spec = {key: role[key] for key in _ROLE_FIELDS if role.get(key)}
    spec.setdefault("privileges", [])
    spec.setdefault("roles", [])
    try:
        db = client[where]  # InvalidName for a name no database has: refused below
        exists = bool(db.command("rolesInfo", name).get("roles"))
        if exists and not replace:
            outcome.roles_kept += 1
        elif exists:
            db.command("updateRole", name, **spec)
            outcome.roles_replaced += 1
        else:
            db.command("createRole", name, **spec)
            outcome.roles_created += 1
    except pymongo.errors.PyMongoError as error:
        return f"role {where}.{name} not restored: {driver_error_text(error, secrets)}"
    return None


def restore_users(
    client: MongoClient[Any], users: list[dict[str, Any]], replace: bool, secrets: list[str]
) -> AuthzOutcome:
    outcome = AuthzOutcome()
    if not users:
        return outcome
    try:
        existing = {
            (user["db"], user["user"])
            for name in sorted({str(user.get("db", "")) for user in users})
            for user in client[name].command("usersInfo", 1).get("users", [])
        }
    except pymongo.errors.PyMongoError as error:
        outcome.problems.append(f"users not restored: {driver_error_text(error, secrets)}")
        return outcome
    todo = [u for u in users if replace or (u.get("db"), u.get("user")) not in existing]
    outcome.users_kept = len(users) - len(todo)
    if todo:
        _merge_users(client, todo, outcome, secrets)
    return outcome


def _merge_users(
    client: MongoClient[Any],
    users: list[dict[str, Any]],
    outcome: AuthzOutcome,
    secrets: list[str],
) -> None:
    temp = client.admin[f"mongo_backup_users_{random.token_hex(6)}"]
    documents = [
        {"_id": f"{user.get('db')}.{user.get('user')}"}
        | {key: user[key] for key in _USER_FIELDS if key in user}
        for user in users
    ]
    try:
        temp.insert_many(documents)
        client.admin.command(
            "_mergeAuthzCollections", tempUsersCollection=temp.full_name, db="", drop=False
        )
        outcome.users_restored = len(users)
    except pymongo.errors.PyMongoError as error:
        text = driver_error_text(error, secrets)
        if isinstance(error, pymongo.errors.OperationFailure) and error.code == 59:
            text = "this server cannot take users with their password hashes (" + text + ")"
        outcome.problems.append(f"{len(users)} users not restored: {text}")
    finally:
        try:
            temp.drop()
        except pymongo.errors.PyMongoError as error:  # it holds password hashes: say so
            outcome.problems.append(
                f"drop {temp.full_name} by hand (it holds the users' password hashes): "
                f"{driver_error_text(error, secrets)}"
            )
