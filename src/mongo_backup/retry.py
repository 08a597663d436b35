"""Which driver errors are worth a retry, and how long to wait before each.

A backup of tens of gigabytes must not die at 90% on one "connection reset". The reader
re-opens its cursor after the last ``_id`` it handed on (see
:mod:`mongo_backup.mongo.prefetch`) when the error is *transient*: the network, a
primary stepping down, a cursor the server dropped, an operation interrupted by a
shutdown or a state change. Errors that will not go away
by waiting (authentication, permissions, a bad query) fail at once.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import pymongo.errors

from .redact import scrub_text

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Server error codes that describe a passing state of the server or the network, not
# of the request. Names as in MongoDB's error_codes.yml.
TRANSIENT_CODES = frozenset(
    {
        6,  # HostUnreachable
        7,  # HostNotFound
        43,  # CursorNotFound
        89,  # NetworkTimeout
        91,  # ShutdownInProgress
        175,  # QueryPlanKilled
        189,  # PrimarySteppedDown
        237,  # CursorKilled
        # The snapshot a backup reads has left the server's history window: the reader
        # sets the snapshot aside (see MongoSource) and reads on from where it was.
        239,  # SnapshotTooOld
        246,  # SnapshotUnavailable
        262,  # ExceededTimeLimit
        9001,  # SocketException
        10107,  # NotWritablePrimary
        11600,  # InterruptedAtShutdown
        11601,  # Interrupted
        11602,  # InterruptedDueToReplStateChange
        13435,  # NotPrimaryNoSecondaryOk
        13436,  # NotPrimaryOrSecondary
    }
)


def is_transient(error: BaseException) -> bool:
    """True for errors that a fresh cursor, a moment later, may well not meet."""
    if isinstance(error, pymongo.errors.ConnectionFailure):
        return True  # network errors, timeouts, no primary (AutoReconnect and kin)
    if isinstance(error, pymongo.errors.PyMongoError) and (
        error.has_error_label("RetryableError")
        or error.has_error_label("ResumableChangeStreamError")
    ):
        return True
    if isinstance(error, pymongo.errors.OperationFailure):
        return error.code in TRANSIENT_CODES
    return False


@dataclass(frozen=True)
class RetryPolicy:
    """At most ``retries`` attempts after a failure, waiting ``base_delay`` x 2^n
    (capped at ``max_delay``, with up to 25% jitter so that parallel readers do not
    come back at the same instant). The count starts again after a batch is read."""

    retries: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0

    def delay(self, attempt: int) -> float:
        """The wait before retry number ``attempt`` (1-based)."""
        delay = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return float(delay * (1 + random.random() / 4))


NO_RETRIES = RetryPolicy(retries=0)


def retried(
    what: str, function: Callable[[], T], policy: RetryPolicy, secrets: Sequence[str] = ()
) -> T:
    """``function()``, called again after a transient driver fault, at most
    ``policy.retries`` times, each logged; the last fault, or the first that will not
    pass, is raised as it is. Only for a call that may run twice."""
    attempt = 0
    while True:
        try:
            return function()
        except pymongo.errors.PyMongoError as error:
            if not is_transient(error) or attempt >= policy.retries:
                raise
            attempt += 1
            delay = policy.delay(attempt)
            text = driver_error_text(error, list(secrets))
            message = "%s: %s; retry %d of %d in %.1f s"
            logger.warning(message, what, text, attempt, policy.retries, delay)
            time.sleep(delay)


# pymongo's text of a socket timeout: "HOST:PORT: timed out (configured timeouts:
# socketTimeoutMS: 2000.0ms, ...)".
_STALL = re.compile(r"^(\S+): timed out \(configured timeouts: socketTimeoutMS: ([\d.]+)ms")


# A write concern error: the write was applied, but may still roll back.
UNCONFIRMED = "applied, but not confirmed by the write concern (it may roll back)"


def driver_error_text(error: BaseException, secrets: list[str]) -> str:
    """One line of text about a driver error, credentials removed."""
    details = getattr(error, "details", None)
    more, unconfirmed = 0, isinstance(error, pymongo.errors.WriteConcernError)
    if isinstance(error, pymongo.errors.BulkWriteError) and isinstance(details, Mapping):
        # A bulk write's details hold lists, not one errmsg: tell the first refusal.
        refused, concern = details.get("writeErrors", []), details.get("writeConcernErrors", [])
        unconfirmed = bool(concern) and not refused
        refusals = [*refused, *concern]
        details, more = (refusals[0], len(refusals) - 1) if refusals else (None, 0)
    if isinstance(details, Mapping) and details.get("errmsg"):  # also raw BSON replies
        # The server's own message and code name, not the driver's dump of the reply.
        text = (str(details["errmsg"]).strip().splitlines() or [type(error).__name__])[0]
        if details.get("codeName"):
            text += f" ({details['codeName']})"
        if more:
            text += f" (and {more} more)"
        if unconfirmed:  # the server's words say what it waited for, not what it means
            text = f"{UNCONFIRMED}: {text}"
    else:
        text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        stalled = _STALL.search(text)
        if isinstance(error, pymongo.errors.NetworkTimeout) and stalled:
            # A read that got no byte within the stall timeout: say so plainly.
            host, ms = stalled.group(1), float(stalled.group(2))
            text = f"stalled: no answer from {host} for {ms / 1000:g} s"
        # A selection timeout lists every server's state after the reason; keep the reason.
        text = text.split(" (configured timeouts")[0].split(", Timeout: ")[0]
    if len(text) > 300:
        text = text[:297] + "..."
    return scrub_text(text, secrets)
