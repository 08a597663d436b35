"""``restore --ns-from/--ns-to`` patterns, as pure functions (no server)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mongo_backup.archive.manifest import CollectionEntry
from mongo_backup.errors import ConfigError
from mongo_backup.restore.renames import Renamer, parse_renames


def renamer(db: str, *pairs: tuple[str, str], asked: str | None = None) -> Renamer:
    names = Renamer(db, parse_renames([a for a, _ in pairs], [b for _, b in pairs]))
    names.target_db(["orders", "users"], asked)
    return names


@pytest.mark.parametrize(
    ("pairs", "collection", "expected"),
    [
        ([("shop.*", "shop_copy.*")], "orders", ("shop_copy", "orders")),
        ([("*.orders", "*.orders_2026")], "orders", ("shop", "orders_2026")),
        ([("*.orders", "*.orders_2026")], "users", ("shop", "users")),
        ([("$db$.$coll$", "$db$_copy.$coll$")], "users", ("shop_copy", "users")),
        ([("shop.$c$", "shop.old_$c$")], "a.b", ("shop", "old_a.b")),
        ([("shop.o*", "shop.x*"), ("shop.*", "shop.y*")], "orders", ("shop", "xrders")),
        ([("shop.o*", "shop.x*"), ("shop.*", "shop.y*")], "users", ("shop", "yusers")),
        ([("other.*", "copy.*")], "orders", ("shop", "orders")),
    ],
)
def test_pairs_rename_namespaces(
    pairs: list[tuple[str, str]], collection: str, expected: tuple[str, str]
) -> None:
    names = Renamer("shop", parse_renames([a for a, _ in pairs], [b for _, b in pairs]))
    assert names.namespace(collection) == expected


@pytest.mark.parametrize(
    ("sources", "targets", "message"),
    [
        (["shop.*"], [], "come in pairs"),
        (["shop"], ["copy.*"], "--ns-from 'shop': expected DB.COLLECTION"),
        (["shop.*"], ["copy"], "--ns-to 'copy': expected DB.COLLECTION"),
        (["shop.*"], ["*.*"], "more '*'"),
        (["*.*"], ["copy.x"], "fewer '*'"),
        (["shop.$a$"], ["shop.$b$"], "$b$ is not a variable"),
        (["$a$.$a$"], ["x.$a$"], "appears twice"),
    ],
)
def test_bad_pairs_are_one_line(sources: list[str], targets: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("$", r"\$").replace("*", r"\*")):
        parse_renames(sources, targets)


def test_one_target_database_and_db_must_agree() -> None:
    with pytest.raises(ConfigError, match="several databases"):
        renamer("shop", ("shop.orders", "a.orders"), ("shop.users", "b.users"))
    with pytest.raises(ConfigError, match="name different databases"):
        renamer("shop", ("shop.*", "copy.*"), asked="other")
    assert renamer("shop", ("*.orders", "*.o2"), asked="other").target == "other"
    assert renamer("shop", ("shop.*", "copy.*"), asked="copy").target == "copy"


def test_views_follow_the_renamed_collections() -> None:
    names = renamer("shop", ("*.orders", "*.orders_2026"))
    lookup = {"$lookup": {"from": "orders", "as": "o", "pipeline": [{"$unionWith": "orders"}]}}
    view = CollectionEntry(
        "big",
        "view",
        None,
        options={
            "viewOn": "orders",
            "pipeline": [
                lookup,
                {"$graphLookup": {"from": "users", "startWith": "$a"}},
                {"$facet": {"x": [{"$unionWith": {"coll": "orders", "pipeline": []}}]}},
            ],
        },
    )
    renamed = names.entry(view)
    assert renamed.options["viewOn"] == "orders_2026"
    stages = renamed.options["pipeline"]
    assert stages[0]["$lookup"]["from"] == "orders_2026"
    assert stages[0]["$lookup"]["pipeline"] == [{"$unionWith": "orders_2026"}]
    assert stages[1]["$graphLookup"]["from"] == "users"
    assert stages[2]["$facet"]["x"][0]["$unionWith"]["coll"] == "orders_2026"
    assert view.options["viewOn"] == "orders" and lookup["$lookup"]["from"] == "orders"


@given(st.text(alphabet="abc._-", min_size=1, max_size=12))
def test_source_undoes_the_rename(collection: str) -> None:
    for pairs in ([("shop.*", "copy.pre_*")], [("$d$.$c$", "$d$_x.$c$_y")], []):
        names = renamer("shop", *pairs)
        target = names.collection(collection)
        assert names.source(target) == collection
