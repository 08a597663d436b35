"""mongo/users.py and restore/authz.py without a server: what a refusal may say, and which
records stay within the backup's databases."""

from __future__ import annotations

import pymongo.errors
import pytest

from mongo_backup.mongo.users import _refusal
from mongo_backup.restore.authz import Authz, planned_authz


def test_a_refused_insert_never_quotes_the_document() -> None:
    """pymongo's text of a BulkWriteError quotes the refused document: credentials."""
    op = {"user": "app", "credentials": {"SCRAM-SHA-256": {"storedKey": "S3CR3T-KEY"}}}
    error = pymongo.errors.BulkWriteError(
        {"writeErrors": [{"index": 0, "code": 2, "errmsg": "bad value", "op": op}]}
    )
    assert "S3CR3T" in str(error)  # what would have leaked
    assert _refusal(error, []) == "bad value (code 2)"


def test_a_missing_command_says_what_the_server_cannot_do() -> None:
    error = pymongo.errors.OperationFailure("no such command", code=59)
    assert "cannot take users with their password hashes" in _refusal(error, [])


SHOP = "shop"


@pytest.mark.parametrize(
    ("record", "reaches"),
    [
        ({"role": "r", "db": "admin"}, "admin"),
        ({"role": "r", "db": "other"}, "other"),
        ({"role": "r", "db": SHOP, "roles": [{"role": "root", "db": "admin"}]}, "admin"),
        ({"role": "r", "db": SHOP, "privileges": [{"resource": {"cluster": True}}]}, "the cluster"),
        ({"role": "r", "db": SHOP, "privileges": [{"resource": {"db": "", "collection": ""}}]},
         "every database"),
        ({"role": "r", "db": SHOP, "privileges": [{"resource": {"db": SHOP, "collection": ""}}],
          "roles": [{"role": "read", "db": SHOP}]}, None),
    ],
)  # fmt: skip
def test_records_reaching_outside_the_backup_are_refused(
    record: dict[str, object], reaches: str | None
) -> None:
    planned = planned_authz(Authz(roles=[record]), [SHOP])
    if reaches is None:
        assert planned.roles_created == 1 and planned.ok
    else:
        assert planned.roles_created == 0
        assert planned.problems == [
            f"role {record['db']}.r reaches {reaches}, outside the backup's databases: not restored"
        ]


def test_a_user_granted_a_role_elsewhere_is_refused() -> None:
    user = {"user": "x", "db": SHOP, "roles": [{"role": "root", "db": "admin"}]}
    planned = planned_authz(Authz(users=[user], roles=[]), [SHOP, "admin"])
    assert planned.users_restored == 0 and "reaches admin" in planned.problems[0]
