"""The chaos campaign's world: one SecantusDB server with users (killed and restarted on
its own store), the loopback fault proxy in front of it, an S3 server, the source data,
and the faults themselves. Everything runs on 127.0.0.1; nothing reaches further.

Kept apart from campaign.py (the runs and their verdicts) so that a run reads as what
it does, not how a server is restarted.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from bson import Decimal128, ObjectId
from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient, WriteConcern

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "src")]

from faultproxy import FaultProxy  # noqa: E402
from mongo_backup.mongo.embedded import EmbeddedServer, free_port  # noqa: E402
from s3tools import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, MotoS3  # noqa: E402

USER = "chaos-backup"
SOURCE = "shop"
BUCKET = "chaos"


@dataclass
class World:
    root: Path
    secret: str = field(default_factory=lambda: "Pw" + secrets.token_hex(12))
    server: EmbeddedServer | None = None
    proxy: FaultProxy | None = None
    s3: MotoS3 | None = None
    port: int = field(default_factory=free_port)

    # -- the pieces ----------------------------------------------------------------------

    def start(self) -> World:
        store = self.root / "store"
        first = EmbeddedServer(storage_path=str(store), port=self.port).start()
        try:
            with MongoClient(first.uri, serverSelectionTimeoutMS=20_000) as client:
                client.admin.command(
                    "createUser", USER, pwd=self.secret, roles=[{"role": "root", "db": "admin"}]
                )
                load_source(client[SOURCE])
        finally:
            first.stop()
        self.server = self._server()
        self.server.start()
        self.proxy = FaultProxy("127.0.0.1", self.port).start()
        os.environ.update(
            AWS_ACCESS_KEY_ID=ACCESS_KEY_ID,
            AWS_SECRET_ACCESS_KEY=SECRET_ACCESS_KEY,
            AWS_REGION=REGION,
        )
        self.s3 = MotoS3(free_port(), bucket=BUCKET)
        self.s3.start()
        self.s3.client().create_bucket(Bucket=BUCKET)
        return self

    def _server(self) -> EmbeddedServer:
        return EmbeddedServer(
            storage_path=str(self.root / "store"), port=self.port, extra_args=["--auth"]
        )

    def stop(self) -> None:
        for part in (self.proxy, self.server, self.s3):
            if part is not None:
                part.stop()

    @property
    def uri(self) -> str:
        """What the tool is given: through the proxy, with the password in it."""
        assert self.proxy is not None
        return (
            f"mongodb://{USER}:{self.secret}@127.0.0.1:{self.proxy.port}/"
            "?directConnection=true&authSource=admin"
        )

    @property
    def direct_uri(self) -> str:
        """Straight to the server, for the campaign's own checks."""
        return (
            f"mongodb://{USER}:{self.secret}@127.0.0.1:{self.port}/"
            "?directConnection=true&authSource=admin"
        )

    def direct(self) -> MongoClient[Any]:
        """A client for checking, straight to the server (no proxy)."""
        return MongoClient(
            f"mongodb://127.0.0.1:{self.port}/?directConnection=true",
            username=USER,
            password=self.secret,
            authSource="admin",
            serverSelectionTimeoutMS=30_000,
            document_class=RawBSONDocument,
        )

    def ensure_up(self) -> None:
        """Everything healed and running, as an operator finds it before a retry."""
        assert self.proxy is not None and self.s3 is not None
        self.proxy.heal()
        if self.server is None or self.server._process is None:
            self.server = self._server()
            self.server.start()
        if self.s3._server is None:
            self.s3.start()

    def kill_server(self) -> None:
        assert self.server is not None
        self.server.kill()

    def restart_server(self) -> None:
        self.server = self._server()
        self.server.start()


def load_source(db: Any) -> None:
    """Small but varied: nested documents, most BSON types, indexes, options, a view."""
    rng = random.Random(11)
    base = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    db.create_collection(
        "products", validator={"$jsonSchema": {"bsonType": "object", "required": ["sku"]}}
    )
    db.products.insert_many(
        [
            {"sku": f"P{i:04d}", "price": Decimal128(Decimal(i) / 4), "tags": ["a", i]}
            for i in range(300)
        ]
    )
    db.products.create_index("sku", unique=True)
    db.orders.insert_many(
        [
            {
                "_id": ObjectId(),
                "n": i,
                "at": base + dt.timedelta(minutes=i),
                "total": rng.random() * 100,
                "lines": [{"sku": f"P{rng.randrange(300):04d}", "q": rng.randrange(1, 5)}],
                "note": "é" * rng.randrange(0, 30),
                "blob": os.urandom(rng.randrange(0, 64)),
            }
            for i in range(1500)
        ]
    )
    db.orders.create_index([("at", -1), ("n", 1)], name="at_n")
    db.users.insert_many([{"_id": f"u{i}", "email": f"u{i}@example.org"} for i in range(400)])
    db.users.create_index("email", unique=True)
    db.command(
        "create", "big_orders", viewOn="orders", pipeline=[{"$match": {"total": {"$gt": 90}}}]
    )


def change_source(db: Any, rng: random.Random) -> None:
    """Some inserts, updates and deletes, for an increment to capture. Written as an
    application that cares would: acknowledged once durable, and the same writes again on a
    retry (SecantusDB streams a change before its journal holds it, so a SIGKILL can take
    back a write a backup has already seen; a retry that wrote other values would make the
    source differ from any backup, through no fault of the backup's)."""
    db = db.with_options(write_concern=WriteConcern("majority", j=True))
    for _ in range(rng.randrange(5, 40)):
        # From a bounded set of ids: inserts at first, then replaces, so that the source
        # (and every run's backup and check) does not grow over a long campaign.
        user = {"_id": f"x{rng.randrange(300)}", "email": f"{rng.getrandbits(48):012x}@x.org"}
        db.users.replace_one({"_id": user["_id"]}, user, upsert=True)  # a retry is harmless
    db.orders.update_many({"n": {"$mod": [rng.randrange(20, 60), 0]}}, {"$inc": {"total": 1}})
    db.products.delete_many({"sku": {"$in": [f"P{rng.randrange(300):04d}" for _ in range(3)]}})


def snapshot(client: MongoClient[Any], db_name: str) -> dict[str, Any]:
    """What must come back: every document's bytes, options, indexes, views."""
    db = client[db_name]
    found: dict[str, Any] = {}
    for info in db.list_collections():
        name = info["name"]
        if name.startswith("system."):
            continue
        options = {k: v for k, v in dict(info.get("options", {})).items() if k != "uuid"}
        entry: dict[str, Any] = {"type": info.get("type"), "options": options}
        if info.get("type") != "view":
            entry["documents"] = sorted(raw.raw for raw in db[name].find({}, sort=[("_id", 1)]))
            entry["indexes"] = sorted(
                repr(sorted((k, v) for k, v in dict(ix).items() if k not in ("ns", "v")))
                for ix in db[name].list_indexes()
            )
        found[name] = entry
    return found


# -- faults --------------------------------------------------------------------------------


@dataclass
class Fault:
    name: str
    at: float  # seconds after the command starts
    apply: Callable[[World, subprocess.Popen[bytes]], None]

    @property
    def survivable(self) -> bool:
        """A passing fault of the server, the network or the store: a backup rides it
        out by itself (retries). A killed client or a full disk needs the user's retry."""
        return not self.name.startswith("client-kill")

    def label(self) -> str:
        return f"{self.name}@{self.at:.1f}s"


def _kill_client(world: World, process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # the tool and its converter children


def _kill_mid_export(out: Path, rate: int, after: float) -> Callable[[World, Any], None]:
    """Kill the client while it is inside an export: a crash at a random moment seldom
    lands there (the campaign's collections take a fraction of a second to read), yet that
    is where a checkpoint that runs ahead of its data loses documents. The reads are slowed
    so that exports last, and the kill comes ``after`` seconds past the first checkpoint."""

    def run(world: World, process: subprocess.Popen[bytes]) -> None:
        assert world.proxy is not None
        world.proxy.slow(rate)
        try:
            deadline = time.monotonic() + 3  # no export under way by then: no kill
            while process.poll() is None and time.monotonic() < deadline:
                if _has_checkpoint(out):
                    time.sleep(after)
                    _kill_client(world, process)
                    return
                time.sleep(0.005)
        finally:
            world.proxy.slow(None)

    return run


def _has_checkpoint(out: Path) -> bool:
    try:
        return any(out.rglob("*.checkpoint"))
    except OSError:  # a folder went away while it was searched: the export moved on
        return False


def choose_faults(rng: random.Random, op: str, horizon: float, out: Path) -> list[Fault]:
    """One fault, or two, at random moments within ``horizon`` seconds; ``out`` is where a
    backup writes (for the fault that waits for an export to be under way)."""
    down = rng.uniform(0.3, 1.2)
    stall = rng.uniform(1.0, 3.0)
    refuse = rng.uniform(0.5, 3.0)
    rate = rng.choice([32, 128, 512])
    cut = rng.randrange(2_000, 60_000)

    def server_kill(world: World, _: subprocess.Popen[bytes]) -> None:
        world.kill_server()
        time.sleep(down)
        world.restart_server()

    def proxy(action: Callable[[FaultProxy], None]) -> Callable[[World, Any], None]:
        def run(world: World, _: Any) -> None:
            assert world.proxy is not None
            action(world.proxy)

        return run

    def slow(world: World, _: Any) -> None:
        assert world.proxy is not None
        world.proxy.slow(rate)
        time.sleep(rng.uniform(0.5, 2.0))
        world.proxy.slow(None)

    def flap(world: World, _: Any) -> None:
        # Three drops 0.2 s apart: a flapping link. The driver's own single retry of a
        # read absorbs one drop; only the tool's retries ride out three.
        assert world.proxy is not None
        for _ in range(3):
            world.proxy.drop_all()
            time.sleep(0.2)

    cut_for = rng.uniform(1.0, 3.0)

    def cut_connections(world: World, _: Any) -> None:
        # A passing fault like the others: for a while every connection is cut after
        # ``cut`` bytes, then the path heals (a cut that never heals is an outage no
        # retry can ride out, which says nothing about the tool).
        assert world.proxy is not None
        world.proxy.cut_after(cut, "to_client")
        time.sleep(cut_for)
        world.proxy.heal()

    def s3_restart(world: World, _: Any) -> None:
        assert world.s3 is not None
        world.s3.stop()
        time.sleep(down)
        world.s3.start()

    kinds: dict[str, Callable[[World, subprocess.Popen[bytes]], None]] = {
        f"server-kill(down {down:.1f}s)": server_kill,
        "proxy-drop(x3)": flap,
        f"proxy-stall({stall:.1f}s)": proxy(lambda p: p.stall(stall)),
        f"proxy-slow({rate}KiB/s)": slow,
        f"proxy-cut({cut}B for {cut_for:.1f}s)": cut_connections,
        f"proxy-refuse({refuse:.1f}s)": proxy(lambda p: p.refuse(refuse)),
        "client-kill": _kill_client,
    }
    if op == "backup-dest":
        kinds[f"s3-restart(down {down:.1f}s)"] = s3_restart
    names = rng.sample(sorted(kinds), k=rng.choice([1, 1, 2]))
    if op != "restore" and rng.random() < 0.25:
        # A quarter of the backups crash inside their export (see _kill_mid_export).
        after = rng.uniform(0.0, 0.4)
        name = f"client-kill-mid-export(+{after:.2f}s)"
        kinds[name] = _kill_mid_export(out, rate, after)
        names = [name, *[n for n in names[:1] if n != "client-kill"]]
    return sorted((Fault(n, _start(n, rng, horizon), kinds[n]) for n in names), key=lambda f: f.at)


def _start(name: str, rng: random.Random, horizon: float) -> float:
    # The mid-export kill times itself (from the first checkpoint): it starts at once.
    return 0.0 if name.startswith("client-kill-mid-export") else rng.uniform(0.05, horizon)


def disk_limit(rng: random.Random) -> int | None:
    """A full disk for some runs: the largest file the tool may write (RLIMIT_FSIZE)."""
    return rng.randrange(20_000, 800_000) if rng.random() < 0.15 else None


def inject(world: World, process: subprocess.Popen[bytes], faults: list[Fault]) -> threading.Thread:
    """Apply ``faults`` on time while ``process`` runs (a fault after its end is moot)."""

    def run() -> None:
        started = time.monotonic()
        for fault in faults:
            wait = fault.at - (time.monotonic() - started)
            if wait > 0:
                try:
                    process.wait(timeout=wait)
                    return  # finished before the fault: nothing left to hurt
                except subprocess.TimeoutExpired:
                    pass
            fault.apply(world, process)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def scrub_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
