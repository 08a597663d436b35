"""What a restore is asked to do; ``check()`` refuses bad options before any work."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bson.timestamp import Timestamp

from ..errors import ConfigError
from ..names import namespace_pattern
from ..workers import default_insert_workers
from .renames import parse_renames


@dataclass
class RestoreOptions:
    source: str
    uri: str
    db: str | None = None
    collections: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    ns_include: list[str] = field(default_factory=list)  # DB.COLLECTION patterns of the backup
    ns_exclude: list[str] = field(default_factory=list)
    ns_from: list[str] = field(default_factory=list)  # renames: --ns-from[i] -> --ns-to[i]
    ns_to: list[str] = field(default_factory=list)
    drop: bool = False
    indexes: bool = True
    options: bool = True
    dry_run: bool = False
    bypass_validation: bool = False
    jobs: int = field(default_factory=lambda: default_insert_workers())
    batch_size: int = 1000
    verify_first: bool = True
    timeout: float = 30.0
    stall_timeout: float = 120.0  # no byte from the server this long while inserting: fail
    resume: bool = False
    until: Timestamp | None = None  # restore a chain to this cluster time (see replay)
    identity: Path | None = None  # age identity file for an encrypted (.age) archive
    endpoint_url: str | None = None  # S3-compatible endpoint when source is a URL
    users_and_roles: bool = False  # recreate the backup's users and roles (see authz.py)

    def check(self) -> None:
        for pattern in [*self.ns_include, *self.ns_exclude]:
            try:
                namespace_pattern(pattern)
            except ValueError as error:
                raise ConfigError(str(error)) from None
        parse_renames(self.ns_from, self.ns_to)
        if not 1 <= self.jobs <= 64:
            raise ConfigError("-j must be between 1 and 64")
        if not 1 <= self.batch_size <= 100_000:
            raise ConfigError("--batch-size must be between 1 and 100000")
        if not 0 < self.stall_timeout < 1e6:
            raise ConfigError("--stall-timeout must be positive")
