"""Several databases read and written as one: the namespaces of a deployment backup.

A backup of several databases (``backup`` without ``--db``, or with it more than once)
names its collections by namespace, ``DB.COLLECTION``: database names hold no dot, so
the first dot separates the two, and the rest of the tool (planning, member names,
filters, checkpoints, verify, restore, change replay) keeps working on names alone.

:class:`DeploymentDatabase` is the database those names live in. Contract: it is a
``pymongo`` ``Database`` whose collection names are namespaces; every method the tool
calls on a database (item access, ``get_collection``, ``command`` naming a collection,
``drop_collection``, ``list_collections``/``list_collection_names``, ``with_options``,
``watch``, a ``$changeStream`` ``aggregate``) goes to the real database the name's first
part says, or, for change streams, to the whole cluster's stream narrowed to the
databases of the backup. Anything else would reach a database named ``*`` and is
refused by the server: a bug shows, nothing is written in the wrong place.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from bson.codec_options import CodecOptions
from pymongo import MongoClient
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.write_concern import WriteConcern

from ..names import ALL_DATABASES

# Never data to copy: the server's own (local: the oplog and replica set state; config:
# sessions and sharding metadata). admin holds users and roles: only with --include-admin.
SYSTEM_DATABASES = ("admin", "config", "local")


def split_namespace(namespace: str) -> tuple[str, str]:
    """(database, collection) of ``DB.COLLECTION``; ValueError for anything else."""
    db, dot, collection = namespace.partition(".")
    if not dot or not db or not collection:
        raise ValueError(f"{namespace!r} is not a namespace (DB.COLLECTION)")
    return db, collection


def local_name(db_name: str, name: str) -> str:
    """The collection part of ``name`` (a namespace when ``db_name`` is ALL_DATABASES)."""
    return name.partition(".")[2] if db_name == ALL_DATABASES else name


def list_databases(client: MongoClient[Any], include_admin: bool = False) -> list[str]:
    """The databases a deployment backup copies, sorted: all but the server's own."""
    skipped = set(SYSTEM_DATABASES) - ({"admin"} if include_admin else set())
    listed = client.admin.command("listDatabases", nameOnly=True)["databases"]
    return sorted(str(entry["name"]) for entry in listed if entry["name"] not in skipped)


class DeploymentDatabase(Database[Any]):
    """The databases ``databases`` (None: every database but the server's own, listed
    when asked) as one database whose collections are named by namespace."""

    def __init__(
        self,
        client: MongoClient[Any],
        databases: list[str] | None = None,
        codec_options: CodecOptions[Any] | None = None,
        include_admin: bool = False,
        write_concern: WriteConcern | None = None,
    ) -> None:
        super().__init__(
            client, ALL_DATABASES, codec_options=codec_options, write_concern=write_concern
        )
        self.databases = databases
        self.include_admin = include_admin

    def names(self) -> list[str]:
        """The databases this one stands for, as listed now."""
        if self.databases is not None:
            return list(self.databases)
        return list_databases(self.client, self.include_admin)

    def _database(self, namespace: str) -> tuple[Database[Any], str]:
        db, collection = split_namespace(namespace)
        database = self.client.get_database(
            db, codec_options=self.codec_options, write_concern=self.write_concern
        )
        return database, collection

    def __getitem__(self, name: str) -> Collection[Any]:
        return self.get_collection(name)

    def get_collection(self, name: str, *args: Any, **kwargs: Any) -> Collection[Any]:
        database, collection = self._database(name)
        return database.get_collection(collection, *args, **kwargs)

    def with_options(self, *args: Any, **kwargs: Any) -> DeploymentDatabase:
        """The codec options and write concern given (positional as pymongo's), or these."""
        codec = kwargs.get("codec_options") or (args[0] if args else None)
        concern = kwargs.get("write_concern") or (args[2] if len(args) > 2 else None)
        return DeploymentDatabase(
            self.client,
            self.databases,
            codec or self.codec_options,
            self.include_admin,
            concern or self.write_concern,
        )

    def command(self, command: Any, value: Any = 1, *args: Any, **kwargs: Any) -> Any:
        if isinstance(command, str):
            database, collection = self._database(str(value))
            return database.command(command, collection, *args, **kwargs)
        if isinstance(command, Mapping) and command:
            name, first = next(iter(command.items()))
            database, collection = self._database(str(first))
            return database.command({name: collection, **dict(list(command.items())[1:])})
        raise TypeError("a deployment's command names a collection")

    def drop_collection(self, name_or_collection: Any, *args: Any, **kwargs: Any) -> Any:
        database, collection = self._database(str(name_or_collection))
        return database.drop_collection(collection, *args, **kwargs)

    def list_collections(self, *args: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:  # type: ignore[override]
        for db in self.names():
            for info in self.client[db].list_collections(*args, **kwargs):
                yield {**info, "name": f"{db}.{info['name']}"}

    def list_collection_names(self, *args: Any, **kwargs: Any) -> list[str]:
        return [info["name"] for info in self.list_collections(*args, **kwargs)]

    def change_filter(self) -> list[dict[str, Any]]:
        """The stages narrowing the cluster's change stream to these databases."""
        if self.databases is None:
            return []  # the cluster's stream holds no event of admin, config or local
        return [{"$match": {"ns.db": {"$in": list(self.databases)}}}]

    def watch(self, pipeline: Any = None, *args: Any, **kwargs: Any) -> Any:
        return self.client.watch([*self.change_filter(), *(pipeline or [])], *args, **kwargs)

    def aggregate(self, pipeline: Any, *args: Any, **kwargs: Any) -> Any:
        stage = pipeline[0].get("$changeStream") if pipeline else None
        if stage is None:
            raise TypeError("a deployment aggregates only its change stream")
        admin = self.client.get_database("admin", codec_options=self.codec_options)
        whole = {"$changeStream": {**stage, "allChangesForCluster": True}}
        return admin.aggregate([whole, *self.change_filter(), *pipeline[1:]], *args, **kwargs)


def namespace_in(db: Database[Any], collection: str) -> str:
    """The full namespace of ``db``'s collection ``collection`` (renameCollection's)."""
    return collection if isinstance(db, DeploymentDatabase) else f"{db.name}.{collection}"
