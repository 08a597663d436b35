"""The manifest: what a backup holds, and the checksums that prove it is intact.

``manifest.json`` is the first member of every archive. It is plain JSON, readable by
people, and carries its own checksum (``manifest_sha256``: SHA-256 of the manifest's
canonical JSON form without that key), so a flipped bit in it is caught as surely as
one in a data file.

Loading is defensive: archives come from anywhere. :func:`parse_manifest` accepts only
the shape this module writes, bounded in size, with file names that cannot leave the
backup folder, and raises :class:`ArchiveError` for anything else.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields
from typing import Any

from ..errors import ArchiveError

# The member names are defined in names (the converter child needs them without this
# module); re-exported here, where readers look for them.
from ..names import ALL_DATABASES, is_safe_member_name
from ..names import MANIFEST_NAME as MANIFEST_NAME
from ..names import PLAN_NAME as PLAN_NAME

FORMAT_NAME = "mongo-backup"
FORMAT_VERSION = 1
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
MAX_COLLECTIONS = 100_000
# "changes": the change events a backup captured (see CHANGES_NAME), not a collection;
# "users": the users and custom roles of --users-and-roles (see USERS_NAME), neither.
COLLECTION_TYPES = ("collection", "view", "timeseries", "changes", "users")
NOT_COLLECTIONS = ("changes", "users")
# Collection names cannot hold "$", and no collection's file starts with "~" (see
# names.py): neither can collide with a collection's.
CHANGES_NAME = "$changes"
CHANGES_FILE = "~changes.jsonl"
USERS_NAME = "$users"
USERS_FILE = "~users-and-roles.jsonl"
KINDS = ("full", "incremental")
GUARANTEES = ("snapshot", "oplog", "none")
INCREMENT_MODES = ("changes", "field")


@dataclass
class CollectionEntry:
    name: str
    type: str
    file: str | None  # None for views: they hold no documents
    options: dict[str, Any] = field(default_factory=dict)
    indexes: list[dict[str, Any]] = field(default_factory=list)
    uuid: str | None = None
    count: int = 0
    bytes: int = 0
    sha256: str | None = None
    status: str = "ok"  # "ok" or "failed"
    error: str | None = None
    escaped: int = 0  # documents written as exact-bytes escape lines
    # --since-field: {"field": name, "value": Extended JSON} read before the export (the
    # next increment starts there), and the lower bound this increment used.
    watermark: dict[str, Any] | None = None
    since: dict[str, Any] | None = None

    @property
    def is_collection(self) -> bool:
        """A collection or view of the database (not captured changes, not users)."""
        return self.type not in NOT_COLLECTIONS

    @property
    def create_options(self) -> dict[str, Any]:
        """The options to create the collection with (the server's UUID is its own)."""
        return {k: v for k, v in self.options.items() if k != "uuid"}

    @property
    def secondary_indexes(self) -> list[dict[str, Any]]:
        """The index specs to build after the documents (``_id_`` comes with the
        collection; ``ns`` is not part of a spec on current servers)."""
        return [
            {k: v for k, v in index.items() if k != "ns"}
            for index in self.indexes
            if index.get("name") != "_id_"
        ]


@dataclass
class Manifest:
    database: str
    tool_version: str
    json_format: str
    pretty: bool
    compression: str
    started_at: str
    finished_at: str
    server: dict[str, Any]
    hosts: list[str]
    consistency: str = "none"  # one of GUARANTEES
    collections: list[CollectionEntry] = field(default_factory=list)
    kind: str = "full"
    backup_id: str | None = None  # the archive's name without suffix
    # The moment the data reflects: {"cluster_time": $timestamp, "resume_token": {...}}.
    point: dict[str, Any] | None = None
    # An increment's base: {"id", "manifest_sha256", "database"} of the previous backup.
    parent: dict[str, Any] | None = None
    # {"mode": "changes"|"field", "field", "from", "to", "deletes_captured"}
    increment: dict[str, Any] | None = None
    # --query: {"filter": canonical Extended JSON, "collections": [...]}: a partial backup.
    query: dict[str, Any] | None = None
    # Where the documents were read: {"preference": {"mode", "tags"}, "members": [...]}.
    read: dict[str, Any] | None = None
    # A backup of several databases: ``database`` is ALL_DATABASES ("*"), these are the
    # databases it holds, and every collection is named by namespace, DB.COLLECTION.
    databases: list[str] | None = None
    # --users-and-roles: the users member holds password hashes (SCRAM credentials).
    credentials: bool = False
    # manifest_sha256 as read (parse_manifest); an increment's parent link names it.
    checksum: str | None = field(default=None, compare=False)
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION

    @property
    def counted(self) -> bool:
        """Whether the entries' counts and sizes are known: a mongodump folder records
        neither (its reader says 0; verify counts the documents as it reads them)."""
        return self.format == FORMAT_NAME

    @property
    def data_entries(self) -> list[CollectionEntry]:
        """Entries with a data file, in archive order."""
        return [entry for entry in self.collections if entry.file is not None]

    @property
    def changes(self) -> CollectionEntry | None:
        """The captured change events, if the backup has any."""
        return next((entry for entry in self.collections if entry.type == "changes"), None)

    @property
    def users(self) -> CollectionEntry | None:
        """The users and roles member (``--users-and-roles``), if the backup has one."""
        return next((entry for entry in self.collections if entry.type == "users"), None)

    @property
    def failed(self) -> list[CollectionEntry]:
        return [entry for entry in self.collections if entry.status != "ok"]

    @property
    def window(self) -> tuple[ClusterTime, ClusterTime] | None:
        """The stretch of the server's history this backup brings a restore through:
        a full backup's one point, an increment's (from, to]; None without a point."""
        end = _cluster_time((self.point or {}).get("cluster_time"))
        if end is None:
            return None
        start = _cluster_time((self.increment or {}).get("from")) if self.parent else end
        return (start or end), end


ClusterTime = tuple[int, int]  # (seconds, increment): a BSON Timestamp, as JSON keeps it


def _cluster_time(value: Any) -> ClusterTime | None:
    inner = value.get("$timestamp") if isinstance(value, dict) else None
    if not isinstance(inner, dict):
        return None
    seconds, increment = inner.get("t"), inner.get("i")
    if type(seconds) is not int or type(increment) is not int:
        return None
    return seconds, increment


def _canonical_bytes(data: dict[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def _fields(value: Any) -> dict[str, Any]:
    # Not dataclasses.asdict: it deep-copies every option and index spec, which cost a
    # watch most of its per-increment time; json.dumps only reads them.
    return {item.name: getattr(value, item.name) for item in fields(value)}


def manifest_bytes(manifest: Manifest) -> bytes:
    """The manifest as written to disk: indented JSON with its own checksum last."""
    data = _fields(manifest)
    data["collections"] = [_fields(entry) for entry in manifest.collections]
    del data["checksum"]
    if not manifest.credentials:
        del data["credentials"]  # written only where it warns: manifests stay as they were
    data["manifest_sha256"] = hashlib.sha256(_canonical_bytes(data)).hexdigest()
    return (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _require(condition: bool, problem: str) -> None:
    if not condition:
        raise ArchiveError(f"{MANIFEST_NAME}: {problem}")


def _typed(
    data: dict[str, Any], key: str, kind: type | tuple[type, ...], optional: bool = False
) -> Any:
    value = data.get(key)
    if value is None and optional:
        return None
    _require(
        isinstance(value, kind) and not (kind is int and isinstance(value, bool)),
        f"field {key!r} is missing or not a {getattr(kind, '__name__', kind)}",
    )
    return value


MAX_NESTING = 100


def _shallow(value: Any, name: str) -> Any:
    """``value`` if it nests at most :data:`MAX_NESTING` deep (options and index specs
    never come near; a nesting bomb would exhaust the recursion of later stages)."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        _require(depth <= MAX_NESTING, f"collection {name!r}: options or indexes nest too deep")
        if isinstance(item, dict):
            pending.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            pending.extend((child, depth + 1) for child in item)
    return value


def _is_sha256(text: Any) -> bool:
    return isinstance(text, str) and len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def _parse_entry(data: Any, index: int) -> CollectionEntry:
    _require(isinstance(data, dict), f"collection #{index} is not an object")
    name = _typed(data, "name", str)
    _require(
        0 < len(name.encode("utf-8", "surrogatepass")) <= 1024 and "\x00" not in name,
        f"collection #{index} has a bad name",
    )
    kind = _typed(data, "type", str)
    _require(kind in COLLECTION_TYPES, f"collection {name!r} has unknown type {kind!r}")
    file = _typed(data, "file", str, optional=True)
    _require(
        file is None or is_safe_member_name(file),
        f"collection {name!r} has an unsafe file name {file!r}",
    )
    count = _typed(data, "count", int)
    size = _typed(data, "bytes", int)
    _require(
        0 <= count <= 2**53 and 0 <= size <= 2**53, f"collection {name!r} has impossible counts"
    )
    sha = _typed(data, "sha256", str, optional=True)
    _require(sha is None or _is_sha256(sha), f"collection {name!r} has a malformed sha256")
    status = _typed(data, "status", str)
    _require(status in ("ok", "failed"), f"collection {name!r} has unknown status {status!r}")
    return CollectionEntry(
        name=name,
        type=kind,
        file=file,
        options=_shallow(_typed(data, "options", dict), name),
        indexes=_shallow(_typed(data, "indexes", list), name),
        uuid=_typed(data, "uuid", str, optional=True),
        count=count,
        bytes=size,
        sha256=sha,
        status=status,
        error=_typed(data, "error", str, optional=True),
        escaped=_typed(data, "escaped", int, optional=True) or 0,
        watermark=_shallow(_typed(data, "watermark", dict, optional=True), name),
        since=_shallow(_typed(data, "since", dict, optional=True), name),
    )


def _query(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    _require(
        isinstance(value.get("filter"), dict)
        and isinstance(value.get("collections"), list)
        and all(isinstance(name, str) for name in value["collections"]),
        "malformed query",
    )
    return value


def _databases(value: list[Any] | None, database: str, names: list[str]) -> list[str] | None:
    """The ``databases`` of a backup of several: names, and every namespace in one."""
    _require((value is not None) == (database == ALL_DATABASES), "malformed databases")
    if value is None:
        return None
    _require(
        all(isinstance(name, str) and name and "." not in name for name in value),
        "malformed databases",
    )
    held = set(value)
    _require(
        all(name in (CHANGES_NAME, USERS_NAME) or name.partition(".")[0] in held for name in names),
        "a collection outside the backup's databases",
    )
    return list(value)


def _check_special_entries(collections: list[CollectionEntry]) -> None:
    """At most one entry of captured changes and one of users and roles, each under its
    fixed name and file (no collection can take either)."""
    for kind, name, file, what in (
        ("changes", CHANGES_NAME, CHANGES_FILE, "change events"),
        ("users", USERS_NAME, USERS_FILE, "users and roles"),
    ):
        special = [entry for entry in collections if entry.type == kind]
        _require(
            len(special) <= 1 and all(e.name == name and e.file == file for e in special),
            f"malformed {what} entry",
        )


def parse_manifest(raw: bytes) -> Manifest:
    """Parse and check a manifest; :class:`ArchiveError` for anything unexpected."""
    _require(len(raw) <= MAX_MANIFEST_BYTES, "larger than any manifest this tool writes")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as error:  # ValueError: also over-long integers
        raise ArchiveError(f"{MANIFEST_NAME}: not valid JSON ({error})") from None
    _require(isinstance(data, dict), "not a JSON object")
    _require(data.get("format") == FORMAT_NAME, "not a mongo-backup manifest (foreign archive?)")
    version = data.get("format_version")
    _require(
        version == FORMAT_VERSION,
        f"format version {version!r} is not supported (expected {FORMAT_VERSION})",
    )
    stated = data.pop("manifest_sha256", None)
    _require(isinstance(stated, str), "has no checksum")
    try:
        actual = hashlib.sha256(_canonical_bytes(data)).hexdigest()
    except (UnicodeEncodeError, RecursionError, ValueError):  # lone surrogates, nesting
        raise ArchiveError(f"{MANIFEST_NAME}: not a manifest this tool writes") from None
    _require(
        stated == actual,
        f"checksum mismatch (expected {stated}, got {actual}): the manifest is damaged",
    )
    entries = _typed(data, "collections", list)
    _require(len(entries) <= MAX_COLLECTIONS, "lists too many collections")
    collections = [_parse_entry(entry, index) for index, entry in enumerate(entries)]
    files = [entry.file for entry in collections if entry.file]
    _require(len(set(files)) == len(files), "two collections share one file")
    _check_special_entries(collections)
    names = [entry.name for entry in collections]
    _require(len(set(names)) == len(names), "a collection is listed twice")
    database = _typed(data, "database", str)
    databases = _databases(_typed(data, "databases", list, optional=True), database, names)
    kind = data.get("kind", "full")
    _require(kind in KINDS, f"unknown kind {kind!r}")
    consistency = _typed(data, "consistency", str)
    _require(consistency in GUARANTEES, f"unknown consistency {consistency!r}")
    parent = _typed(data, "parent", dict, optional=True)
    _require((parent is not None) == (kind == "incremental"), "an increment needs a parent")
    if parent is not None:
        _require(
            is_safe_member_name(str(parent.get("id", "")))
            and _is_sha256(parent.get("manifest_sha256")),
            "the parent link is malformed",
        )
    increment = _typed(data, "increment", dict, optional=True)
    _require(
        increment is None or increment.get("mode") in INCREMENT_MODES,
        "unknown increment mode",
    )
    backup_id = _typed(data, "backup_id", str, optional=True)
    _require(backup_id is None or is_safe_member_name(backup_id), "malformed backup id")
    return Manifest(
        kind=kind,
        backup_id=backup_id,
        point=_shallow(_typed(data, "point", dict, optional=True), "point"),
        parent=parent,
        increment=_shallow(increment, "increment"),
        query=_query(_typed(data, "query", dict, optional=True)),
        read=_shallow(_typed(data, "read", dict, optional=True), "read"),
        database=database,
        databases=databases,
        tool_version=_typed(data, "tool_version", str),
        json_format=_typed(data, "json_format", str),
        pretty=bool(data.get("pretty", False)),
        credentials=bool(data.get("credentials", False)),
        compression=_typed(data, "compression", str),
        started_at=_typed(data, "started_at", str),
        finished_at=_typed(data, "finished_at", str),
        server=_typed(data, "server", dict),
        hosts=_typed(data, "hosts", list),
        consistency=consistency,
        collections=collections,
        checksum=stated,
    )
