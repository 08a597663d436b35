"""The pure parts of backups of several databases (issue 13): namespaces, the database
that stands for several, events read by namespace, manifests that hold several
databases, and renames of namespaces. The round trips are in
tests/integration/test_all_databases.py."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import bson
import pytest
from bson import Timestamp
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient, WriteConcern

from mongo_backup.archive.manifest import CollectionEntry, Manifest, manifest_bytes, parse_manifest
from mongo_backup.errors import ArchiveError
from mongo_backup.mongo.change_events import event_fields, time_key
from mongo_backup.mongo.deployment import (
    DeploymentDatabase,
    local_name,
    namespace_in,
    split_namespace,
)
from mongo_backup.names import (
    ALL_DATABASES,
    collection_filter,
    database_name_problem,
    qualified,
    scope_text,
    unmatched_patterns,
)
from mongo_backup.restore.renames import NamespaceRenamer, parse_renames

AT = Timestamp(1796412336, 8)


@pytest.fixture
def offline() -> Iterator[MongoClient[Any]]:
    """A client that never connects: routing is decided before any server is asked."""
    client: MongoClient[Any] = MongoClient("mongodb://127.0.0.1:1", connect=False)
    yield client
    client.close()


@pytest.mark.parametrize(
    ("namespace", "parts"),
    [
        ("shop.orders", ("shop", "orders")),
        ("a.b.c", ("a", "b.c")),
        ("x.system.js", ("x", "system.js")),
    ],
)
def test_a_namespace_splits_at_its_first_dot(namespace: str, parts: tuple[str, str]) -> None:
    assert split_namespace(namespace) == parts
    assert local_name(ALL_DATABASES, namespace) == parts[1]
    assert local_name("shop", namespace) == namespace


@pytest.mark.parametrize("bad", ["orders", ".orders", "shop.", ""])
def test_a_name_without_both_parts_is_no_namespace(bad: str) -> None:
    with pytest.raises(ValueError, match="not a namespace"):
        split_namespace(bad)


def test_the_deployment_routes_each_name_to_its_database(offline: MongoClient[Any]) -> None:
    several = DeploymentDatabase(offline, ["shop", "crm"])
    orders = several["shop.orders"]
    assert (orders.database.name, orders.name) == ("shop", "orders")
    dotted = several.get_collection("crm.a.b")
    assert (dotted.database.name, dotted.name) == ("crm", "a.b")
    assert several.with_options().databases == ["shop", "crm"]
    assert namespace_in(several, "shop.orders") == "shop.orders"
    assert namespace_in(offline["shop"], "orders") == "shop.orders"
    with pytest.raises(ValueError):
        several["orders"]
    with pytest.raises(TypeError):
        several.aggregate([{"$match": {}}])  # only its change stream


def test_the_deployment_keeps_the_write_concern_it_is_given(offline: MongoClient[Any]) -> None:
    """A restore of several databases writes its changes with the documents' durable
    write concern: every database the deployment routes to carries it."""
    durable = WriteConcern(w="majority", j=True)
    several = DeploymentDatabase(offline, ["shop", "crm"]).with_options(write_concern=durable)
    assert several.write_concern == durable
    assert several["shop.orders"].write_concern == durable
    raw = several.with_options(codec_options=CodecOptions(document_class=RawBSONDocument))
    assert raw.write_concern == durable and raw["crm.people"].write_concern == durable
    assert DeploymentDatabase(offline)["shop.orders"].write_concern == offline.write_concern


def test_the_change_stream_is_narrowed_to_the_named_databases(offline: MongoClient[Any]) -> None:
    assert DeploymentDatabase(offline, ["a", "b"]).change_filter() == [
        {"$match": {"ns.db": {"$in": ["a", "b"]}}}
    ]
    assert DeploymentDatabase(offline, None).change_filter() == []  # every database


def _event(**fields: Any) -> bytes:
    return bson.encode(
        {"_id": {"_data": "x"}, "operationType": "insert", "clusterTime": AT, **fields}
    )


@pytest.mark.parametrize(
    "ns",
    [{"db": "shop", "coll": "a.b"}, {"coll": "a.b", "db": "shop"}],  # either field order
)
def test_events_name_their_namespace_for_a_deployment(ns: dict[str, str]) -> None:
    raw = _event(ns=ns)
    assert event_fields(raw, namespaced=True) == (b"insert", time_key(AT), b"shop.a.b")
    assert event_fields(raw) == (b"insert", time_key(AT), b"a.b")
    dropped = _event(operationType="dropDatabase", ns={"db": "shop"})
    assert event_fields(dropped, namespaced=True)[2] == b""  # concerns every collection


def _manifest(**fields: Any) -> Manifest:
    base = Manifest(
        database=ALL_DATABASES,
        databases=["crm", "shop"],
        tool_version="test",
        json_format="canonical",
        pretty=False,
        compression="none",
        started_at="2026-12-05T00:00:00+00:00",
        finished_at="2026-12-05T00:00:01+00:00",
        server={},
        hosts=[],
        collections=[
            CollectionEntry("crm.people", "collection", "crm.people.jsonl"),
            CollectionEntry("shop.orders", "collection", "shop.orders.jsonl"),
        ],
    )
    return replace(base, **fields)


def test_a_manifest_of_several_databases_reads_back() -> None:
    manifest = parse_manifest(manifest_bytes(_manifest()))
    assert manifest.databases == ["crm", "shop"]
    assert [entry.name for entry in manifest.collections] == ["crm.people", "shop.orders"]


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"databases": None}, "malformed databases"),
        ({"database": "shop"}, "malformed databases"),
        ({"databases": ["crm", "sh.op"]}, "malformed databases"),
        ({"databases": ["crm", ""]}, "malformed databases"),
        ({"databases": ["crm"]}, "outside the backup's databases"),
    ],
)
def test_a_manifest_that_lies_about_its_databases_is_refused(
    change: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ArchiveError, match=problem):
        parse_manifest(manifest_bytes(_manifest(**change)))


def test_filters_and_messages_take_namespaces_as_they_are() -> None:
    assert qualified(ALL_DATABASES, "shop.orders") == "shop.orders"
    assert qualified("shop", "orders") == "shop.orders"
    kept = collection_filter([], [], ALL_DATABASES, ["shop.*"], ["shop.tmp*"])
    assert kept("shop.orders") and not kept("shop.tmp1") and not kept("crm.orders")
    assert unmatched_patterns(["crm.*", "web.*"], ALL_DATABASES, ["crm.people"]) == ["web.*"]
    assert scope_text(ALL_DATABASES) == "the databases"
    assert scope_text("shop") == "database 'shop'"
    assert database_name_problem("shop") is None
    for bad in ("", "a.b", "a b", "a$b", "x" * 64):
        assert database_name_problem(bad)


def test_namespace_renames_move_databases_and_views_follow() -> None:
    names = NamespaceRenamer(parse_renames(["shop.*", "*.orders"], ["copy.*", "*.orders_old"]))
    assert names.collection("shop.orders") == "copy.orders"
    assert names.collection("crm.orders") == "crm.orders_old"
    assert names.collection("web.pages") == "web.pages"
    assert names.source("copy.orders") == "shop.orders"
    assert names.source("crm.orders_old") == "crm.orders"
    assert names.source("shop.orders") is None  # nothing is restored under that name
    assert names.target_db(["shop.orders", "crm.orders"], None) == ALL_DATABASES
    view = CollectionEntry(
        "shop.big", "view", None,
        options={"viewOn": "orders", "pipeline": [{"$lookup": {"from": "users", "as": "u"}}]},
    )  # fmt: skip
    moved = names.entry(view)
    assert moved.name == "copy.big"
    assert moved.options["viewOn"] == "orders"  # the view's own database moved with it
    assert view.options["viewOn"] == "orders"  # the entry itself is not changed
