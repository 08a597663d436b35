"""What a backup is asked to do (:class:`BackupOptions`) and what it did
(:class:`BackupResult`); ``check()`` refuses bad options before any work."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, cast

from bson import json_util
from bson.json_util import CANONICAL_JSON_OPTIONS as CANONICAL

from ..archive.manifest import CollectionEntry, Manifest
from ..errors import ConfigError
from ..names import (
    ALL_DATABASES,
    ARCHIVE_FOLDER,
    COMPRESSIONS,
    JSON_FORMATS,
    JsonFormat,
    database_name_problem,
    namespace_pattern,
)
from ..redact import hosts_of
from ..workers import default_jobs
from .checkpoint import Layout, Plan
from .planning import PlanRequest

logger = logging.getLogger(__name__)


@dataclass
class BackupResult:
    archive: Path | None
    folder: Path
    manifest: Manifest
    duration: float
    url: str | None = None  # where --dest uploaded the archive

    @property
    def location(self) -> str:
        """What the CLI prints: the archive's URL, or its path ("-" for stdout)."""
        return self.url or (str(self.archive) if self.archive is not None else "-")

    @property
    def complete(self) -> bool:
        """Every collection backed up (else the CLI exits 3: see cli/exits.py)."""
        return not self.manifest.failed

    @property
    def collections(self) -> list[CollectionEntry]:
        return self.manifest.collections

    def to_json(self) -> dict[str, Any]:
        return {
            "archive": str(self.archive) if self.archive else None,
            "url": self.url,
            "database": self.manifest.database,
            "kind": self.manifest.kind,
            "consistency": self.manifest.consistency,
            "point": self.manifest.point,
            "parent": self.manifest.parent,
            "collections": [
                {
                    "name": c.name,
                    "type": c.type,
                    "file": c.file,
                    "count": c.count,
                    "bytes": c.bytes,
                    "status": c.status,
                    "error": c.error,
                }
                for c in self.manifest.collections
            ],
            "complete": self.complete,
            "duration_s": round(self.duration, 3),
        }


@dataclass
class BackupOptions:
    uri: str
    db: str
    out_dir: Path = Path("backups")
    collections: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    ns_include: list[str] = field(default_factory=list)  # DB.COLLECTION patterns (* wildcard)
    ns_exclude: list[str] = field(default_factory=list)
    json_format: JsonFormat = "canonical"
    pretty: bool = False
    compress: str = "zstd"
    batch_size: int = 1000
    keep_folder: bool = False
    allow_empty: bool = False
    timeout: float = 30.0
    stall_timeout: float = 120.0  # no byte from the server this long: a transient fault
    nice: int = 10  # the converter's niceness: see convert_worker
    jobs: int = field(default_factory=lambda: default_jobs())
    split_threshold: int | None = None  # None: DEFAULT_SPLIT_THRESHOLD, reported sizes only
    retries: int = 5
    retry_delay: float = 0.5
    checkpoint_interval: float = 1.0
    resume: bool | Path = False  # True: the newest unfinished backup in out_dir
    lock_wait: float = 0.0  # seconds to wait for another run on out_dir to finish
    incremental: bool = False  # changes since the base backup (see increments.py)
    since_field: str | None = None  # incremental by this field; a full records its marks
    base: Path | None = None  # the backup an increment continues (default: the newest)
    max_increment_bytes: int | None = None  # a change-stream increment ends near this size
    dest: str | None = None  # upload the archive there (folder or storage URL)
    endpoint_url: str | None = None  # S3-compatible endpoint for --dest
    keep_local: bool = False  # keep the local archive after --dest uploaded it
    stream: bool = False  # --dest without a local archive file
    to_stdout: bool = False  # --archive -: the archive goes to stdout, nowhere else
    encrypt_to: list[str] = field(default_factory=list)  # age / SSH recipients
    # --query: an Extended JSON filter for the collections named in ``collections``.
    query: str | None = None
    # db ALL_DATABASES: a backup of several databases, these (none: all but admin,
    # config and local; admin too with include_admin). See mongo/deployment.py.
    databases: list[str] = field(default_factory=list)
    include_admin: bool = False
    users_and_roles: bool = False  # the databases' users and custom roles: see authz.py

    @property
    def sent_while_exported(self) -> bool:
        """The archive is sent as the collections are exported (``--archive -``, or
        ``--stream`` with ``--dest``: see :mod:`~mongo_backup.backup.live_archive`)."""
        return self.to_stdout or bool(self.stream and self.dest)

    def check(self) -> None:
        if self.json_format not in JSON_FORMATS:
            raise ConfigError(f"--json-format must be one of {', '.join(JSON_FORMATS)}")
        if self.compress not in COMPRESSIONS:
            raise ConfigError(f"--compress must be one of {', '.join(COMPRESSIONS)}")
        if not 1 <= self.batch_size <= 100_000:
            raise ConfigError("--batch-size must be between 1 and 100000")
        if self.timeout <= 0:
            raise ConfigError("--timeout must be positive")
        if not 0 < self.stall_timeout < 1e6:
            raise ConfigError("--stall-timeout must be positive")
        if not 0 <= self.nice <= 19:
            raise ConfigError("--nice must be between 0 and 19")
        if not 1 <= self.jobs <= 64:
            raise ConfigError("--jobs must be between 1 and 64")
        if self.split_threshold is not None and self.split_threshold < 1:
            raise ConfigError("--split-threshold must be positive")
        if not 0 <= self.retries <= 100:
            raise ConfigError("--retries must be between 0 and 100")
        if self.retry_delay < 0:
            raise ConfigError("--retry-delay must not be negative")
        if self.checkpoint_interval <= 0:
            raise ConfigError("--checkpoint-interval must be positive")
        if self.to_stdout and (self.dest or self.keep_folder or self.incremental):
            raise ConfigError(
                "--archive - sends the archive to stdout: not with --dest, --keep-folder or "
                "--incremental (an increment's base must be kept in its location)"
            )
        if self.stream and not self.dest:
            raise ConfigError("--stream uploads as it goes: it needs --dest")
        if self.keep_local and not self.dest:
            raise ConfigError("--keep-local keeps the local copy of an upload: it needs --dest")
        if self.stream and self.keep_local:
            raise ConfigError("--stream writes no local archive to keep: drop --keep-local")
        if self.endpoint_url and not self.dest:
            raise ConfigError("--endpoint-url applies to --dest")
        if self.encrypt_to:
            from ..archive import encryption  # loaded for the backups that encrypt only

            encryption.recipients(self.encrypt_to)  # refuse a bad key before any work
        if self.dest:
            from ..destinations import LocalFolder, open_destination

            target = open_destination(self.dest, endpoint_url=self.endpoint_url)  # bad URL: now
            here = (Path(self.out_dir) / ARCHIVE_FOLDER).absolute()
            if isinstance(target, LocalFolder) and target.root.resolve() == here.resolve():
                raise ConfigError(
                    f"--dest {self.dest} is where the archive is written anyway "
                    f"({here}): leave --dest out"
                )
        if self.max_increment_bytes is not None and (
            self.max_increment_bytes < 1 or not self.incremental or self.since_field
        ):
            raise ConfigError(
                "--max-increment-bytes must be positive and applies to change-stream increments"
            )
        if self.users_and_roles and self.incremental:
            raise ConfigError(
                "--users-and-roles goes with a full backup (an increment holds changes only)"
            )
        if self.base is not None and not self.incremental:
            raise ConfigError("--base names the backup an increment continues: add --incremental")
        for pattern in [*self.ns_include, *self.ns_exclude]:
            try:
                namespace_pattern(pattern)
            except ValueError as error:
                raise ConfigError(str(error)) from None
        self._check_databases()
        if self.query is not None:
            filter_of(self.query)  # refuse bad JSON before any work
            if not self.collections:
                raise ConfigError(
                    "--query applies to the collections named with --collection "
                    "(as mongodump's): name at least one"
                )
        if self.since_field is not None and (
            not self.since_field or self.since_field.startswith("$") or "\x00" in self.since_field
        ):
            raise ConfigError(f"--since-field {self.since_field!r} is not a field name")

    def _check_databases(self) -> None:
        if self.db != ALL_DATABASES:
            if self.databases or self.include_admin:
                raise ConfigError("--include-admin applies to a backup of all databases")
            return
        if self.collections or self.exclude or self.query is not None:
            raise ConfigError(
                "--collection, --exclude-collection and --query apply to one database "
                "(name it with --db); across databases use --ns-include / --ns-exclude"
            )
        if self.include_admin and self.databases:
            raise ConfigError("--include-admin applies to a backup of all databases, not --db")
        for name in self.databases:
            problem = database_name_problem(name)
            if problem:
                raise ConfigError(problem)

    def layout(self) -> Layout:
        return Layout(
            self.json_format, self.pretty, self.compress, self.keep_folder, self.batch_size
        )

    def plan_request(self, taken: frozenset[str] = frozenset()) -> PlanRequest:
        return PlanRequest(
            db=self.db,
            hosts=hosts_of(self.uri),
            out_dir=Path(self.out_dir),
            layout=self.layout(),
            collections=self.collections,
            exclude=self.exclude,
            ns_include=self.ns_include,
            ns_exclude=self.ns_exclude,
            allow_empty=self.allow_empty,
            split_threshold=self.split_threshold,
            since_field=self.since_field,
            max_increment_bytes=self.max_increment_bytes,
            taken=taken,
            query=filter_of(self.query) if self.query is not None else None,
            databases=list(self.databases),
        )

    def resuming(self, plan: Plan, folder: Path) -> BackupOptions:
        """These options for continuing ``plan`` in ``folder``: its layout wins, so the
        output is what the first run would have written (a different ask is warned of)."""
        given, default = asdict(self.layout()), asdict(Layout())
        for key, value in plan.options.items():
            if given[key] != value and given[key] != default[key]:
                logger.warning(
                    "resume: %s is %r in the unfinished backup, and stays so", key, value
                )
        return replace(self, out_dir=folder.parent, **plan.options)


def filter_of(text: str) -> dict[str, Any]:
    """A ``--query`` as canonical Extended JSON (what the plan and manifest keep);
    ConfigError for anything that is not a JSON object."""
    try:
        value = json_util.loads(text)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"--query is not Extended JSON: {error}") from None
    if not isinstance(value, dict):
        raise ConfigError('--query must be a JSON object, such as {"status": "paid"}')
    return cast(dict[str, Any], json.loads(json_util.dumps(value, json_options=CANONICAL)))
