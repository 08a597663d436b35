"""``restore --ns-from PATTERN --ns-to PATTERN``: restoring namespaces under new names.

A pair renames every namespace its ``--ns-from`` pattern matches (``DB.COLLECTION``, as
``--ns-include``): each ``*`` (any characters; within the database name, no dot) or
``$name$`` (mongorestore's variables) of ``--ns-from`` captures text, which the ``*`` at
the same place of ``--ns-to``, or ``$name$`` of the same name, puts back::

    shop.*        -> shop_copy.*         every collection into database shop_copy
    *.orders      -> *.orders_2026       one collection under a new name
    $db$.$coll$   -> $db$_copy.$coll$    as mongorestore spells the first

Pairs are tried in the order given; the first that matches renames, a namespace no pair
matches keeps its name. What a renamed view reads follows its collections: ``viewOn``
and the ``from``/``coll`` of ``$lookup``, ``$graphLookup`` and ``$unionWith`` stages (at
any depth) name the renamed collection when it was renamed too. A backup of one database
must land in one database; a backup of several (:class:`NamespaceRenamer`, its names are
namespaces) may go anywhere, a view staying with its database's collections.

Contract: :func:`parse_renames` returns the pairs or raises ConfigError with one line
naming the bad pattern; :class:`Renamer` maps names and never changes an entry in place.
:func:`views_in_order` orders the views to create: each after the views it reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from pymongo import MongoClient
from pymongo.database import Database

from ..archive.manifest import CollectionEntry
from ..errors import ConfigError
from ..mongo.deployment import DeploymentDatabase
from ..names import ALL_DATABASES

_TOKEN = re.compile(r"\*|\$[A-Za-z_][A-Za-z0-9_]*\$")
_PIPELINE_SOURCES = ("$lookup", "$graphLookup")


@dataclass(frozen=True)
class RenamePair:
    source: re.Pattern[str]  # a full match captures the wildcards, in order
    pieces: tuple[str, ...]  # the source's literal text around its wildcards
    target: tuple[str | int, ...]  # literal text, or the index of a captured wildcard

    def apply(self, namespace: str) -> str | None:
        match = self.source.fullmatch(namespace)
        if match is None:
            return None
        return "".join(
            part if isinstance(part, str) else match.group(part + 1) for part in self.target
        )

    def undo(self, namespace: str) -> str | None:
        """A namespace this pair renames to ``namespace`` (None if it cannot be one)."""
        regex = "".join(
            re.escape(part) if isinstance(part, str) else "(.*)" for part in self.target
        )
        match = re.fullmatch(regex, namespace, re.DOTALL)
        if match is None:
            return None
        captured: dict[int, str] = {}
        groups = iter(match.groups())
        for part in self.target:
            if isinstance(part, int):
                captured.setdefault(part, next(groups))
        wildcards = len(self.pieces) - 1
        if len(captured) != wildcards:
            return None  # a wildcard --ns-to drops cannot be recovered
        return self.pieces[0] + "".join(
            captured[index] + self.pieces[index + 1] for index in range(wildcards)
        )


def _tokens(text: str) -> list[str]:
    """The text split into literal pieces and wildcards (``*`` or ``$name$``)."""
    parts, position = [], 0
    for match in _TOKEN.finditer(text):
        parts += [text[position : match.start()], match.group()]
        position = match.end()
    return [*parts, text[position:]]


def _pair(source: str, target: str) -> RenamePair:
    for flag, text in (("--ns-from", source), ("--ns-to", target)):
        db, dot, collection = text.partition(".")
        if not dot or not db or not collection:
            raise ConfigError(f"{flag} {text!r}: expected DB.COLLECTION, such as shop.*")
    pieces = _tokens(source)
    wildcards = pieces[1::2]
    named = [w for w in wildcards if w != "*"]
    if len(set(named)) != len(named):
        raise ConfigError(f"--ns-from {source!r}: a variable appears twice")
    regex, dot_seen = "", False
    for index, piece in enumerate(pieces):
        if index % 2 == 0:
            regex += re.escape(piece)
            dot_seen = dot_seen or "." in piece
        else:  # a wildcard in the database name stops at the dot
            regex += "(.*)" if dot_seen else "([^.]*)"
    target_pieces = _tokens(target)
    stars = iter(i for i, w in enumerate(wildcards) if w == "*")
    built: list[str | int] = []
    for index, piece in enumerate(target_pieces):
        if index % 2 == 0:
            built.append(piece)
        elif piece == "*":
            taken = next(stars, None)
            if taken is None:
                raise ConfigError(f"--ns-to {target!r} has more '*' than --ns-from {source!r}")
            built.append(taken)
        elif piece in named:
            built.append(wildcards.index(piece))
        else:
            raise ConfigError(
                f"--ns-to {target!r}: {piece} is not a variable of --ns-from {source!r}"
            )
    if next(stars, None) is not None:
        raise ConfigError(f"--ns-to {target!r} has fewer '*' than --ns-from {source!r}")
    return RenamePair(re.compile(regex, re.DOTALL), tuple(pieces[0::2]), tuple(built))


def parse_renames(sources: list[str], targets: list[str]) -> list[RenamePair]:
    """The ``--ns-from``/``--ns-to`` pairs, given in that order."""
    if len(sources) != len(targets):
        raise ConfigError(
            f"--ns-from and --ns-to come in pairs: {len(sources)} --ns-from, {len(targets)} --ns-to"
        )
    return [_pair(source, target) for source, target in zip(sources, targets, strict=True)]


class Renamer:
    """Renames the collections of database ``db`` (the backup's) by ``pairs``."""

    def __init__(self, db: str, pairs: list[RenamePair]) -> None:
        self.db, self.pairs = db, pairs
        self.target = self.renamed_db = db  # restored into (--db or --ns-to): target_db
        self._names: dict[str, str] = {}

    def namespace(self, collection: str) -> tuple[str, str]:
        """(database, collection) that ``collection`` of the backup is restored as."""
        full = f"{self.db}.{collection}"
        for pair in self.pairs:
            renamed = pair.apply(full)
            if renamed is not None:
                db, _, name = renamed.partition(".")
                if not db or not name:
                    raise ConfigError(f"--ns-to renames {full!r} to {renamed!r}, not DB.COLLECTION")
                return db, name
        return self.db, collection

    def target_db(self, collections: list[str], asked: str | None) -> str:
        """The one database the ``collections`` go to (``--db``, if given, must agree)."""
        databases = {self.namespace(name)[0] for name in collections} or {self.db}
        if len(databases) > 1:
            raise ConfigError(
                "--ns-to sends this backup's collections to several databases "
                f"({', '.join(sorted(databases))}): it holds one database, restore it once "
                "per target database with --ns-include"
            )
        (database,) = databases
        self.renamed_db = database
        if asked is not None and self.pairs and database != self.db and asked != database:
            raise ConfigError(f"--db {asked!r} and --ns-to {database!r} name different databases")
        self.target = asked if asked is not None and database == self.db else database
        return self.target

    def collection(self, name: str) -> str:
        # Asked for every replayed event: each name is matched against the pairs once.
        renamed = self._names.get(name)
        if renamed is None:
            renamed = self._names[name] = self.namespace(name)[1]
        return renamed

    def source(self, name: str) -> str | None:
        """The backup's collection restored as ``name`` of the target database, if any
        (a change event that drops the whole database drops those)."""
        for pair in self.pairs:
            before = pair.undo(f"{self.renamed_db}.{name}")
            if before is not None and before.startswith(f"{self.db}."):
                original = before[len(self.db) + 1 :]
                if self.collection(original) == name:
                    return original
        return name if self.collection(name) == name else None

    def entry(self, entry: CollectionEntry) -> CollectionEntry:
        """``entry`` under its new name; a view reads from the renamed collections."""
        if not self.pairs:
            return entry
        options = entry.options
        if entry.type == "view":
            options = dict(options)
            if isinstance(options.get("viewOn"), str):
                options["viewOn"] = self.collection(options["viewOn"])
            if isinstance(options.get("pipeline"), list):
                options["pipeline"] = self.pipeline(options["pipeline"])
        return replace(entry, name=self.collection(entry.name), options=options)

    def pipeline(self, value: Any) -> Any:
        """A copy of an aggregation pipeline (or any part of one) whose stages that read
        another collection of this database read its renamed one."""
        if isinstance(value, list):
            return [self.pipeline(item) for item in value]
        if not isinstance(value, dict):
            return value
        result = {key: self.pipeline(item) for key, item in value.items()}
        for stage in _PIPELINE_SOURCES:
            spec = result.get(stage)
            if isinstance(spec, dict) and isinstance(spec.get("from"), str):
                spec["from"] = self.collection(spec["from"])
        union = result.get("$unionWith")
        if isinstance(union, str):
            result["$unionWith"] = self.collection(union)
        elif isinstance(union, dict) and isinstance(union.get("coll"), str):
            union["coll"] = self.collection(union["coll"])
        return result


class NamespaceRenamer(Renamer):
    """The renames of a backup of several databases: its collections (and the names
    this gives back) are namespaces, ``DB.COLLECTION``; the target is ALL_DATABASES."""

    def __init__(self, pairs: list[RenamePair]) -> None:
        super().__init__(ALL_DATABASES, pairs)

    def namespace(self, collection: str) -> tuple[str, str]:
        for pair in self.pairs:
            renamed = pair.apply(collection)
            if renamed is not None:
                db, _, name = renamed.partition(".")
                if not db or not name:
                    raise ConfigError(
                        f"--ns-to renames {collection!r} to {renamed!r}, not DB.COLLECTION"
                    )
                return db, name
        db, _, name = collection.partition(".")
        return db, name

    def target_db(self, collections: list[str], asked: str | None) -> str:
        return ALL_DATABASES  # each namespace says its own (--db selected a database)

    def collection(self, name: str) -> str:
        renamed = self._names.get(name)
        if renamed is None:
            renamed = self._names[name] = ".".join(self.namespace(name))
        return renamed

    def source(self, name: str) -> str | None:
        for pair in self.pairs:
            before = pair.undo(name)
            if before is not None and self.collection(before) == name:
                return before
        return name if self.collection(name) == name else None

    def entry(self, entry: CollectionEntry) -> CollectionEntry:
        """As :meth:`Renamer.entry`: a view's ``viewOn`` and pipeline name collections
        of its own database, renamed as that database's are."""
        if not self.pairs:
            return entry
        name = self.collection(entry.name)
        if entry.type == "view":
            db, _, local = entry.name.partition(".")
            entry = Renamer(db, self.pairs).entry(replace(entry, name=local))
        return replace(entry, name=name)


def target_database(
    client: MongoClient[Any], names: Renamer, entries: list[CollectionEntry]
) -> Database[Any]:
    """The database ``entries`` are restored into: ``names.target``'s, or for a backup of
    several databases all of theirs as one (their collections named by namespace)."""
    if names.target != ALL_DATABASES:
        return client[names.target]
    databases = {
        names.collection(entry.name).partition(".")[0] for entry in entries if entry.is_collection
    }
    return DeploymentDatabase(client, sorted(databases))


NO_RENAMES = Renamer("", [])


def views_in_order(views: list[CollectionEntry]) -> list[CollectionEntry]:
    """Views on views after the views they read from; cycles cannot exist on a server."""
    by_name = {view.name: view for view in views}
    ordered: list[CollectionEntry] = []
    placed: set[str] = set()
    for view in sorted(views, key=lambda v: v.name):
        # Walk up the chain of views this one reads from (a loop, not recursion: a
        # hostile manifest may chain thousands), then place them from the top down.
        chain: list[CollectionEntry] = []
        current: CollectionEntry | None = view
        while current is not None and current.name not in placed and current not in chain:
            chain.append(current)
            current = by_name.get(str(current.options.get("viewOn", "")))
        for link in reversed(chain):
            placed.add(link.name)
            ordered.append(link)
    return ordered
