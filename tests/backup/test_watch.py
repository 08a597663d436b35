"""``mongo-backup watch``: continuous increments, killed and restarted, against real writers.

The source is written by three writer threads (inserts; updates; deletes, a drop and a
rename) while a watch runs. Whatever happens to the watch (SIGKILL at random moments,
a server restart, a step-down, lost history), restoring the location's chain must give
the source byte for byte, and ``restore LOCATION --until T`` the source as it was at T.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from bson import Timestamp
from pymongo import MongoClient, WriteConcern
from pyrage import x25519

from chaintools import as_pair, assert_same_snapshot, snapshot
from conftest import OPLOG_CAP, CliRunner
from mongo_backup.backup.options import BackupOptions
from mongo_backup.backup.watch import Cycle, WatchOptions, WatchResult, run_watch
from mongo_backup.mongo.embedded import EmbeddedServer
from resiliencetools import fail_point, fast_failover_uri
from restoretools import assert_single_error_line
from s3tools import MotoS3, moto_s3_fixture  # noqa: F401  (registers the fixture moto_s3)


class Writers:
    """Three threads writing ``db`` until stopped; ``pause()`` holds them all."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self.run = threading.Event()
        self.done = threading.Event()
        self.idle = [threading.Event() for _ in range(3)]
        self.threads = [
            threading.Thread(target=target, args=(n,), daemon=True)
            for n, target in enumerate((self._inserts, self._updates, self._deletes))
        ]
        self.errors: list[BaseException] = []

    def start(self) -> None:
        self.run.set()
        for thread in self.threads:
            thread.start()

    def pause(self) -> None:
        self.run.clear()
        for idle in self.idle:
            assert idle.wait(30), "a writer did not pause"

    def resume(self) -> None:
        for idle in self.idle:
            idle.clear()
        self.run.set()

    def stop(self) -> None:
        self.pause()
        self.done.set()
        self.run.set()
        for thread in self.threads:
            thread.join(30)
        assert not self.errors, self.errors

    def _loop(self, number: int, step: Any) -> None:
        count = 0
        try:
            while not self.done.is_set():
                if not self.run.is_set():
                    self.idle[number].set()
                    self.run.wait()
                    continue
                step(count)
                count += 1
                time.sleep(0.02)  # ~150 writes/s in all: the server keeps its breath
        except BaseException as error:  # reported by stop()
            self.errors.append(error)
        finally:
            self.idle[number].set()

    def _inserts(self, number: int) -> None:
        self._loop(number, lambda n: self.db.events.insert_one({"_id": n, "at": time.time()}))

    def _updates(self, number: int) -> None:
        rng = random.Random(1)
        self._loop(
            number,
            lambda n: self.db.orders.update_one(
                {"_id": rng.randrange(200)}, {"$inc": {"n": 1}, "$set": {"last": n}}
            ),
        )

    def _deletes(self, number: int) -> None:
        rng = random.Random(2)

        def step(n: int) -> None:
            if n == 60:
                self.db.tmp.drop()
            elif n == 120:
                self.db.staging.rename("archived")
            else:
                self.db.orders.delete_one({"_id": rng.randrange(200)})

        self._loop(number, step)


def seeded(client: Any, name: str) -> Any:
    db = client.get_database(name, write_concern=WriteConcern("majority"))
    db.orders.insert_many([{"_id": i, "n": 0, "pad": "x" * 100} for i in range(200)])
    db.orders.create_index("n")
    db.staging.insert_many([{"_id": i} for i in range(20)])
    db.tmp.insert_many([{"_id": i} for i in range(10)])
    return db


def archives(out: Path) -> list[Path]:
    folder = out / "backup_data"
    return sorted(folder.glob("backup_*.tar*")) if folder.is_dir() else []


def restored(cli: CliRunner, uri: str, source: Path | str, target: str, *extra: str) -> None:
    result = cli("restore", source, "--uri", uri, "--db", target, "--drop", "-q", *extra)
    assert result.code == 0, result.err


def test_watch_killed_five_times_restores_every_write_and_every_moment(
    cli: CliRunner, client: MongoClient[Any], mongo_uri: str, db_name: str, tmp_path: Path
) -> None:
    db = seeded(client, db_name)
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "mongo_backup", "watch", "--uri", mongo_uri, "--db", db_name,
        "--out-dir", str(out), "--interval", "0.5", "--checkpoint-interval", "0.1", "-q",
    ]  # fmt: skip
    writers = Writers(db)
    writers.start()
    rng = random.Random(16)
    moments: list[tuple[Timestamp, Any]] = []
    try:
        for round_ in range(5):
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
            time.sleep(rng.uniform(1.5, 3.5))
            if round_ in (1, 2, 3):
                # A moment to restore to must fall after the first full backup's point.
                deadline = time.monotonic() + 60
                while not archives(out) and time.monotonic() < deadline:
                    time.sleep(0.1)
                writers.pause()
                moments.append(
                    (client.admin.command("ping")["operationTime"], snapshot(client, db_name))
                )
                writers.resume()
                time.sleep(rng.uniform(0.2, 0.8))
            process.send_signal(signal.SIGKILL)
            process.wait(30)
        final = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(2.0)
    finally:
        writers.stop()
    expected = snapshot(client, db_name)
    final.send_signal(signal.SIGTERM)  # closes the open increment, exit 0
    _, err = final.communicate(timeout=60)
    assert final.returncode == 0, err.decode()

    target = f"{db_name}_w"
    try:
        restored(cli, mongo_uri, out, target)
        assert_same_snapshot(snapshot(client, target), expected, "the whole chain")
        for number, (moment, then) in enumerate(moments):
            restored(cli, mongo_uri, out, target, "--until", as_pair(moment))
            assert_same_snapshot(snapshot(client, target), then, f"--until moment {number}")
    finally:
        client.drop_database(target)
    listing = cli("list", out)
    assert listing.code == 0 and "window " in listing.out and "gap " not in listing.out


def test_sigterm_closes_the_open_increment(
    cli: CliRunner, client: MongoClient[Any], mongo_uri: str, db_name: str, tmp_path: Path
) -> None:
    db = seeded(client, db_name)
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "mongo_backup", "watch", "--uri", mongo_uri, "--db", db_name,
         "--out-dir", str(out), "--interval", "3600"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not archives(out) and time.monotonic() < deadline:
        time.sleep(0.1)
    db.events.insert_one({"_id": "just before SIGTERM"})  # an hour before the next increment
    expected = snapshot(client, db_name)
    process.send_signal(signal.SIGTERM)
    out_text, err = process.communicate(timeout=60)
    assert process.returncode == 0, err.decode()
    assert "one last increment closes the open window" in err.decode()
    printed = out_text.decode().split()
    assert len(printed) == 2 and printed == [str(p) for p in archives(out)]
    target = f"{db_name}_t"
    try:
        restored(cli, mongo_uri, out, target)
        assert_same_snapshot(snapshot(client, target), expected)
    finally:
        client.drop_database(target)


# -- in-process watches ------------------------------------------------------------------


class Watch:
    """``run_watch`` in a thread; ``wait_for(n)`` waits for n successful cycles more."""

    def __init__(self, options: WatchOptions) -> None:
        self.stop = threading.Event()
        self.cycles: list[Cycle] = []
        self.changed = threading.Condition()
        self.result: WatchResult | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(options,), daemon=True)

    def _run(self, options: WatchOptions) -> None:
        try:
            self.result = run_watch(options, self.stop, self._seen)
        except BaseException as error:
            self.error = error

    def _seen(self, cycle: Cycle) -> None:
        with self.changed:
            self.cycles.append(cycle)
            self.changed.notify_all()

    def __enter__(self) -> Watch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(120)

    def ok(self) -> int:
        return sum(cycle.ok for cycle in self.cycles)

    def wait_for(self, more: int, timeout: float = 60) -> None:
        want = self.ok() + more
        with self.changed:
            assert self.changed.wait_for(
                lambda: self.ok() >= want or self.error is not None, timeout
            ), f"{more} more cycles did not close: {[c.error for c in self.cycles]}"
        assert self.error is None, self.error


def options(uri: str, db: str, out: Path, **extra: Any) -> WatchOptions:
    backup = BackupOptions(uri=uri, db=db, out_dir=out, retries=2, retry_delay=0.1)
    return WatchOptions(backup=backup, interval=0.3, retry_wait=0.2, **extra)


def test_watch_rides_out_a_step_down(
    cli: CliRunner,
    client: MongoClient[Any],
    mongo_uri: str,
    db_name: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    db = seeded(client, db_name)
    out = tmp_path / "out"
    with Watch(options(fast_failover_uri(mongo_uri), db_name, out)) as watch:
        watch.wait_for(1)
        # "not primary" for the next change stream openings: as during an election.
        with fail_point(client, {"times": 2}, failCommands=["aggregate"], errorCode=10107):
            db.orders.update_many({}, {"$inc": {"n": 5}})
            watch.wait_for(1)
        db.events.insert_one({"_id": "after"})
        watch.wait_for(2)
    assert watch.result is not None and watch.result.complete
    # Ridden out inside the increment (the capture retries) or by the next cycle.
    retried = "reading the change stream" in caplog.text or "failed" in caplog.text
    assert retried or watch.result.failures >= 1, "the fail point did not reach the watch"
    expected = snapshot(client, db_name)
    target = f"{db_name}_s"
    try:
        restored(cli, mongo_uri, out, target)
        assert_same_snapshot(snapshot(client, target), expected)
    finally:
        client.drop_database(target)


def test_watch_survives_a_server_restart(
    cli: CliRunner, own_server: EmbeddedServer, tmp_path: Path
) -> None:
    uri, out = own_server.uri, tmp_path / "out"
    with MongoClient(uri) as client:
        db = seeded(client, "restart")
        # Journaled before the kill: an update the server loses in the crash would still
        # be in the change events the watch had read (a rollback), not in the source.
        durable = db.with_options(write_concern=WriteConcern("majority", j=True))
        with Watch(options(uri, "restart", out)) as watch:
            watch.wait_for(1)
            durable.orders.update_many({}, {"$set": {"before": True}})
            own_server.kill()
            time.sleep(1.0)
            own_server.start()
            db.orders.update_many({}, {"$set": {"after": True}})
            watch.wait_for(2)
        expected = snapshot(client, "restart")
        restored(cli, uri, out, "restart_copy")
        assert_same_snapshot(snapshot(client, "restart_copy"), expected)


def test_lost_history_starts_a_new_chain(
    cli: CliRunner, pruning_server: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    uri, out = pruning_server, tmp_path / "out"
    with MongoClient(uri) as client:
        items = client["lost"]["items"]
        items.insert_many([{"_id": i} for i in range(10)])
        assert cli("backup", "--uri", uri, "--db", "lost", "--out-dir", out, "-q").code == 0
        for i in range(10, 10 + 3 * OPLOG_CAP):
            items.insert_one({"_id": i})
        client.admin.command("secantusAdmin.pruneOplog")
        with Watch(options(uri, "lost", out)) as watch:
            watch.wait_for(2)
        kinds = [cycle.kind for cycle in watch.cycles if cycle.ok]
        assert kinds[0] == "full", kinds
        assert any("starting a new chain with a full backup" in r.message for r in caplog.records)
        expected = snapshot(client, "lost")
        restored(cli, uri, out, "lost_copy")
        assert_same_snapshot(snapshot(client, "lost_copy"), expected)
        listing = cli("list", out)
        assert "gap lost:" in listing.out, listing.out


def test_max_increment_bytes_closes_increments_early(
    cli: CliRunner, client: MongoClient[Any], mongo_uri: str, db_name: str, tmp_path: Path
) -> None:
    db = seeded(client, db_name)
    out = tmp_path / "out"
    cap = 20_000
    with Watch(options(mongo_uri, db_name, out, max_increment_bytes=cap)) as watch:
        watch.wait_for(1)
        db.bulk.insert_many([{"_id": i, "pad": "p" * 500} for i in range(300)])  # ~170 KB
        time.sleep(0.5)
        watch.wait_for(3)
    capped = [cycle for cycle in watch.cycles if cycle.capped]
    assert len(capped) >= 3, [c.result.manifest.changes for c in watch.cycles if c.result]
    expected = snapshot(client, db_name)
    target = f"{db_name}_m"
    try:
        restored(cli, mongo_uri, out, target)
        assert_same_snapshot(snapshot(client, target), expected)
    finally:
        client.drop_database(target)


def test_uploaded_chain_continues_from_the_saved_state(
    cli: CliRunner, client: MongoClient[Any], mongo_uri: str, db_name: str, tmp_path: Path
) -> None:
    """With --dest and no local copy, the next increment's base is the saved state."""
    db = seeded(client, db_name)
    out, dest = tmp_path / "out", tmp_path / "dest"
    for round_ in range(2):  # the second watch continues the first one's chain
        watched = options(mongo_uri, db_name, out)
        watched.backup.dest = str(dest)
        with Watch(watched) as watch:
            db.events.insert_one({"_id": f"round{round_}"})
            watch.wait_for(2)
    assert not archives(out)
    stored = sorted(dest.glob("backup_*.tar.zst"))
    assert len(stored) >= 4
    kinds = [line for line in cli("list", dest).out.splitlines() if " full " in line]
    assert len(kinds) == 1, "the second watch took a new full backup instead of continuing"
    expected = snapshot(client, db_name)
    target = f"{db_name}_d"
    try:
        restored(cli, mongo_uri, dest, target)
        assert_same_snapshot(snapshot(client, target), expected)
    finally:
        client.drop_database(target)


# -- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--interval", "0"], "--interval must be a positive number"),
        (["--interval", "x"], "invalid float value"),
        (["--max-increment-bytes", "0"], "not a size"),
        (["--full-every", "7x"], "invalid duration"),
        (["--incremental"], "unrecognized arguments"),
    ],
)
def test_bad_watch_options_are_one_line(
    cli: CliRunner, tmp_path: Path, extra: list[str], message: str
) -> None:
    result = cli(
        "watch", "--uri", "mongodb://127.0.0.1:1/", "--db", "d", "--out-dir", tmp_path, *extra
    )
    assert result.code == 2
    assert message in result.err
    assert not (tmp_path / "backup_data").exists()


def test_watch_on_a_standalone_server_is_refused(
    cli: CliRunner, standalone_uri: str, tmp_path: Path
) -> None:
    with MongoClient(standalone_uri) as client:
        client["solo"]["items"].insert_one({"_id": 1})
    result = cli(
        "watch", "--uri", standalone_uri, "--db", "solo", "--out-dir", tmp_path, "--interval", "0.2"
    )
    assert result.code == 2
    assert "replica set" in assert_single_error_line(result)
    assert not (tmp_path / "backup_data").exists()


def test_a_second_watch_of_the_same_database_is_refused(
    cli: CliRunner, mongo_uri: str, db_name: str, client: MongoClient[Any], tmp_path: Path
) -> None:
    seeded(client, db_name)
    with Watch(options(mongo_uri, db_name, tmp_path)) as watch:
        watch.wait_for(1)
        result = cli("watch", "--uri", mongo_uri, "--db", db_name, "--out-dir", tmp_path)
    assert result.code == 1
    # (the first watch runs in this process: its log lines share stderr)
    last = result.err.strip().splitlines()[-1]
    assert last.startswith("mongo-backup: error:") and "is in use by a watch of" in last


def test_encrypted_watch_to_s3_restores_any_moment_from_the_url(
    cli: CliRunner,
    client: MongoClient[Any],
    mongo_uri: str,
    db_name: str,
    tmp_path: Path,
    moto_s3: MotoS3,
) -> None:
    """Encrypted increments uploaded with no local copy: the chain continues from the
    saved state, and ``restore URL --until`` picks the backup from the objects' metadata."""
    db = seeded(client, db_name)
    identity = x25519.Identity.generate()
    (tmp_path / "key.txt").write_text(f"{identity}\n")
    url = moto_s3.fresh_url()
    watched = options(mongo_uri, db_name, tmp_path / "out")
    watched.backup.dest, watched.backup.endpoint_url = url, moto_s3.endpoint_url
    watched.backup.encrypt_to = [str(identity.to_public())]
    with Watch(watched) as watch:
        watch.wait_for(1)
        db.events.insert_one({"_id": "first"})
        watch.wait_for(2)
        moment = client.admin.command("ping")["operationTime"]
        then = snapshot(client, db_name)
        time.sleep(1.1)  # the next writes fall in a later second than the moment
        db.events.insert_one({"_id": "second"})
        watch.wait_for(2)
    assert not archives(tmp_path / "out")
    listing = cli("list", url, "--endpoint-url", moto_s3.endpoint_url)
    assert listing.out.count("encrypted") >= 4 and "window " in listing.out, listing.out
    target = f"{db_name}_e"
    common = ["--endpoint-url", moto_s3.endpoint_url, "--identity", str(tmp_path / "key.txt")]
    try:
        restored(cli, mongo_uri, url, target, *common)
        assert_same_snapshot(snapshot(client, target), snapshot(client, db_name), "newest")
        # A fresh database: --drop drops the collections of the full backup, not one that
        # only an increment created (as mongorestore --drop with an oplog replay).
        restored(cli, mongo_uri, url, f"{target}2", *common, "--until", as_pair(moment))
        assert_same_snapshot(snapshot(client, f"{target}2"), then, "--until")
    finally:
        client.drop_database(target)
        client.drop_database(f"{target}2")


def test_a_base_without_a_point_is_followed_by_a_full_backup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by the chaos campaign: a full backup whose change capture failed has no
    point in the server's history; the watch then stopped (a ConfigError at every start)
    instead of taking another full backup."""
    import mongo_backup.backup.watch as watch_module
    from mongo_backup.archive.manifest import Manifest
    from mongo_backup.backup.options import BackupResult

    kinds: list[str] = []

    def fake_backup(
        opts: BackupOptions, progress: Any, base: Any, kept: Any = None
    ) -> BackupResult:
        kinds.append("incremental" if opts.incremental else "full")
        point = None if len(kinds) == 1 else {"cluster_time": {"$timestamp": {"t": 1, "i": 1}}}
        manifest = Manifest(
            database="d", tool_version="", json_format="canonical", pretty=False,
            compression="zstd", started_at="2026-12-04T00:00:00+00:00",
            finished_at="2026-12-04T00:00:00+00:00", server={}, hosts=[], point=point,
            backup_id=f"backup_20261204_00000{len(kinds)}",
        )  # fmt: skip
        return BackupResult(tmp_path / f"{manifest.backup_id}.tar.zst", tmp_path, manifest, 0.0)

    monkeypatch.setattr(watch_module, "run_backup", fake_backup)
    monkeypatch.setattr(watch_module, "_require_change_streams", lambda backup: None)
    stop = threading.Event()
    seen: list[Cycle] = []

    def report(cycle: Cycle) -> None:
        seen.append(cycle)
        if len(seen) == 3:
            stop.set()

    run_watch(options("mongodb://127.0.0.1:1/", "d", tmp_path / "out"), stop, report)
    assert kinds[:3] == ["full", "full", "incremental"]
    assert "records no point in the server's history" in caplog.text
