"""The MongoDB edge: connecting, listing what a database holds, and reading raw batches.

Contracts:
- :func:`connect` returns a client that has reached a server, or raises
  :class:`ConnectionFailed` within the server selection timeout; no message it raises
  carries credentials.
- :meth:`MongoSource.intents` lists the database's namespaces as :class:`Intent`
  objects (mongo-tools' word): name, type, options, indexes and UUID, as the server
  reports them, converted to canonical Extended JSON values so the manifest keeps every
  type exactly.
- :meth:`MongoSource.raw_batches` yields each server batch of a collection scan as one
  ``bytes`` object of concatenated BSON documents, never decoded into Python objects,
  with the ``_id`` of its last document when the scan is in ``_id`` order. A background
  thread fetches the next batch while the caller converts the current one, and rides
  out transient faults (:mod:`.prefetch`).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from re import Pattern
from typing import Any, TypeVar

import pymongo
import pymongo.errors
from bson import json_util
from bson.json_util import CANONICAL_JSON_OPTIONS
from bson.regex import Regex
from bson.timestamp import Timestamp
from pymongo import MongoClient
from pymongo.client_session import ClientSession

from ..errors import MongoBackupError
from ..retry import RetryPolicy, driver_error_text, retried
from .deployment import DeploymentDatabase, local_name
from .prefetch import IdKey, id_key_of, id_key_value, prefetched, resumable, split_batch
from .raw_batches import find_raw_batches

logger = logging.getLogger(__name__)

# System collections hold server state, not user data, and the server refuses writes
# to most of them on restore. system.js holds the user's stored functions: keep it.
KEPT_SYSTEM_COLLECTIONS = {"system.js"}
# Sampled _id values per range when a collection is split: enough that ranges come
# out within a few percent of each other.
SAMPLES_PER_PART = 100
UNKNOWN_DOCUMENT_BYTES = 1024
SNAPSHOT_GONE_CODES = {239, 246}  # SnapshotTooOld, SnapshotUnavailable

T = TypeVar("T")


def to_extjson(value: Any) -> Any:
    """A BSON value as plain JSON data in canonical Extended JSON (lossless)."""
    return json.loads(json_util.dumps(value, json_options=CANONICAL_JSON_OPTIONS))


def from_extjson(value: Any) -> Any:
    """The inverse of :func:`to_extjson`: JSON data back to BSON-typed Python values."""
    return json_util.loads(json.dumps(value), json_options=CANONICAL_JSON_OPTIONS)


@dataclass(frozen=True)
class CollectionSize:
    bytes: int = 0
    known: bool = False  # reported by the server, not guessed from the count
    average: int = 0  # bytes per document, 0 if not reported


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

    @property
    def ordered(self) -> bool:
        """True when the collection can be read in ``_id`` order through its ``_id``
        index, and so continued after a given ``_id`` (resume, retries, ranges).
        Timeseries and clustered collections have no such index to hint."""
        if self.type != "collection" or "clusteredIndex" in self.options:
            return False
        return any(list(index.get("key", {})) == ["_id"] for index in self.indexes)


class MongoSource:
    """Reads one database. ``secrets`` are scrubbed from every error it raises."""

    def __init__(
        self,
        client: MongoClient[Any],
        db_name: str,
        secrets: list[str],
        policy: RetryPolicy | None = None,
        server: dict[str, Any] | None = None,
        databases: DeploymentDatabase | None = None,
    ) -> None:
        self.client = client
        # What server_info found, when the caller already asked this client (a watch
        # asks once per connection, not once per increment).
        self.server = server
        self.read_from: set[str] = set()  # "host:port" of every member a cursor read
        # Metadata reads (buildInfo, listings, sizes, samples) ride out transient faults
        # as the document reads do: a reset or a stall at the wrong moment must not end
        # a backup that would have read everything a moment later.
        self.policy = policy or RetryPolicy()
        # Several databases (db_name ALL_DATABASES): collections named by namespace.
        self.db = client[db_name] if databases is None else databases
        self.db_name = db_name
        self.secrets = secrets
        # Read every collection at this cluster time (read concern "snapshot"), until
        # the server says it no longer holds it (then ``snapshot_lost``: the reads go on
        # at the latest data, and the backup captures the changes instead).
        self.snapshot_at: Timestamp | None = None
        self.snapshot_lost = False

    def retrying(self, what: str, function: Callable[[], T]) -> T:
        """``function()``, a read without side effects, retried after transient faults."""
        try:
            return retried(what, function, self.policy, self.secrets)
        except pymongo.errors.PyMongoError as error:
            text = driver_error_text(error, self.secrets)
            raise MongoBackupError(f"{what}: {text}") from None

    def server_info(self) -> dict[str, Any]:
        if self.server is None:
            self.server = self._server_info()
        return self.server

    def _server_info(self) -> dict[str, Any]:
        build = self.retrying("buildInfo", lambda: self.client.admin.command("buildInfo"))
        hello = self.retrying("hello", lambda: self.client.admin.command("hello"))
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
        listed = self.retrying("listCollections", lambda: list(self.db.list_collections()))
        wanted = set(include or [])
        unwanted = set(exclude or [])
        result: list[Intent] = []
        for info in listed:
            name = info["name"]
            local = local_name(self.db_name, name)
            if local.startswith("system.") and local not in KEPT_SYSTEM_COLLECTIONS:
                continue
            if (wanted and name not in wanted) or name in unwanted:
                continue
            kind = info.get("type", "collection")
            uuid = info.get("info", {}).get("uuid")
            indexes: list[dict[str, Any]] = []
            if kind != "view":
                indexes = self.retrying(f"listIndexes on {name!r}", self._index_lister(name))
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
        return lambda: [dict(index) for index in self.db[name].list_indexes()]

    def estimated_count(self, name: str) -> int:
        try:
            return int(self.db[name].estimated_document_count())
        except pymongo.errors.PyMongoError:
            return 0  # only used for progress bars and ordering

    def sizes(self, names: list[str], counts_wanted: bool) -> dict[str, CollectionSize]:
        """:meth:`size_bytes` of every collection, side by side. A server that keeps no
        sizes (the first answer says) scans each collection to count it, a second for
        14 MiB on SecantusDB: the others stay unknown unless ``counts_wanted`` (an asked
        split threshold then splits on a guess from the count)."""
        if not names:
            return {}
        first = self.size_bytes(names[0])
        if not first.known and not counts_wanted:
            return {names[0]: first, **{name: CollectionSize() for name in names[1:]}}
        with ThreadPoolExecutor(min(8, len(names)), thread_name_prefix="sizes") as pool:
            rest = dict(zip(names[1:], pool.map(self.size_bytes, names[1:]), strict=True))
        return {names[0]: first, **rest}

    def size_bytes(self, name: str) -> CollectionSize:
        """About how many bytes a collection's documents take, whether the server said
        so or it is a guess from the count, and the average document size (0: unknown).

        ``$collStats`` storage statistics come from the storage engine's metadata on
        MongoDB (no scan; the ``collStats`` command is deprecated). A server that reports
        a count but no sizes is assumed to hold :data:`UNKNOWN_DOCUMENT_BYTES` per
        document: the figure only orders the work and decides where to split."""
        try:
            stats: dict[str, Any] = next(
                self.db[name].aggregate([{"$collStats": {"storageStats": {}}}]), {}
            )
        except pymongo.errors.PyMongoError:
            return CollectionSize()  # a view, or no $collStats (older servers): unknown
        storage = stats.get("storageStats", {})
        size, count = storage.get("size"), storage.get("count")
        average = storage.get("avgObjSize")
        average = int(average) if isinstance(average, int | float) and average > 0 else 0
        if isinstance(size, int | float) and size > 0:
            return CollectionSize(int(size), True, average)
        if isinstance(count, int | float):
            return CollectionSize(int(count) * UNKNOWN_DOCUMENT_BYTES, False, average)
        return CollectionSize()

    def split_points(self, name: str, parts: int) -> list[IdKey]:
        """Up to ``parts - 1`` ``_id`` values that cut the collection into ranges of about
        equal document counts, from a random sample (cheap on MongoDB, unlike a
        ``$bucketAuto`` scan of the whole collection). In the order of the ``_id``
        index, without duplicates."""
        if parts < 2:
            return []
        pipeline = [{"$sample": {"size": parts * SAMPLES_PER_PART}}, {"$project": {"_id": 1}}]
        collection = self.db[name]

        def ordered_sample() -> list[IdKey]:
            values = [
                id_key_value(id_key_of(document))
                for batch in collection.aggregate_raw_batches(pipeline)
                for document in split_batch(batch)
            ]
            # Sorted by the server, which walks the _id index for it (the order the
            # ranges follow), not by Python, which knows no BSON order across types. A
            # regex in $in would match strings by pattern: leave it out.
            wanted = [value for value in values if not isinstance(value, Regex | Pattern)]
            cursor = find_raw_batches(
                collection, {"_id": {"$in": wanted}}, {"_id": 1}, sort=[("_id", 1)]
            )
            return [id_key_of(document) for batch in cursor for document in split_batch(batch)]

        sampled = self.retrying(f"sampling {name!r}", ordered_sample)
        if len(sampled) < parts:
            return []
        cuts: list[IdKey] = []
        for index in range(1, parts):
            key = sampled[index * len(sampled) // parts]
            if resumable(key) and (not cuts or key != cuts[-1]):
                cuts.append(key)
        return cuts

    def raw_batches(
        self,
        name: str,
        batch_size: int = 1000,
        *,
        ordered: bool = False,
        lower: IdKey | None = None,
        upper: IdKey | None = None,
        inclusive: bool = True,
        policy: RetryPolicy | None = None,
        query: dict[str, Any] | None = None,
    ) -> Generator[tuple[bytes, IdKey | None], None, None]:
        """Every document of a collection (or of the ``_id`` range [lower, upper)), a
        server batch at a time, as raw BSON bytes with the batch's last ``_id`` (when
        ``ordered``). ``inclusive=False`` leaves out the document equal to ``lower``.
        Transient faults are retried per ``policy`` (see :mod:`.prefetch`). ``query``
        keeps only the documents that match it (``--since-field``)."""
        if (lower is not None or upper is not None) and not ordered:
            raise ValueError("_id bounds need an ordered scan")
        collection = self.db[name]
        query = query or {}

        def open_cursor(start: IdKey | None, _inclusive: bool, batch_size: int) -> Iterator[bytes]:
            if self.snapshot_at is not None and not self.snapshot_lost:
                return self._in_snapshot(find, start, batch_size)
            return find(start, batch_size, None)

        def find(start: IdKey | None, batch_size: int, session: Any) -> Iterator[bytes]:
            return self._noting_member(plain_find(start, batch_size, session))

        def plain_find(start: IdKey | None, batch_size: int, session: Any) -> Any:
            if not ordered and query:
                # Few documents of many (--since-field): the server's plan, an index on
                # the field where there is one.
                return find_raw_batches(collection, query, batch_size=batch_size, session=session)
            if not ordered:
                # A plain collection scan, which servers never refuse and which needs
                # no index (MongoDB 9.0 refuses some unhinted full scans).
                return find_raw_batches(
                    collection,
                    query,
                    batch_size=batch_size,
                    hint=[("$natural", 1)],
                    session=session,
                )
            bounds: dict[str, Any] = {}
            if start is not None:
                bounds["min"] = {"_id": id_key_value(start)}
            if upper is not None:
                bounds["max"] = {"_id": id_key_value(upper)}
            # On MongoDB the _id index gives _id order without a sort stage, and bounds
            # on it work across BSON types (see prefetch). The explicit sort costs
            # nothing there and states the order this code relies on.
            return find_raw_batches(
                collection,
                query,
                batch_size=batch_size,
                hint=[("_id", 1)],
                sort=[("_id", 1)],
                session=session,
                **bounds,
            )

        yield from prefetched(
            open_cursor,
            f"reading {name!r}",
            self.secrets,
            ordered=ordered,
            start=lower,
            inclusive=inclusive,
            policy=policy,
            batch_size=batch_size,
        )

    def _noting_member(self, cursor: Any) -> Iterator[bytes]:
        """The cursor's batches; the member that answered goes into ``read_from``."""
        for batch in cursor:
            if cursor.address is not None:
                self.read_from.add("{}:{}".format(*cursor.address))
            yield batch

    def read_preference(self) -> dict[str, Any]:
        """The read preference the reads use ({"mode", "tags"}), for the manifest."""
        return dict(self.db.read_preference.document)

    @contextlib.contextmanager
    def snapshot_session(self) -> Iterator[ClientSession | None]:
        """A session reading at ``snapshot_at`` (None when there is no such time)."""
        if self.snapshot_at is None or self.snapshot_lost:
            yield None
            return
        with self.client.start_session(snapshot=True) as session:
            # The driver sends a snapshot session's time as atClusterTime; set before
            # the first read, it is the time every worker reads at.
            session._snapshot_time = self.snapshot_at  # type: ignore[assignment]
            yield session

    def _in_snapshot(
        self,
        find: Callable[[IdKey | None, int, Any], Iterator[bytes]],
        start: IdKey | None,
        batch_size: int,
    ) -> Iterator[bytes]:
        """A cursor read at ``snapshot_at``, in a snapshot session of its own (sessions
        are not shared between threads)."""
        with self.snapshot_session() as session:
            try:
                yield from find(start, batch_size, session)
            except pymongo.errors.OperationFailure as error:
                if error.code in SNAPSHOT_GONE_CODES:
                    if not self.snapshot_lost:
                        logger.warning(
                            "the server no longer holds the snapshot the backup reads "
                            "(%s): reading on at the latest data; the changes made "
                            "during the backup are captured instead",
                            error.details.get("codeName") if error.details else error.code,
                        )
                    self.snapshot_lost = True
                raise
