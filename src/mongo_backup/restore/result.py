"""What a restore did: per namespace, the changes and increments applied, the users."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..mongo.change_apply import Replacement
from ..mongo.users import AuthzOutcome
from .namespaces import CollectionOutcome
from .replay import Replay


@dataclass
class RestoreResult:
    source: str
    database: str
    collections: list[CollectionOutcome]
    dry_run: bool
    duration: float
    replays: list[Replay] = field(default_factory=list)  # changes and increments applied
    authz: AuthzOutcome | None = None  # --users-and-roles
    # --drop: what a chain's increments may write without dropping it first (not shown).
    replacement: Replacement | None = field(default=None, repr=False)

    @property
    def complete(self) -> bool:
        """Every document and namespace restored, every change applied (else the CLI
        exits 3: see cli/exits.py)."""
        return (
            all(c.ok for c in self.collections)
            and not any(r.problems for r in self.replays)
            and (self.authz is None or self.authz.ok)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "database": self.database,
            "dry_run": self.dry_run,
            "collections": [vars(c) | {"ok": c.ok} for c in self.collections],
            "applied": [replay.to_json() for replay in self.replays],
            "users_and_roles": None if self.authz is None else vars(self.authz),
            "complete": self.complete,
            "duration_s": round(self.duration, 3),
        }
