"""The MongoDB edge: connecting, listing what a database holds, and reading raw batches.

Contracts:
- :func:`connect` returns a client that has reached a server, or raises
  :class:`ConnectionFailed` within the server selection timeout; no message it raises
  carries credentials.
- :meth:`MongoSource.intents` lists the database's namespaces as :class:`Intent`
  objects (mongo-tools' word): name, type, options, indexes and UUID, as the server
  reports them, converted to canonical Extended JSON values so the manifest keeps every
  type exactly.
- :meth:`MongoSource.raw_batches` yields each server batch of a full collection scan as
  one ``bytes`` object of concatenated BSON documents, never decoded into Python objects.
  A background thread fetches the next batch while the caller converts the current one.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pymongo
import pymongo.errors
from bson import json_util
from bson.json_util import CANONICAL_JSON_OPTIONS
from pymongo import MongoClient

from .errors import ConnectionFailed, MongoBackupError
from .redact import hosts_of, scrub_text, uri_secrets

logger = logging.getLogger(__name__)

APP_NAME = "mongo-backup"
# System collections hold server state, not user data, and the server refuses writes
# to most of them on restore. system.js holds the user's stored functions: keep it.
KEPT_SYSTEM_COLLECTIONS = {"system.js"}
# Batches fetched ahead of the converter: about three of 1,000 ordinary documents.
PREFETCH_BYTES = 4 * 1024 * 1024

T = TypeVar("T")


def to_extjson(value: Any) -> Any:
    """A BSON value as plain JSON data in canonical Extended JSON (lossless)."""
    return json.loads(json_util.dumps(value, json_options=CANONICAL_JSON_OPTIONS))


def from_extjson(value: Any) -> Any:
    """The inverse of :func:`to_extjson`: JSON data back to BSON-typed Python values."""
    return json_util.loads(json.dumps(value), json_options=CANONICAL_JSON_OPTIONS)


@dataclass
class Intent:
    """One namespace to back up or restore."""

    name: str
    type: str  # "collection", "view" or "timeseries"
    options: dict[str, Any] = field(default_factory=dict)
    indexes: list[dict[str, Any]] = field(default_factory=list)
    uuid: str | None = None

    @property
    def has_data(self) -> bool:
        return self.type != "view"


def driver_error_text(error: BaseException, secrets: list[str]) -> str:
    """One line of text about a driver error, credentials removed."""
    details = getattr(error, "details", None)
    if isinstance(error, pymongo.errors.OperationFailure) and isinstance(details, dict):
        # The server's own message and code name, not the driver's dump of the reply.
        text = str(details.get("errmsg") or error)
        if details.get("codeName"):
            text += f" ({details['codeName']})"
    else:
        text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        # A selection timeout lists every server's state after the reason; keep the reason.
        text = text.split(" (configured timeouts")[0].split(", Timeout: ")[0]
    if len(text) > 300:
        text = text[:297] + "..."
    return scrub_text(text, secrets)


def connect(uri: str, *, timeout: float = 30.0, **client_options: Any) -> MongoClient[Any]:
    """A connected client; :class:`ConnectionFailed` if no server answers in time."""
    secrets = uri_secrets(uri)
    # Timeouts written in the URI win over the defaults; keyword arguments would
    # override them.
    lowered = uri.lower()
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
        client.admin.command("ping")
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


class MongoSource:
    """Reads one database. ``secrets`` are scrubbed from every error it raises."""

    def __init__(self, client: MongoClient[Any], db_name: str, secrets: list[str]) -> None:
        self.client = client
        self.db = client[db_name]
        self.db_name = db_name
        self.secrets = secrets

    def _call(self, what: str, function: Callable[[], T]) -> T:
        try:
            return function()
        except pymongo.errors.PyMongoError as error:
            raise MongoBackupError(f"{what}: {driver_error_text(error, self.secrets)}") from None

    def server_info(self) -> dict[str, Any]:
        build = self._call("buildInfo", lambda: self.client.admin.command("buildInfo"))
        hello = self._call("hello", lambda: self.client.admin.command("hello"))
        if hello.get("msg") == "isdbgrid":
            topology = "sharded"
        elif hello.get("setName"):
            topology = "replicaSet"
        else:
            topology = "standalone"
        return {
            "version": str(build.get("version", "unknown")),
            "topology": topology,
            "set_name": hello.get("setName"),
        }

    def intents(
        self, include: list[str] | None = None, exclude: list[str] | None = None
    ) -> list[Intent]:
        """The namespaces to back up, sorted by name, filtered by include/exclude lists."""
        listed = self._call("listCollections", lambda: list(self.db.list_collections()))
        wanted = set(include or [])
        unwanted = set(exclude or [])
        result: list[Intent] = []
        for info in listed:
            name = info["name"]
            if name.startswith("system.") and name not in KEPT_SYSTEM_COLLECTIONS:
                continue
            if (wanted and name not in wanted) or name in unwanted:
                continue
            kind = info.get("type", "collection")
            uuid = info.get("info", {}).get("uuid")
            indexes: list[dict[str, Any]] = []
            if kind != "view":
                indexes = self._call(f"listIndexes on {name!r}", self._index_lister(name))
            result.append(
                Intent(
                    name=name,
                    type=kind,
                    options=to_extjson(info.get("options", {})),
                    indexes=[to_extjson(dict(index)) for index in indexes],
                    uuid=str(uuid.as_uuid()) if uuid is not None else None,
                )
            )
        return sorted(result, key=lambda intent: intent.name)

    def _index_lister(self, name: str) -> Callable[[], list[dict[str, Any]]]:
        collection = self.db[name]
        return lambda: [dict(index) for index in collection.list_indexes()]

    def estimated_count(self, name: str) -> int:
        try:
            return int(self.db[name].estimated_document_count())
        except pymongo.errors.PyMongoError:
            return 0  # only used for progress bars and ordering

    def raw_batches(self, name: str, batch_size: int = 1000) -> Iterator[bytes]:
        """Every document of a collection, a server batch at a time, as raw BSON bytes."""

        def open_cursor() -> Iterator[bytes]:
            # Hint $natural: a plain collection scan, which servers never refuse (MongoDB
            # 9.0 refuses some unhinted full scans) and which needs no index.
            return iter(
                self.db[name].find_raw_batches({}, batch_size=batch_size, hint=[("$natural", 1)])
            )

        yield from _prefetched(open_cursor, f"reading {name!r}", self.secrets)


_DONE = object()


class _ByteBoundedHandoff:
    """A queue bounded by bytes, not items: documents of 16 KiB make 16 MiB batches,
    and a count bound would let memory grow with document size. At least one item is
    always accepted, so no batch is too big to pass."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.items: collections.deque[object] = collections.deque()
        self.bytes = 0
        self.changed = threading.Condition()

    def put(self, item: object, stop: threading.Event) -> bool:
        size = len(item) if isinstance(item, bytes) else 0
        with self.changed:
            while self.items and self.bytes + size > self.limit:
                if stop.is_set():
                    return False
                self.changed.wait(0.2)
            self.items.append(item)
            self.bytes += size
            self.changed.notify_all()
        return True

    def get(self) -> object:
        with self.changed:
            while not self.items:
                self.changed.wait()
            item = self.items.popleft()
            self.bytes -= len(item) if isinstance(item, bytes) else 0
            self.changed.notify_all()
        return item


def _prefetched(
    open_cursor: Callable[[], Iterator[bytes]], what: str, secrets: list[str]
) -> Iterator[bytes]:
    """Run a cursor in a thread and hand its batches over through a bounded queue.

    The bound gives back-pressure: at most PREFETCH_BYTES of batches wait in memory.
    The driver releases the GIL while it waits on the socket, so fetching overlaps the
    caller's work. Closing the generator stops the thread.
    """
    handoff = _ByteBoundedHandoff(PREFETCH_BYTES)
    stop = threading.Event()

    def put(item: object) -> bool:
        return handoff.put(item, stop)

    def produce() -> None:
        cursor: Any = None
        try:
            cursor = open_cursor()
            for batch in cursor:
                if not put(batch):
                    return
            put(_DONE)
        except BaseException as error:  # handed to the consumer, raised there
            put(error)
        finally:
            close = getattr(cursor, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name=f"prefetch {what}", daemon=True)
    thread.start()
    try:
        while True:
            item = handoff.get()
            if item is _DONE:
                return
            if isinstance(item, pymongo.errors.PyMongoError):
                raise MongoBackupError(f"{what}: {driver_error_text(item, secrets)}") from item
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, bytes)
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)
