"""Writes that count only once the write concern confirms them.

A server may apply a write and still answer with a ``writeConcernError``: the majority
did not acknowledge it in time, or the primary stepped down while it waited. Such a
write may roll back, so a restore must not count it as done. pymongo raises for it in
its collection methods, but not in ``Database.command`` (which also sends no write
concern of its own), nor in the reply of a plain ``insert`` command.

Contracts:
- :func:`raise_unconfirmed` raises :class:`pymongo.errors.WriteConcernError` (the
  server's own details) when a reply, or a ``BulkWriteError``'s details, holds a write
  concern error; :func:`~mongo_backup.retry.driver_error_text` tells any such error as
  "applied, but not confirmed by the write concern (it may roll back): ...". A
  step-down's codes are transient (:func:`~mongo_backup.retry.is_transient`): the caller
  may send the write again.
- :func:`confirmed_command` runs a command with ``write_concern`` and raises the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pymongo.errors
from pymongo.database import Database
from pymongo.write_concern import WriteConcern

from ..retry import NO_RETRIES, RetryPolicy, retried


def raise_unconfirmed(reply: Mapping[str, Any] | None) -> None:
    """Raise for the write concern error in ``reply`` (a command's reply, or a bulk
    write's details with their ``writeConcernErrors`` list), if it holds one."""
    if not reply:
        return
    error = reply.get("writeConcernError")
    if error is None:
        errors = reply.get("writeConcernErrors") or []
        error = errors[0] if errors else None
    if error is None:
        return
    details = dict(error)
    raise pymongo.errors.WriteConcernError(
        str(details.get("errmsg") or "write concern error"), details.get("code"), details
    )


def confirmed_command(
    db: Database[Any],
    write_concern: WriteConcern,
    command: Mapping[str, Any],
    policy: RetryPolicy = NO_RETRIES,
    secrets: Sequence[str] = (),
) -> dict[str, Any]:
    """``db.command(command)`` (a mapping whose first key names the command) with
    ``write_concern`` (unless it is the server's default), raising when the server could
    not confirm it. A transient fault (a step-down while the server waited) sends it
    again per ``policy``: give one only to a command that may run twice."""
    if not write_concern.is_server_default:
        command = {**command, "writeConcern": write_concern.document}

    def confirmed() -> dict[str, Any]:
        reply: dict[str, Any] = db.command(dict(command))
        raise_unconfirmed(reply)
        return reply

    return retried(next(iter(command)), confirmed, policy, secrets)
