"""The benchmark's ``increments`` section: an increment after 1% of the documents changed.

Issue 5's targets: an incremental backup after changing 1% of N documents takes at most
0.1x a full backup's wall time and writes at most 0.05x its archive size. Measured for
both modes:

- change stream (``--incremental``): every collection of the data set; 1% of each
  collection's documents updated between the full backup and the increments;
- ``--since-field updatedAt`` (``--incremental --since-field``): the ``orders``
  collection, the one whose documents carry ``updatedAt``; the full backup it is compared
  with is a ``--since-field`` backup of the same collection.

The section's helpers (run, check, say, load) come from bench.py, passed in by ``main``.
"""

from __future__ import annotations

import datetime as dt
import os
from types import SimpleNamespace
from typing import Any

from pymongo import MongoClient, UpdateOne

DB = "bench_inc"
CHANGED = 0.01


def change_one_percent(uri: str, db: str) -> int:
    """Update 1% of every collection's documents (orders get a new updatedAt)."""
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    changed = 0
    with MongoClient(uri) as client:
        database = client[db]
        for name in sorted(database.list_collection_names()):
            collection = database[name]
            total = collection.estimated_document_count()
            step = max(1, round(1 / CHANGED))
            ids = [d["_id"] for i, d in enumerate(collection.find({}, {"_id": 1})) if i % step == 0]
            update = {"$set": {"bench_changed": True}}
            if name == "orders":
                update["$set"]["updatedAt"] = now
            for start in range(0, len(ids), 1000):
                chunk = ids[start : start + 1000]
                collection.bulk_write([UpdateOne({"_id": i}, update) for i in chunk])
            changed += len(ids)
            assert len(ids) <= total
    return changed


def section_increments(c: Any, tools: SimpleNamespace) -> None:
    say, check = tools.say, tools.check
    tools.load(c.uri, DB, c.args.n)
    with MongoClient(c.uri) as client:  # what a user of --since-field would create
        client[DB].orders.create_index("updatedAt")
    backup = [*c.mb, "backup", "--uri", c.uri, "--db", DB, "--out-dir", "{TMP}", "-q"]
    full, full_archive = c.run("increments", "inc_full", backup, ours=True, keep=True, repeat=1)
    orders = [*backup, "--collection", "orders", "--since-field", "updatedAt"]
    full_orders, orders_archive = c.run(
        "increments", "inc_full_orders", orders, ours=True, keep=True, repeat=1
    )
    changed = change_one_percent(c.uri, DB)
    say(f"changed {changed} documents (1% of each collection) after the full backups")
    if full and full_archive:
        inc, inc_archive = c.run(
            "increments",
            "inc_changes",
            [*backup, "--incremental", "--base", full_archive],
            ours=True,
            keep=True,
        )
        _compare(check, "changes", full, full_archive, inc, inc_archive)
    if full_orders and orders_archive:
        inc, inc_archive = c.run(
            "increments",
            "inc_field",
            [*orders, "--incremental", "--base", orders_archive],
            ours=True,
            keep=True,
        )
        _compare(check, "field", full_orders, orders_archive, inc, inc_archive)
    with MongoClient(c.uri) as client:
        client.drop_database(DB)


def _compare(check: Any, mode: str, full: Any, full_archive: str, inc: Any, archive: Any) -> None:
    if inc is None or not archive:
        return
    check(f"RATIO increment({mode})/full wall", inc.wall / full.wall, 0.10)
    full_size, inc_size = os.path.getsize(full_archive), os.path.getsize(archive)
    check(
        f"RATIO increment({mode})/full archive size ({inc_size} / {full_size} bytes)",
        inc_size / full_size,
        0.05,
        "{:.4f}",
    )
