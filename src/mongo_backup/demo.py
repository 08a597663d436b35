"""The demo: the whole job on an embedded server, with nothing to set up.

Starts SecantusDB on a free port with a temporary store, loads a small shop database
(orders with nested documents, arrays, Decimal128, Int64, UUIDs, dates; users; a capped
log; a validated collection; a view; secondary indexes), then: backup -> verify ->
restore into a scratch database -> verify against it. Prints a summary table.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import uuid
from pathlib import Path
from typing import Any

from bson import Binary, Decimal128, Int64, ObjectId, Regex, Timestamp
from pymongo import MongoClient

from .backup import BackupOptions, run_backup
from .cli.tables import print_table
from .embedded import EmbeddedServer
from .errors import EXIT_FAILURE, EXIT_OK
from .restore import restore
from .verify import verify

logger = logging.getLogger(__name__)

DEMO_DB = "shop"
RESTORED_DB = "shop_restored"


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


def run_demo(out_dir: str, orders: int = 2000, quiet: bool = False) -> int:
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
        print(f"restore: into {RESTORED_DB!r}, exit code {restored.exit_code} ({took})")

        compared = verify(archive, against_uri=server.uri, against_db=RESTORED_DB)
        verdict = "identical, byte for byte"
        if not compared.ok:
            verdict = "DIFFERENT: " + "; ".join(compared.problems)
        print(f"compare: {verdict}")
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
    ok = checked.ok and compared.ok and restored.exit_code == 0 and backup_result.exit_code == 0
    print("demo finished: all good" if ok else "demo finished with problems (see above)")
    return EXIT_OK if ok else EXIT_FAILURE
