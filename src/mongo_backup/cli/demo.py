"""The demo: the whole job on an embedded server, with nothing to set up.

Starts SecantusDB on a free port with a temporary store, loads a small shop database
(orders with nested documents, arrays, Decimal128, Int64, UUIDs, dates; users; a capped
log; a validated collection; a view; secondary indexes), then: backup -> verify ->
restore into a scratch database -> verify against it. Then it changes the shop (inserts,
updates, deletes, a new index), takes an incremental backup (the change events since the
first one), restores the chain into a second scratch database and compares it with the
shop. Prints a summary table.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import uuid
from pathlib import Path
from typing import Any

from bson import Binary, Decimal128, Int64, ObjectId, Regex, Timestamp
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient

from ..backup.options import BackupOptions
from ..backup.run import run_backup
from ..mongo.embedded import EmbeddedServer
from ..restore.run import restore
from ..verify.run import id_key, verify
from .tables import print_table

logger = logging.getLogger(__name__)

DEMO_DB = "shop"
RESTORED_DB = "shop_restored"
CHAIN_DB = "shop_chain"
_RAW: CodecOptions[RawBSONDocument] = CodecOptions(document_class=RawBSONDocument)


def load_demo_data(client: MongoClient[Any], db_name: str, orders: int, seed: int = 7) -> None:
    rnd = random.Random(seed)
    db = client[db_name]
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    db.create_collection("audit_log", capped=True, size=1 << 20, max=500)
    db.create_collection(
        "products",
        validator={
            "$jsonSchema": {
                "bsonType": "object",
                "required": ["sku", "price"],
                "properties": {"price": {"bsonType": "decimal"}},
            }
        },
    )
    db.products.insert_many(
        [
            {
                "sku": f"SKU-{i:04d}",
                "price": Decimal128(f"{rnd.randrange(100, 99999) / 100:.2f}"),
                "name": f"Product {i} — “quoted”, naïve café",
                "tags": rnd.sample(["red", "eco", "new", "sale"], 2),
            }
            for i in range(200)
        ]
    )
    db.users.insert_many(
        [
            {
                "_id": i,
                "name": f"user{i}",
                "pattern": Regex(f"^u{i}", "i"),
                "score": Int64(i * 3),
                "joined": start + dt.timedelta(days=i % 900),
                "avatar": Binary(rnd.randbytes(64)),
            }
            for i in range(max(1, orders // 10))
        ]
    )
    batch = []
    for i in range(orders):
        batch.append(
            {
                "_id": ObjectId(),
                "orderNo": Int64(10_000_000 + i),
                "customer": {
                    "userId": i % max(1, orders // 10),
                    "email": f"u{i}@example.com",
                    "address": {"city": rnd.choice(["Oslo", "Lima", "Pune", "Kyiv"])},
                },
                "items": [
                    {
                        "sku": f"SKU-{rnd.randrange(200):04d}",
                        "qty": rnd.randrange(1, 5),
                        "price": Decimal128(f"{rnd.randrange(100, 99999) / 100:.2f}"),
                    }
                    for _ in range(rnd.randrange(1, 5))
                ],
                "total": rnd.random() * 1000,
                "status": rnd.choice(["new", "paid", "shipped"]),
                "createdAt": start + dt.timedelta(minutes=7 * i),
                "ref": Binary.from_uuid(uuid.UUID(int=rnd.getrandbits(128))),
                "flags": {"gift": i % 5 == 0, "ts": Timestamp(1_700_000_000 + i, 1)},
                "note": None if i % 3 else "leave at the door\u2028(second line)",
            }
        )
        if len(batch) == 1000:
            db.orders.insert_many(batch)
            batch = []
    if batch:
        db.orders.insert_many(batch)
    db.audit_log.insert_many(
        [{"at": start + dt.timedelta(seconds=i), "event": "login"} for i in range(100)]
    )
    db.orders.create_index("customer.email", unique=True)
    db.orders.create_index([("status", 1), ("createdAt", -1)], name="status_created")
    db.users.create_index("joined", expireAfterSeconds=10**9)
    db.command("create", "paid_orders", viewOn="orders", pipeline=[{"$match": {"status": "paid"}}])


def run_demo(out_dir: str, orders: int = 2000, quiet: bool = False) -> bool:
    print("starting an embedded SecantusDB server ...", flush=True)
    with EmbeddedServer() as server:
        client: MongoClient[Any] = MongoClient(server.uri)
        print(f"server on {server.uri}; loading the demo database {DEMO_DB!r} ...", flush=True)
        load_demo_data(client, DEMO_DB, orders)

        backup_result = run_backup(BackupOptions(uri=server.uri, db=DEMO_DB, out_dir=Path(out_dir)))
        print(f"backup:  {backup_result.archive} ({backup_result.duration:.1f} s)")
        assert backup_result.archive is not None
        archive = str(backup_result.archive)

        checked = verify(archive)
        print(f"verify:  {'OK' if checked.ok else 'FAILED: ' + '; '.join(checked.problems)}")

        restored = restore(archive, server.uri, RESTORED_DB, drop=True)
        took = f"{restored.duration:.1f} s"
        print(f"restore: into {RESTORED_DB!r}, complete: {restored.complete} ({took})")

        compared = verify(archive, against_uri=server.uri, against_db=RESTORED_DB)
        verdict = "identical, byte for byte"
        if not compared.ok:
            verdict = "DIFFERENT: " + "; ".join(compared.problems)
        print(f"compare: {verdict}")
        chain_ok = _increment_step(client, server.uri, out_dir)
        client.close()

    against = {report.name: report for report in compared.against or []}
    outcomes = {outcome.name: outcome for outcome in restored.collections}
    rows = []
    for entry in backup_result.manifest.collections:
        outcome, diff = outcomes.get(entry.name), against.get(entry.name)
        rows.append(
            [
                entry.name,
                entry.type,
                str(entry.count),
                f"{entry.bytes:,}",
                str(len(entry.indexes)),
                str(outcome.inserted) if outcome else "-",
                "same" if diff is not None and diff.ok else "DIFFERENT",
            ]
        )
    print_table(
        f"demo summary ({archive})",
        ["collection", "type", "documents", "bytes", "indexes", "restored", "compared"],
        rows,
    )
    ok = checked.ok and compared.ok and restored.complete and backup_result.complete
    ok = ok and chain_ok
    print("demo finished: all good" if ok else "demo finished with problems (see above)")
    return ok


def change_the_shop(client: MongoClient[Any]) -> None:
    """A day in the shop: new orders, paid and cancelled ones, a new index."""
    db = client[DEMO_DB]
    db.orders.insert_many(
        [
            {"orderNo": Int64(20_000_000 + i), "customer": {"email": f"n{i}@example.com"}}
            | {"status": "new", "createdAt": dt.datetime(2026, 11, 26, tzinfo=dt.UTC)}
            for i in range(25)
        ]
    )
    db.orders.update_many({"status": "new"}, {"$set": {"status": "paid"}, "$inc": {"edits": 1}})
    db.orders.delete_many({"status": "shipped", "flags.gift": True})
    db.users.update_one({"_id": 0}, {"$unset": {"avatar": ""}, "$set": {"name": "renamed"}})
    db.products.create_index("name")


def snapshot(client: MongoClient[Any], db_name: str) -> dict[str, Any]:
    """Every collection's documents (exact bytes by _id) and index names."""
    db = client.get_database(db_name, codec_options=_RAW)
    state: dict[str, Any] = {}
    for name in db.list_collection_names():
        if db[name].options().get("viewOn"):
            continue
        documents = {id_key(bytes(doc.raw)): bytes(doc.raw) for doc in db[name].find()}
        state[name] = (documents, sorted(index["name"] for index in db[name].list_indexes()))
    return state


def _increment_step(client: MongoClient[Any], uri: str, out_dir: str) -> bool:
    change_the_shop(client)
    result = run_backup(BackupOptions(uri=uri, db=DEMO_DB, out_dir=Path(out_dir), incremental=True))
    changes = result.manifest.changes
    events = changes.count if changes else 0
    print(f"increment: {result.archive} ({events} change events since the first backup)")
    chain = restore(str(result.archive), uri, CHAIN_DB, drop=True)
    same = snapshot(client, CHAIN_DB) == snapshot(client, DEMO_DB)
    verdict = "identical to the shop now" if same else "DIFFERENT from the shop"
    print(f"restore of the chain (full + increment) into {CHAIN_DB!r}: {verdict}")
    return same and chain.complete and result.complete
