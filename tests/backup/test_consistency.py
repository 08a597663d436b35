"""Issue 5, one moment for the whole database: the point a backup is consistent at.

On a replica set a full backup reads every collection at the majority-committed cluster
time T0 it noted before reading. When every read was answered at T0 the backup is a
``snapshot`` at T0; when not (SecantusDB answers at its latest time, a snapshot that got
too old, a resumed backup) it captures the change events of (T0, T_end] and restore
replays them: ``oplog`` at T_end. Either way a restore must equal the source at the
manifest's ``point.cluster_time``, which these tests check with writers and DDL running
during the backup, each write stamped with the ``operationTime`` the server acknowledged
it at. A standalone server gives ``none`` and no point. Pure unit tests of
:mod:`mongo_backup.mongo.cluster_time` and the resume-token reader close the file.

Moments inside the backup (after it noted T0, around its listing of the collections)
are reached by wrapping ``backup.start_reads`` and ``MongoSource.intents``; what a test
does there runs in the backup's own thread, so the reads wait for it: no guess at timing.

Tests run against SecantusDB or any real replica set (``MONGO_TEST_URI``): where the
server decides between ``snapshot`` and ``oplog``, both are accepted.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import importlib
import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
from bson import json_util
from bson.json_util import CANONICAL_JSON_OPTIONS
from bson.timestamp import Timestamp
from pymongo import MongoClient
from pymongo.client_session import ClientSession
from pymongo.errors import OperationFailure

from bsontools import archive_members, raw_docs_by_id, read_manifest
from conftest import CliResult, CliRunner
from mongo_backup.errors import ConfigError
from mongo_backup.mongo.change_capture import token_time
from mongo_backup.mongo.cluster_time import (
    SnapshotCheck,
    after,
    from_json,
    parse_until,
    show,
    to_json,
)
from mongo_backup.mongo.connection import APP_NAME
from mongo_backup.mongo.source import MongoSource
from restoretools import (
    assert_same_bytes,
    assert_single_error_line,
    backup_archive,
    index_specs,
    restore_cli,
    user_collections,
)
from resumetools import FAST_CHECKPOINTS, BackupProcess, resume_backup, wait_mid_unit
from serverfeatures import lacks

# The module, not the function mongo_backup/__init__ re-exports under the same name.
backup_module = importlib.import_module("mongo_backup.backup.run")

GUARANTEES = ("snapshot", "oplog")
CHANGES_MEMBER = "~changes.jsonl"
PROMPT_SECONDS = 20.0  # a small backup takes 1-2 s; slow machines get ten times that
LAST_INCREMENT = 2**32 - 1


# --- helpers ------------------------------------------------------------------------


def point_of(manifest: dict[str, Any]) -> Timestamp:
    """The manifest's point.cluster_time (the manifest must have a point)."""
    point = manifest["point"]
    assert isinstance(point, dict), manifest
    assert set(point) == {"cluster_time", "resume_token"}, point
    return from_json(point["cluster_time"])


def op_time(session: ClientSession) -> Timestamp:
    """The operationTime of the session's last command."""
    stamp = session.operation_time
    assert isinstance(stamp, Timestamp), stamp
    return stamp


def changes_entry(manifest: dict[str, Any]) -> dict[str, Any] | None:
    found = [entry for entry in manifest["collections"] if entry["type"] == "changes"]
    assert len(found) <= 1, manifest["collections"]
    return found[0] if found else None


def check_guarantee(archive: Path) -> tuple[dict[str, Any], Timestamp]:
    """A full replica-set backup's guarantee: snapshot or oplog, with a point; a changes
    member only with oplog, and then only when something changed while the backup read
    (its data is that moment's already otherwise). Returns the manifest and the point."""
    manifest = read_manifest(archive)
    assert manifest["kind"] == "full"
    assert manifest["consistency"] in GUARANTEES, manifest["consistency"]
    point = point_of(manifest)
    changes = changes_entry(manifest)
    members = archive_members(archive)
    if changes is not None:
        assert manifest["consistency"] == "oplog", manifest["consistency"]
        assert changes["name"] == "$changes" and changes["file"] == CHANGES_MEMBER, changes
        assert changes["count"] > 0 and changes["status"] == "ok", changes
        assert CHANGES_MEMBER in members, members
    else:
        assert CHANGES_MEMBER not in members, members
    return manifest, point


def filler(client: MongoClient[Any], db: str, names: tuple[str, ...], count: int) -> None:
    """``count`` documents of a few hundred bytes in each collection of ``names``."""
    for name in names:
        client[db][name].insert_many(
            [{"_id": i, "n": i, "s": f"{name}-{i}", "pad": "p" * 200} for i in range(count)]
        )


def arm_fail_point(client: MongoClient[Any], mode: Any, **data: Any) -> bool:
    """failCommand on for mongo-backup's connections; False if the server refuses it."""
    try:
        client.admin.command(
            {
                "configureFailPoint": "failCommand",
                "mode": mode,
                "data": {"appName": APP_NAME, **data},
            }
        )
    except OperationFailure:
        return False
    return True


def disarm_fail_point(client: MongoClient[Any]) -> None:
    client.admin.command({"configureFailPoint": "failCommand", "mode": "off"})


@pytest.fixture
def fail_points(client: MongoClient[Any]) -> Iterator[None]:
    """Whatever a test arms is off again afterwards (fail points are server-global)."""
    yield
    with contextlib.suppress(OperationFailure):  # no test commands: nothing was armed
        disarm_fail_point(client)


def when_reads_start(
    monkeypatch: pytest.MonkeyPatch, hook: Callable[[], None]
) -> list[BaseException]:
    """Run ``hook`` in the backup right before it reads the first document: after it has
    noted its change stream position and its start time T0. Errors are collected in the
    returned list (the hook must not be what fails the backup)."""
    real = backup_module.start_reads
    errors: list[BaseException] = []

    def start_reads(*args: Any, **kwargs: Any) -> None:
        try:
            hook()
        except BaseException as error:
            errors.append(error)
        real(*args, **kwargs)

    monkeypatch.setattr(backup_module, "start_reads", start_reads)
    return errors


@dataclass
class DuringReads:
    """An action run once the backup reads: after it noted T0, before its first document.
    It runs in the backup's own thread (from the wrapped ``start_reads``), so the reads
    wait for it: every change it makes is after T0 and done before the reads end, on any
    machine, however loaded (a thread of its own with a sleep could only guess)."""

    hook_errors: list[BaseException] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)

    def done(self) -> None:
        """The action ran once, without an error."""
        assert not self.hook_errors, self.hook_errors
        assert self.runs == ["ran"], f"the backup started reading {len(self.runs)} times"


def during_reads(monkeypatch: pytest.MonkeyPatch, action: Callable[[], None]) -> DuringReads:
    state = DuringReads()

    def run() -> None:
        state.runs.append("ran")
        action()

    state.hook_errors = when_reads_start(monkeypatch, run)
    return state


def database_state(client: MongoClient[Any], db: str) -> dict[str, Any]:
    """{collection: (options, {index name: spec}, {_id key: raw document})}: what a
    restore must reproduce (views: options only)."""
    state: dict[str, Any] = {}
    for info in client[db].list_collections():
        name = info["name"]
        if name.startswith("system."):
            continue
        options = info.get("options", {})
        if info.get("type") == "view":
            state[name] = (options, {}, {})
        else:
            state[name] = (options, index_specs(client, db, name), raw_docs_by_id(client, db, name))
    return state


# --- 1. the Percona Backup for MongoDB bounds check: writes around and during a backup

NEVER = Timestamp(0, 0)


def when(lower: Timestamp, upper: Timestamp, point: Timestamp) -> str:
    """Whether a write acknowledged at operationTime ``upper``, in a causally consistent
    session whose previous write was acknowledged at ``lower``, happened at or before
    ``point``: "before", "after" or "either".

    A reply's operationTime is at or after the write's own cluster time (SecantusDB
    sometimes answers with a later time than the write's: other sessions wrote in
    between), and the session's next write happens after it. So the write happened in
    ``(lower, upper]``; only a write whose interval holds the point is undecided."""
    if upper <= point:
        return "before"
    if lower >= point:
        return "after"
    return "either"


@dataclass(frozen=True)
class Write:
    lower: Timestamp  # the operationTime of the session's previous write
    time: Timestamp  # the operationTime the server acknowledged this write at
    id: int
    value: int


@dataclass
class Writer:
    """Inserts and increments its own counter documents in a causally consistent session
    until ``stop``; records every acknowledged write. Runs in a thread of its own."""

    client: MongoClient[Any]
    db: str
    number: int
    stop: threading.Event
    writes: list[Write] = field(default_factory=list)
    error: BaseException | None = None
    thread: threading.Thread | None = None

    COUNTERS = 4

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name=f"writer {self.number}")
        self.thread.start()

    def join(self) -> None:
        assert self.thread is not None
        self.thread.join(timeout=60)
        assert not self.thread.is_alive(), f"writer {self.number} did not stop"

    def _run(self) -> None:
        try:
            self._write()
        except BaseException as error:
            self.error = error

    def _write(self) -> None:
        collection = self.client[self.db]["counters"]
        base = (self.number + 1) * 1_000_000
        values: dict[int, int] = {}
        inserted = 0
        with self.client.start_session(causal_consistency=True) as session:

            def record(doc_id: int) -> None:
                stamp = op_time(session)
                lower = self.writes[-1].time if self.writes else NEVER
                assert stamp > lower, (lower, stamp)
                self.writes.append(Write(lower, stamp, doc_id, values[doc_id]))

            for j in range(self.COUNTERS):
                collection.insert_one({"_id": base + j, "c": 0}, session=session)
                values[base + j] = 0
                record(base + j)
            step = 0
            while not self.stop.is_set():
                step += 1
                if step % 4 == 0:  # a new document, later counted up like the others
                    doc_id = base + 1000 + inserted
                    inserted += 1
                    collection.insert_one({"_id": doc_id, "c": 0}, session=session)
                    values[doc_id] = 0
                else:
                    doc_id = list(values)[step % len(values)]
                    result = collection.update_one(
                        {"_id": doc_id}, {"$inc": {"c": 1}}, session=session
                    )
                    assert result.matched_count == 1, doc_id
                    values[doc_id] += 1
                record(doc_id)
                time.sleep(0.001)  # leave the backup its share of a small machine


def test_restore_holds_exactly_the_writes_up_to_the_point(
    cli: CliRunner,
    client: MongoClient[Any],
    mongo_uri: str,
    db_name: str,
    target_db: str,
    tmp_path: Path,
) -> None:
    """Every write acknowledged at or before the point is in the restore with its value,
    none after it is: each counter holds the value of its last write up to the point,
    and documents inserted later are absent."""
    fillers = ("alpha", "beta", "gamma")
    filler(client, db_name, fillers, 3000)
    stop = threading.Event()
    writers = [Writer(client, db_name, number, stop) for number in range(3)]
    for writer in writers:
        writer.start()
    try:
        deadline = time.monotonic() + 30
        while any(len(w.writes) < 2 * Writer.COUNTERS for w in writers):
            assert time.monotonic() < deadline, "the writers did not get going"
            assert not any(w.error for w in writers), [w.error for w in writers]
            time.sleep(0.01)
        archive = backup_archive(
            cli, mongo_uri, db_name, tmp_path / "out", "-j", "2", "--batch-size", "200"
        )
        # Writes after the backup too: they must not be in the restore.
        written = sum(len(w.writes) for w in writers)
        deadline = time.monotonic() + 30
        while sum(len(w.writes) for w in writers) < written + 30:
            assert time.monotonic() < deadline, "the writers stopped writing"
            assert not any(w.error for w in writers), [w.error for w in writers]
            time.sleep(0.01)
    finally:
        stop.set()
        for writer in writers:
            writer.join()
    assert not any(w.error for w in writers), [w.error for w in writers]

    manifest, point = check_guarantee(archive)
    restored = restore_cli(cli, archive, mongo_uri, "--db", target_db)
    assert restored.code == 0, restored.err

    writes = [write for writer in writers for write in writer.writes]
    kinds = {write: when(write.lower, write.time, point) for write in writes}
    counted = collections.Counter(kinds.values())
    assert counted["before"] and counted["after"], f"point {point}: {counted}"
    assert counted["either"] <= len(writers), counted  # one per session at most
    if manifest["consistency"] == "oplog":  # the writers ran while the backup read
        changes = changes_entry(manifest)
        assert changes is not None and changes["count"] > 0, changes

    # Per document: the value of its last write before the point, or of the one write
    # that may be either side of it (absent if that one inserted it).
    must: dict[int, Write] = {}
    may: dict[int, list[Write]] = collections.defaultdict(list)
    for write in sorted(writes, key=lambda w: w.time):
        if kinds[write] == "before":
            must[write.id] = write
        elif kinds[write] == "either":
            may[write.id].append(write)
    actual = {doc["_id"]: doc["c"] for doc in client[target_db]["counters"].find()}
    missing = sorted(set(must) - set(actual))
    assert not missing, (
        f"point {point}: writes before it are missing: {[(i, must[i].time) for i in missing[:5]]}"
    )
    extra = sorted(set(actual) - set(must) - set(may))
    assert not extra, (
        f"point {point}: documents inserted after it are restored: "
        f"{[(i, next(w.time for w in writes if w.id == i)) for i in extra[:5]]}"
    )
    wrong: dict[int, str] = {}
    for doc_id, value in actual.items():
        allowed = [must[doc_id]] if doc_id in must else []
        allowed += may.get(doc_id, [])
        if value not in {write.value for write in allowed}:
            later = [w for w in writes if w.id == doc_id and w.value == value]
            wrong[doc_id] = (
                f"restored {value} (written at {later[0].time if later else '?'}), "
                f"at the point: {[(w.value, w.time) for w in allowed]}"
            )
    assert not wrong, f"point {point}: {wrong}"
    for name in fillers:
        assert assert_same_bytes(client, db_name, target_db, name) == 3000


def test_backup_starts_promptly_on_a_database_that_never_pauses(
    client: MongoClient[Any], mongo_uri: str, db_name: str, tmp_path: Path
) -> None:
    """A backup of a small database whose writes never pause for 200 ms (here 25 a
    second) must not wait for the writes to stop. (Noting the change stream position
    once read the new stream until it was quiet for one 200 ms wait, or up to 10,000
    events: here the backup would have started after ~400 s.)"""
    client[db_name]["docs"].insert_many([{"_id": i} for i in range(100)])
    stop, writing = threading.Event(), threading.Event()
    errors: list[BaseException] = []
    written: list[int] = []

    def trickle() -> None:
        try:
            while not stop.wait(0.04):
                client[db_name]["ticks"].insert_one({"_id": len(written)})
                written.append(len(written))
                if len(written) >= 3:
                    writing.set()
        except BaseException as error:
            errors.append(error)
            writing.set()

    writer = threading.Thread(target=trickle, name="trickle")
    writer.start()
    try:
        assert writing.wait(30) and not errors, errors  # the writes are under way
        before = len(written)
        process = BackupProcess(mongo_uri, db_name, tmp_path / "out", "-q")
        try:
            result = process.wait(timeout=PROMPT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            pytest.fail(
                f"a backup of 100 documents took over {PROMPT_SECONDS:g} s while another "
                "client wrote 25 times a second (waiting for a quiet change stream)"
            )
        during = len(written) - before
    finally:
        stop.set()
        writer.join(timeout=30)
    assert not errors, errors
    assert during > 0, "no write while the backup ran: the test proved nothing"
    assert result.code == 0, result.err
    manifest, _point = check_guarantee(Path(result.out.strip()))
    assert manifest["collections"][0]["count"] == 100


# --- 2. the guarantee and the point on a replica set


def test_replica_set_backup_has_a_guarantee_and_a_point(
    cli: CliRunner,
    client: MongoClient[Any],
    mongo_uri: str,
    db_name: str,
    target_db: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A write before the backup, one while it reads (after it noted T0), one after.
    Snapshot: the point is T0 and the write during the reads is not in the restore.
    Oplog: the point is after the reads, that write is one of the captured changes."""
    filler(client, db_name, ("one", "two"), 200)
    times: list[Timestamp] = []
    with client.start_session(causal_consistency=True) as session:

        def write(doc_id: str) -> None:
            client[db_name]["one"].insert_one({"_id": doc_id}, session=session)
            times.append(op_time(session))

        write("before")
        hook_errors = when_reads_start(monkeypatch, lambda: write("during"))
        archive = backup_archive(cli, mongo_uri, db_name, tmp_path / "out")
        write("after")
    assert not hook_errors, hook_errors
    manifest, point = check_guarantee(archive)
    written_before, written_during, written_after = times
    # The point follows every write acknowledged before the backup, precedes those after.
    assert written_before <= point < written_after, (times, point)
    # The write during the reads came after T0: in a snapshot at T0 it is not, in the
    # changes up to the end of the reads it is.
    captured = manifest["consistency"] == "oplog"
    if captured:
        assert written_during <= point, (times, point)
        assert changes_entry(manifest) is not None, manifest["collections"]
    else:
        assert written_during > point, (times, point)
    assert archive.name.startswith(manifest["backup_id"]), (archive.name, manifest["backup_id"])
    assert isinstance(manifest["point"]["resume_token"], dict)

    inspected = cli("inspect", archive, "--json")
    assert inspected.code == 0, inspected.err
    shown = json.loads(inspected.out)
    assert shown["consistency"] == manifest["consistency"]
    assert shown["point"] == manifest["point"]
    assert shown["kind"] == "full"

    verified = cli("verify", archive, "-q")
    assert verified.code == 0, verified.out + verified.err

    # --until the point itself restores the backup; earlier than the point is refused.
    until = f"{point.time}:{point.inc}"
    restored = restore_cli(cli, archive, mongo_uri, "--db", target_db, "--until", until)
    assert restored.code == 0, restored.err
    assert assert_same_bytes(client, db_name, target_db, "two") == 200
    restored_ids = {doc["_id"] for doc in client[target_db]["one"].find({}, {"_id": 1})}
    expected_ids = set(range(200)) | {"before"} | ({"during"} if captured else set())
    assert restored_ids == expected_ids, sorted(map(str, restored_ids ^ expected_ids))
    earlier = f"{point.time - 1}:{point.inc}"
    refused = restore_cli(cli, archive, mongo_uri, "--db", f"{target_db}x", "--until", earlier)
    assert refused.code == 2, refused.err
    line = assert_single_error_line(refused)
    assert "--until" in line, line
    assert f"{target_db}x" not in client.list_database_names()


# --- 3. the snapshot gets too old in the middle of the backup


@pytest.mark.parametrize("command", ["find", "getMore"])
def test_snapshot_too_old_mid_backup_falls_back_to_oplog(
    cli: CliRunner,
    client: MongoClient[Any],
    mongo_uri: str,
    db_name: str,
    target_db: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fail_points: None,
    command: str,
) -> None:
    """SnapshotTooOld (239) on one read, once: armed once the backup has its start
    point, so that it hits a data read and not the change stream the backup opens
    before reading. Two documents change then too: the captured changes bring them to
    the point, wherever the reads saw them."""
    filler(client, db_name, ("docs",), 300)
    filler(client, db_name, ("other",), 40)
    armed: list[bool] = []

    def arm() -> None:
        armed.append(arm_fail_point(client, {"times": 1}, failCommands=[command], errorCode=239))
        client[db_name]["docs"].update_one({"_id": 250}, {"$set": {"late": 1}})
        client[db_name]["other"].update_one({"_id": 30}, {"$unset": {"pad": ""}})

    hook_errors = when_reads_start(monkeypatch, arm)
    result = cli(
        "backup",
        "--uri",
        mongo_uri,
        "--db",
        db_name,
        "--out-dir",
        tmp_path / "out",
        "-q",
        "--batch-size",
        "10",
        "--retry-delay",
        "0.01",
    )
    assert not hook_errors, hook_errors
    assert armed, "the backup never started reading"
    if armed != [True]:
        lacks("fail-points", "configureFailPoint failCommand refused")
    assert result.code == 0, result.err
    assert "no longer holds the snapshot" in result.err, result.err
    archive = Path(result.out.strip())
    manifest, _point = check_guarantee(archive)
    assert manifest["consistency"] == "oplog", manifest["consistency"]
    changes = changes_entry(manifest)
    assert changes is not None and changes["count"] == 2, changes
    counts = {e["name"]: (e["status"], e["count"]) for e in manifest["collections"]}
    assert counts["docs"] == ("ok", 300) and counts["other"] == ("ok", 40), counts
    restored = restore_cli(cli, archive, mongo_uri, "--db", target_db)
    assert restored.code == 0, restored.err
    assert user_collections(client, target_db) == ["docs", "other"]
    assert assert_same_bytes(client, db_name, target_db, "docs") == 300
    assert assert_same_bytes(client, db_name, target_db, "other") == 40


# --- 4. a standalone server: no point


def test_standalone_backup_has_no_point_and_until_is_refused(
    cli: CliRunner, standalone_uri: str, tmp_path: Path
) -> None:
    alone: MongoClient[Any] = MongoClient(standalone_uri, serverSelectionTimeoutMS=10_000)
    try:
        assert not alone.admin.command("hello").get("setName"), "not a standalone server"
        alone["solo"]["docs"].insert_many([{"_id": i} for i in range(50)])
        result = cli("backup", "--uri", standalone_uri, "--db", "solo", "--out-dir", tmp_path, "-q")
        assert result.code == 0, result.err
        warnings = [line for line in result.err.splitlines() if "WARNING" in line]
        assert any("standalone" in line for line in warnings), result.err
        archive = Path(result.out.strip())
        manifest = read_manifest(archive)
        assert manifest["consistency"] == "none"
        assert manifest["point"] is None
        assert manifest["kind"] == "full"
        assert changes_entry(manifest) is None

        refused = restore_cli(
            cli, archive, standalone_uri, "--db", "back", "--until", "2030-01-01T00:00:00Z"
        )
        assert refused.code == 2, refused.err
        line = assert_single_error_line(refused)
        assert "--until" in line and "no cluster time" in line, line
        assert "back" not in alone.list_database_names()

        restored = restore_cli(cli, archive, standalone_uri, "--db", "back")
        assert restored.code == 0, restored.err
        assert alone["back"]["docs"].count_documents({}) == 50
    finally:
        alone.close()


# --- 5. collections created and dropped, an index built while the backup reads


@dataclass
class DdlOps:
    """The operationTimes the server acknowledged the DDL at, in order: ``times[0]`` is a
    read's just before the first change, so change k happened in (times[k-1], times[k]]
    (see :func:`when`)."""

    STEPS = ("created", "filled", "dropped", "indexed")

    times: list[Timestamp] = field(default_factory=list)

    def where(self, point: Timestamp) -> dict[str, str]:
        """{step: "before", "after" or "either" the point}."""
        assert len(self.times) == len(self.STEPS) + 1, self.times
        return {
            step: when(self.times[k], self.times[k + 1], point) for k, step in enumerate(self.STEPS)
        }


def run_ddl(client: MongoClient[Any], db: str, ops: DdlOps) -> None:
    """Create ``fresh`` (validated) and fill it, drop ``doomed``, index ``stable``."""
    database = client[db]
    with client.start_session(causal_consistency=True) as session:
        database["stable"].find_one({}, session=session)
        ops.times.append(op_time(session))
        database.create_collection(
            "fresh", validator={"$jsonSchema": {"required": ["n"]}}, session=session
        )
        ops.times.append(op_time(session))
        database["fresh"].insert_many([{"_id": i, "n": i} for i in range(25)], session=session)
        ops.times.append(op_time(session))
        database.drop_collection("doomed", session=session)
        ops.times.append(op_time(session))
        database["stable"].create_index("k", name="k_1", session=session)
        ops.times.append(op_time(session))


def check_ddl_restore(
    client: MongoClient[Any],
    source: str,
    target: str,
    ops: DdlOps,
    point: Timestamp,
    doomed_docs: dict[str, bytes],
) -> None:
    """The restore is the source as it was at ``point``: each change is there exactly
    when it happened at or before the point (either way for a change whose interval
    holds the point)."""
    where = ops.where(point)
    names = set(user_collections(client, target))
    assert names - {"fresh", "doomed"} == {"stable"}, (names, point, ops)
    assert assert_same_bytes(client, source, target, "stable") == 300
    if where["created"] != "either":
        assert ("fresh" in names) == (where["created"] == "before"), (names, point, where)
    if where["dropped"] != "either":
        assert ("doomed" in names) == (where["dropped"] == "after"), (names, point, where)
    if where["indexed"] != "either":
        indexes = set(index_specs(client, target, "stable"))
        expected = {"_id_", "k_1"} if where["indexed"] == "before" else {"_id_"}
        assert indexes == expected, (point, where)
    if "fresh" in names:
        fresh = raw_docs_by_id(client, target, "fresh")
        filled = raw_docs_by_id(client, source, "fresh")
        empty: dict[str, bytes] = {}
        choices = {"before": [filled], "after": [empty], "either": [filled, empty]}
        allowed = choices[where["filled"]]
        assert fresh in allowed, (len(fresh), point, where)
        options = {i["name"]: i.get("options", {}) for i in client[target].list_collections()}
        assert "validator" in options["fresh"], options["fresh"]
    if "doomed" in names:
        assert raw_docs_by_id(client, target, "doomed") == doomed_docs


def ddl_source(client: MongoClient[Any], db: str) -> dict[str, bytes]:
    """``stable`` (300 documents) and ``doomed`` (60); returns doomed's raw documents."""
    client[db]["stable"].insert_many([{"_id": i, "k": i % 17} for i in range(300)])
    client[db]["doomed"].insert_many([{"_id": i, "gone": True} for i in range(60)])
    return raw_docs_by_id(client, db, "doomed")


def test_ddl_during_the_reads_is_restored_as_of_the_point(
    cli: CliRunner,
    client: MongoClient[Any],
    mongo_uri: str,
    db_name: str,
    target_db: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once the backup has noted T0, and before it reads (the reads wait for it), a
    collection is created, one dropped and an index built. Where the server reads at T0
    (snapshot) none of it is in the backup; where it captures changes (oplog) all of it
    is, the DDL being done before the reads end."""
    doomed_docs = ddl_source(client, db_name)
    ops = DdlOps()
    during = during_reads(monkeypatch, lambda: run_ddl(client, db_name, ops))
    archive = backup_archive(cli, mongo_uri, db_name, tmp_path / "out", "-j", "2")
    during.done()
    manifest, point = check_guarantee(archive)
    # The DDL was done after T0 and before the reads: after a snapshot's point, before
    # the end of the reads (an oplog backup's point).
    wanted = "before" if manifest["consistency"] == "oplog" else "after"
    assert set(ops.where(point).values()) == {wanted}, (point, ops)
    restored = restore_cli(cli, archive, mongo_uri, "--db", target_db)
    assert restored.code == 0, restored.err
    check_ddl_restore(client, db_name, target_db, ops, point, doomed_docs)


def check_changes_during_reads(
    cli: CliRunner,
    client: MongoClient[Any],
    uri: str,
    db: str,
    target: str,
    out: Path,
    monkeypatch: pytest.MonkeyPatch,
    changes: Callable[[], None],
) -> None:
    """Back up ``db`` while ``changes`` run (during the reads, see :func:`during_reads`)
    and restore it: the restore is the database before them (snapshot) or after them
    (oplog: the reads end after they are done), options, indexes and documents."""
    before = database_state(client, db)
    times: list[Timestamp] = []

    def action() -> None:
        with client.start_session(causal_consistency=True) as session:
            client[db].list_collection_names(session=session)
            times.append(op_time(session))
            changes()
            client[db]["marker"].insert_one({"_id": "done"}, session=session)
            times.append(op_time(session))

    during = during_reads(monkeypatch, action)
    archive = backup_archive(cli, uri, db, out, "-j", "2")
    during.done()
    after = database_state(client, db)
    after.pop("marker")
    manifest, point = check_guarantee(archive)
    where = when(times[0], times[1], point)
    assert where == ("before" if manifest["consistency"] == "oplog" else "after"), where
    restored = restore_cli(cli, archive, uri, "--db", target)
    assert restored.code == 0, restored.err
    state = database_state(client, target)
    state.pop("marker", None)
    if where != "either":
        expected = before if where == "after" else after
        assert sorted(state) == sorted(expected), (sorted(state), sorted(expected), where)
        for name, (options, indexes, documents) in expected.items():
            got_options, got_indexes, got_documents = state[name]
            assert got_options == options, (name, got_options, options)
            assert got_indexes == indexes, (name, got_indexes, indexes)
            different = sorted(
                k
                for k in set(documents) | set(got_documents)
                if documents.get(k) != got_documents.get(k)
            )
            assert not different, (name, different[:5])


def test_many_kinds_of_change_during_the_reads_are_restored(
    cli: CliRunner,
    client: MongoClient[Any],
    mongo_uri: str,
    db_name: str,
    target_db: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Updates of every shape (dotted paths, array elements, $pop, $push with $slice,
    $unset), a replacement, a delete, an index dropped, collMod, a capped collection
    created and filled: all replayed to the state at the point."""
    db = client[db_name]
    db["docs"].insert_many(
        [{"_id": i, "a": {"b": i}, "arr": list(range(5)), "x": i} for i in range(200)]
    )
    db["docs"].create_index("x", name="x_1")
    db["sub"].insert_many([{"_id": i} for i in range(5)])

    def changes() -> None:
        docs = db["docs"]
        docs.update_one({"_id": 1}, {"$set": {"a.b": "dotted"}})
        docs.update_one({"_id": 3}, {"$pop": {"arr": 1}})
        docs.update_one({"_id": 4}, {"$unset": {"x": ""}})
        docs.replace_one({"_id": 5}, {"replaced": True})
        docs.delete_one({"_id": 6})
        docs.update_one({"_id": 7}, {"$set": {"arr.1": "second"}})
        docs.update_one({"_id": 8}, {"$push": {"arr": {"$each": [9], "$slice": 3}}})
        docs.update_one({"_id": 9}, {"$inc": {"a.c": 2}, "$set": {"new": [1, {"n": 2}]}})
        docs.insert_one({"_id": "late", "v": 1})
        docs.drop_index("x_1")
        db.command("collMod", "sub", validator={"$jsonSchema": {"required": ["_id"]}})
        db.create_collection("capped", capped=True, size=100_000)
        db["capped"].insert_many([{"_id": i} for i in range(3)])

    check_changes_during_reads(
        cli, client, mongo_uri, db_name, target_db, tmp_path / "out", monkeypatch, changes
    )


def test_view_created_during_the_reads_is_restored(
    cli: CliRunner,
    client: MongoClient[Any],
    mongo_uri: str,
    db_name: str,
    target_db: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client[db_name]["base"].insert_many([{"_id": i, "x": i} for i in range(50)])

    def changes() -> None:
        client[db_name].create_collection(
            "big_x", viewOn="base", pipeline=[{"$match": {"x": {"$gt": 10}}}]
        )

    check_changes_during_reads(
        cli, client, mongo_uri, db_name, target_db, tmp_path / "out", monkeypatch, changes
    )


@pytest.mark.parametrize("moment", ["before", "after"])
def test_ddl_around_the_listing_of_the_collections_is_restored(
    cli: CliRunner,
    client: MongoClient[Any],
    mongo_uri: str,
    db_name: str,
    target_db: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    moment: str,
) -> None:
    """The same DDL landing just before or just after the backup lists the collections
    and their indexes, while it plans: between listing and start point or between start
    point and listing, whichever order it plans in. The restore is the source at the
    point (every change is before it on a server that does not keep snapshots)."""
    doomed_docs = ddl_source(client, db_name)
    ops = DdlOps()
    real_intents = MongoSource.intents

    def intents(self: MongoSource, *args: Any, **kwargs: Any) -> Any:
        first = not ops.times
        if first and moment == "before":
            run_ddl(client, db_name, ops)
        listed = real_intents(self, *args, **kwargs)
        if first and moment == "after":
            run_ddl(client, db_name, ops)
        return listed

    monkeypatch.setattr(MongoSource, "intents", intents)
    archive = backup_archive(cli, mongo_uri, db_name, tmp_path / "out")
    _manifest, point = check_guarantee(archive)
    restored = restore_cli(cli, archive, mongo_uri, "--db", target_db)
    assert restored.code == 0, restored.err
    check_ddl_restore(client, db_name, target_db, ops, point, doomed_docs)


def test_collection_renamed_during_the_reads_is_restored_as_of_the_point(
    cli: CliRunner,
    client: MongoClient[Any],
    mongo_uri: str,
    db_name: str,
    target_db: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``old`` renamed to ``moved`` (and one more document put in it) once the backup has
    listed the collections and noted T0, before it reads. At the point ``moved`` holds
    all of old's documents and the new one, and ``old`` is gone. A backup that cannot get
    there (the documents read under the old name may be any part of them) must say so:
    consistency "none", no point, a warning, as mongodump --oplog refuses such a dump."""
    client[db_name]["stable"].insert_many([{"_id": i} for i in range(100)])
    client[db_name]["old"].insert_many([{"_id": i, "x": i} for i in range(50)])
    old_docs = raw_docs_by_id(client, db_name, "old")
    times: list[Timestamp] = []

    def rename() -> None:
        with client.start_session(causal_consistency=True) as session:
            client[db_name]["stable"].find_one({}, session=session)
            times.append(op_time(session))
            client.admin.command(
                "renameCollection", f"{db_name}.old", to=f"{db_name}.moved", session=session
            )
            times.append(op_time(session))
            client[db_name]["moved"].insert_one({"_id": "new"}, session=session)
            times.append(op_time(session))

    during = during_reads(monkeypatch, rename)
    out = tmp_path / "out"
    result = cli("backup", "--uri", mongo_uri, "--db", db_name, "--out-dir", out, "-q", "-j", "2")
    during.done()
    assert result.code == 0, result.err
    archive = Path(result.out.strip())
    manifest = read_manifest(archive)
    if manifest["consistency"] == "none":
        assert manifest["point"] is None, manifest["point"]
        assert changes_entry(manifest) is None, manifest["collections"]
        assert CHANGES_MEMBER not in archive_members(archive)
        warnings = [line for line in result.err.splitlines() if "WARNING" in line]
        assert any("renamed" in line and "'old'" in line for line in warnings), result.err
        return
    _manifest, point = check_guarantee(archive)
    assert len(times) == 3, times
    renamed = when(times[0], times[1], point)
    inserted = when(times[1], times[2], point)
    restored = restore_cli(cli, archive, mongo_uri, "--db", target_db)
    assert restored.code == 0, restored.err
    names = user_collections(client, target_db)
    if renamed == "before":
        assert names == ["moved", "stable"], (names, point, times)
        moved = raw_docs_by_id(client, target_db, "moved")
        assert set(old_docs) <= set(moved), (
            f"point {point}: {len(set(old_docs) - set(moved))} of the {len(old_docs)} "
            "documents of the renamed collection are missing"
        )
        assert {k: moved[k] for k in old_docs} == old_docs
        if inserted == "before":
            assert len(moved) == len(old_docs) + 1, len(moved)
    elif renamed == "after":
        assert names == ["old", "stable"], (names, point, times)
        assert raw_docs_by_id(client, target_db, "old") == old_docs
    assert assert_same_bytes(client, db_name, target_db, "stable") == 100


@pytest.mark.parametrize(
    "selection",
    [("--collection", "keep"), ("--exclude-collection", "skip")],
    ids=["collection", "exclude-collection"],
)
def test_changes_of_unselected_collections_stay_out(
    cli: CliRunner,
    client: MongoClient[Any],
    mongo_uri: str,
    db_name: str,
    target_db: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    selection: tuple[str, str],
) -> None:
    """Writes while the backup reads, to the collection backed up, to one left out and
    to a new one: only the selected collections' changes are in the restore."""
    client[db_name]["keep"].insert_many([{"_id": i} for i in range(50)])
    client[db_name]["skip"].insert_many([{"_id": i} for i in range(50)])
    times: list[Timestamp] = []

    def write() -> None:
        with client.start_session(causal_consistency=True) as session:
            client[db_name]["keep"].find_one({}, session=session)
            times.append(op_time(session))
            for name in ("keep", "skip", "brand_new"):
                client[db_name][name].insert_one({"_id": "new"}, session=session)
                times.append(op_time(session))

    hook_errors = when_reads_start(monkeypatch, write)
    archive = backup_archive(cli, mongo_uri, db_name, tmp_path / "out", *selection)
    assert not hook_errors, hook_errors
    manifest, point = check_guarantee(archive)
    assert [e["name"] for e in manifest["collections"] if e["type"] != "changes"] == ["keep"]
    kept, _skipped, created = (when(times[k], times[k + 1], point) for k in range(3))
    restored = restore_cli(cli, archive, mongo_uri, "--db", target_db)
    assert restored.code == 0, restored.err
    expected = {"keep"}
    if selection[0] == "--exclude-collection" and created == "before":
        expected.add("brand_new")  # a new collection is not excluded
    names = set(user_collections(client, target_db))
    if created != "either":
        assert names == expected, (names, point, times)
    ids = {doc["_id"] for doc in client[target_db]["keep"].find({}, {"_id": 1})}
    if kept != "either":
        assert ("new" in ids) == (kept == "before"), (point, times)
    assert ids - {"new"} == set(range(50))


RESUME_DOCS = 30_000  # a -j 1 backup in batches of 50: several seconds, whatever the machine


def test_resumed_backup_captures_the_changes_since_its_first_start(
    client: MongoClient[Any],
    cli: CliRunner,
    mongo_uri: str,
    db_name: str,
    target_db: str,
    tmp_path: Path,
) -> None:
    """A backup killed halfway and resumed after documents changed (ones read already
    and ones not yet read): not one snapshot, so oplog, and the restore is the source."""
    docs = client[db_name]["docs"]
    docs.insert_many([{"_id": i, "n": i, "s": f"d{i}"} for i in range(RESUME_DOCS)])
    out = tmp_path / "out"
    slow = (*FAST_CHECKPOINTS, "--batch-size", "50")
    process = BackupProcess(mongo_uri, db_name, out, "-q", "-j", "1", *slow)
    folder, _unit = wait_mid_unit(process, 500)
    process.kill()
    docs.update_one({"_id": 0}, {"$set": {"s": "changed"}})  # read by the first run
    docs.update_one({"_id": RESUME_DOCS - 1}, {"$set": {"s": "changed"}})  # not read yet
    docs.delete_one({"_id": 1})
    docs.insert_one({"_id": RESUME_DOCS, "n": RESUME_DOCS})
    archive = resume_backup(mongo_uri, db_name, out, folder, "-q", *slow)
    manifest, _point = check_guarantee(archive)
    assert manifest["consistency"] == "oplog", manifest["consistency"]
    changes = changes_entry(manifest)
    assert changes is not None and changes["count"] >= 4, changes
    restored = restore_cli(cli, archive, mongo_uri, "--db", target_db)
    assert restored.code == 0, restored.err
    assert assert_same_bytes(client, db_name, target_db, "docs") == RESUME_DOCS


# --- 6. unit tests: cluster times, the snapshot check, resume tokens (no server)

SECONDS = 1_795_695_659  # 2026-11-26T12:20:59Z


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"{SECONDS}:128", Timestamp(SECONDS, 128)),
        (f" {SECONDS}:0 ", Timestamp(SECONDS, 0)),
        (f"Timestamp({SECONDS}, 128)", Timestamp(SECONDS, 128)),
        (f"Timestamp({SECONDS},7)", Timestamp(SECONDS, 7)),
        (f"0:{LAST_INCREMENT}", Timestamp(0, LAST_INCREMENT)),
        ("2026-11-26T12:20:59Z", Timestamp(SECONDS, LAST_INCREMENT)),
        ("2026-11-26T12:20:59", Timestamp(SECONDS, LAST_INCREMENT)),  # no zone: UTC
        ("2026-11-26T12:20:59.750Z", Timestamp(SECONDS, LAST_INCREMENT)),
        ("2026-11-26T13:20:59+01:00", Timestamp(SECONDS, LAST_INCREMENT)),
        ("2026-11-26 12:20:59+00:00", Timestamp(SECONDS, LAST_INCREMENT)),
    ],
)
def test_parse_until_accepts(text: str, expected: Timestamp) -> None:
    parsed = parse_until(text)
    assert parsed == expected
    assert (parsed.time, parsed.inc) == (expected.time, expected.inc)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "yesterday",
        "12:34:56:78",
        "1:2:3",
        "-5:1",
        "1.5:2",
        f"{2**32}:0",  # seconds out of range
        f"1:{2**32}",  # increment out of range
        "Timestamp(1; 2)",
        "2026-13-01T00:00:00Z",
        "1960-01-01T00:00:00Z",  # before cluster times begin
        "2200-01-01T00:00:00Z",  # after they end
    ],
)
def test_parse_until_refuses(text: str) -> None:
    with pytest.raises(ConfigError, match="--until"):
        parse_until(text)


def test_parse_until_iso_means_every_write_of_that_second() -> None:
    second = parse_until("2026-11-26T12:20:59Z")
    assert Timestamp(SECONDS, 0) <= second
    assert Timestamp(SECONDS, 5000) <= second
    assert second < Timestamp(SECONDS + 1, 0)
    assert parse_until(f"{SECONDS}:3") < parse_until(f"{SECONDS}:4")


@pytest.mark.parametrize(
    "ts",
    [Timestamp(0, 0), Timestamp(SECONDS, 1), Timestamp(2**32 - 1, LAST_INCREMENT)],
)
def test_to_json_from_json_round_trip(ts: Timestamp) -> None:
    value = to_json(ts)
    assert value == {"$timestamp": {"t": ts.time, "i": ts.inc}}
    # What the driver's canonical Extended JSON writes too.
    assert value == json.loads(json_util.dumps(ts, json_options=CANONICAL_JSON_OPTIONS))
    assert from_json(json.loads(json.dumps(value))) == ts
    # show() names it as --until takes it back.
    assert parse_until(show(ts).split()[0]) == ts


@pytest.mark.parametrize(
    "value",
    [
        None,
        "1795698059:1",
        [1, 2],
        {},
        {"$timestamp": None},
        {"$timestamp": "t"},
        {"$timestamp": {"t": 1}},
        {"$timestamp": {"i": 1}},
        {"$timestamp": {"t": "1", "i": 2}},
        {"$timestamp": {"t": 1.0, "i": 2}},
        {"$timestamp": {"t": True, "i": 2}},
        {"$timestamp": {"t": 1, "i": False}},
        {"$timestamp": {"t": -1, "i": 0}},
        {"$timestamp": {"t": 1, "i": -1}},
        {"$timestamp": {"t": 2**32, "i": 0}},
        {"$timestamp": {"t": 0, "i": 2**32}},
        {"$date": 0},
    ],
)
def test_from_json_refuses(value: Any) -> None:
    with pytest.raises(ValueError):
        from_json(value)


def test_after_is_the_next_cluster_time() -> None:
    assert after(Timestamp(SECONDS, 4)) == Timestamp(SECONDS, 5)
    assert after(Timestamp(SECONDS, LAST_INCREMENT)) == Timestamp(SECONDS + 1, 0)
    assert show(Timestamp(SECONDS, 4)) == f"{SECONDS}:4 (2026-11-26T12:20:59Z)"


@dataclass
class FakeStarted:
    command_name: str
    command: dict[str, Any]
    request_id: int


@dataclass
class FakeSucceeded:
    command_name: str
    reply: dict[str, Any]
    request_id: int


@dataclass
class FakeFailed:
    command_name: str
    request_id: int


def snapshot_find(asked: Timestamp | None, level: str = "snapshot") -> dict[str, Any]:
    concern: dict[str, Any] = {"level": level}
    if asked is not None:
        concern["atClusterTime"] = asked
    return {"find": "docs", "filter": {}, "readConcern": concern}


def find_reply(answered: Timestamp | None) -> dict[str, Any]:
    cursor: dict[str, Any] = {"id": 0, "ns": "db.docs", "firstBatch": []}
    if answered is not None:
        cursor["atClusterTime"] = answered
    return {"cursor": cursor, "ok": 1.0}


def started(check: SnapshotCheck, request_id: int, command: dict[str, Any]) -> None:
    name = next(iter(command))
    check.started(cast(Any, FakeStarted(name, command, request_id)))


def succeeded(check: SnapshotCheck, request_id: int, reply: dict[str, Any], name: str) -> None:
    check.succeeded(cast(Any, FakeSucceeded(name, reply, request_id)))


def test_snapshot_check_honoured_when_every_find_is_answered_at_t0() -> None:
    t0 = Timestamp(SECONDS, 10)
    check = SnapshotCheck()
    for request_id in (1, 2, 3):
        started(check, request_id, snapshot_find(t0))
    for request_id in (3, 1, 2):  # replies in any order, from any thread
        succeeded(check, request_id, find_reply(Timestamp(SECONDS, 10)), "find")
    assert check.honoured
    assert check.unhonoured is None
    assert check.answered == 3


def test_snapshot_check_notes_the_first_other_time() -> None:
    t0 = Timestamp(SECONDS, 10)
    check = SnapshotCheck()
    for request_id in (1, 2, 3):
        started(check, request_id, snapshot_find(t0))
    succeeded(check, 1, find_reply(t0), "find")
    succeeded(check, 2, find_reply(Timestamp(SECONDS, 12)), "find")
    succeeded(check, 3, find_reply(Timestamp(SECONDS, 15)), "find")
    assert not check.honoured
    assert check.unhonoured == Timestamp(SECONDS, 12)
    assert check.answered == 3


def test_snapshot_check_reply_without_a_time_is_not_honoured() -> None:
    t0 = Timestamp(SECONDS, 10)
    check = SnapshotCheck()
    started(check, 7, snapshot_find(t0))
    succeeded(check, 7, find_reply(None), "find")
    assert not check.honoured
    assert check.unhonoured == t0


def test_snapshot_check_ignores_other_commands_and_failed_finds() -> None:
    t0 = Timestamp(SECONDS, 10)
    other = Timestamp(SECONDS, 99)
    check = SnapshotCheck()
    # Not snapshot finds: never judged, whatever the reply says.
    started(check, 1, {"aggregate": "docs", "readConcern": {"level": "snapshot"}})
    started(check, 2, snapshot_find(t0, level="majority"))
    started(check, 3, snapshot_find(None))
    started(check, 4, {"find": "docs", "filter": {}})
    for request_id in (1, 2, 3, 4):
        succeeded(check, request_id, find_reply(other), "find")
    # A getMore's reply is not a find's; one nobody started is ignored too.
    succeeded(check, 5, find_reply(other), "getMore")
    # A failed snapshot find is forgotten: a later reply with its id means nothing.
    started(check, 6, snapshot_find(t0))
    check.failed(cast(Any, FakeFailed("find", 6)))
    succeeded(check, 6, find_reply(other), "find")
    assert check.honoured
    assert check.answered == 0


def mongodb_token(ts: Timestamp, upper: bool = True) -> dict[str, Any]:
    """A resume token in MongoDB's format: KeyString hex, type byte 0x82 (Timestamp),
    then the 8 bytes of the timestamp (seconds, then increment), then more fields."""
    stamp = f"{(ts.time << 32) | ts.inc:016x}"
    data = "82" + stamp + "000000012B042C0100296E5A1004A5093ABB38FE4B9EA67F01BB1A96D812463C"
    return {"_data": data.upper() if upper else data.lower()}


@pytest.mark.parametrize("upper", [True, False])
@pytest.mark.parametrize(
    "ts", [Timestamp(SECONDS, 1), Timestamp(SECONDS, LAST_INCREMENT), Timestamp(1, 0)]
)
def test_token_time_of_a_mongodb_token(ts: Timestamp, upper: bool) -> None:
    assert token_time(mongodb_token(ts, upper)) == ts


@pytest.mark.parametrize(
    "token",
    [
        # SecantusDB's own format (no Timestamp type byte first).
        {"_data": "380000001073006f00000011740001000000802d086b026e0012000000"},
        {"_data": "82" + "1" * 15},  # too short for a timestamp
        {"_data": "82" + "g" * 16 + "00"},  # not hex
        {"_data": 82},
        {"_data": None},
        {"other": "82" + "0" * 30},
        {},
        None,
        "82" + "0" * 30,
    ],
)
def test_token_time_of_other_tokens_is_none(token: Any) -> None:
    assert token_time(token) is None


def test_cli_refuses_an_until_that_is_no_time(cli: CliRunner, tmp_path: Path) -> None:
    """A usage error (exit 2) before anything is opened or connected to."""
    archive = tmp_path / "backup_20260101_000000.tar"
    archive.write_bytes(b"")
    result: CliResult = cli(
        "restore", archive, "--uri", "mongodb://127.0.0.1:1", "--until", "soon", "-q"
    )
    assert result.code == 2
    last = result.err.strip().splitlines()[-1]
    assert "--until" in last and "not a time" in last, result.err
    assert "Traceback" not in result.err


def test_iso_until_covers_the_whole_second() -> None:
    moment = dt.datetime(2026, 11, 26, 12, 20, 59, tzinfo=dt.UTC)
    assert int(moment.timestamp()) == SECONDS
    assert parse_until(moment.isoformat()) == Timestamp(SECONDS, LAST_INCREMENT)
