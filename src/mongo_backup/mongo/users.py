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
silent password change. The merge never overwrites a user (mongod logs the duplicate and
reports success), so one replaced is dropped first, once the command has proven to exist
on the empty temporary; the restore's own login is never replaced; and every user sent is
read back, a missing one or one with other credentials being a problem. A server without
that command (SecantusDB) or a restoring user without the right to run it gets a problem
line, not an exception: the data restore it follows stands. No refusal quotes a user's
document (a BulkWriteError's text does).

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
        existing = _users_of(client, users)
        me = {
            (user.get("db"), user.get("user"))
            for user in client.admin.command("connectionStatus")["authInfo"]["authenticatedUsers"]
        }
    except pymongo.errors.PyMongoError as error:
        outcome.problems.append(f"users not restored: {_refusal(error, secrets)}")
        return outcome
    todo = []
    for user in users:
        key = (user.get("db"), user.get("user"))
        if key in existing and (not replace or key in me):
            outcome.users_kept += 1  # the restore's own login is never replaced under it
        else:
            todo.append(user)
    if todo:
        _merge_users(client, todo, [u for u in todo if _key(u) in existing], outcome, secrets)
    return outcome


def _key(user: dict[str, Any]) -> tuple[Any, Any]:
    return user.get("db"), user.get("user")


def _users_of(client: MongoClient[Any], users: list[dict[str, Any]]) -> dict[Any, Any]:
    """{(db, user): credentials} of the server's users in the databases of ``users``."""
    return {
        (found["db"], found["user"]): found.get("credentials")
        for name in sorted({str(user.get("db", "")) for user in users})
        for found in client[name].command("usersInfo", 1, showCredentials=True).get("users", [])
    }


def _refusal(error: BaseException, secrets: list[str]) -> str:
    """The server's reason, without the document: a BulkWriteError's text quotes the
    refused document, credentials and all."""
    if isinstance(error, pymongo.errors.BulkWriteError):
        first = (error.details.get("writeErrors") or [{}])[0]
        return f"{first.get('errmsg', 'refused')} (code {first.get('code')})"
    text = driver_error_text(error, secrets)
    if isinstance(error, pymongo.errors.OperationFailure) and error.code == 59:
        text = f"this server cannot take users with their password hashes ({text})"
    return text


def _merge_users(
    client: MongoClient[Any],
    users: list[dict[str, Any]],
    replaced: list[dict[str, Any]],
    outcome: AuthzOutcome,
    secrets: list[str],
) -> None:
    """``users`` through a temporary collection and _mergeAuthzCollections, ``replaced``
    (existing ones, with --drop) dropped first: the merge never overwrites a user
    (mongod logs the duplicate and goes on), and its drop mode would also remove the
    database's users the backup does not hold. The command is tried on the empty
    temporary first, so that a server without it loses no user to the drops."""
    temp = client.admin[f"mongo_backup_users_{random.token_hex(6)}"]
    documents = [
        {"_id": f"{user.get('db')}.{user.get('user')}"}
        | {key: user[key] for key in _USER_FIELDS if key in user}
        for user in users
    ]
    merge: dict[str, Any] = {
        "_mergeAuthzCollections": 1,
        "tempUsersCollection": temp.full_name,
        "db": "",
        "drop": False,
    }
    inserted = False
    try:
        client.admin.create_collection(temp.name)
        client.admin.command(merge)  # on the empty temporary: a probe
        temp.insert_many(documents)
        inserted = True
        for user in replaced:
            client[user["db"]].command("dropUser", user["user"])
        client.admin.command(merge)
    except pymongo.errors.PyMongoError as error:
        outcome.problems.append(f"{len(users)} users not restored: {_refusal(error, secrets)}")
        return
    finally:
        try:
            temp.drop()
        except pymongo.errors.PyMongoError as error:
            if inserted:  # it holds password hashes: say so
                outcome.problems.append(
                    f"drop {temp.full_name} by hand (it holds the users' password hashes): "
                    f"{_refusal(error, secrets)}"
                )
    _check_merged(client, users, outcome, secrets)


def _check_merged(
    client: MongoClient[Any],
    users: list[dict[str, Any]],
    outcome: AuthzOutcome,
    secrets: list[str],
) -> None:
    """Count the users the server now holds as sent: a user the merge could not insert
    is only in mongod's log, so read them back."""
    try:
        now = _users_of(client, users)
    except pymongo.errors.PyMongoError as error:
        outcome.problems.append(f"users sent, not read back: {_refusal(error, secrets)}")
        return
    for user in users:
        key = _key(user)
        if key not in now:
            outcome.problems.append(f"user {key[0]}.{key[1]} not restored (see the server's log)")
        elif now[key] != user.get("credentials"):
            outcome.problems.append(f"user {key[0]}.{key[1]} restored without its password")
        else:
            outcome.users_restored += 1
