"""``make chaos``: a seeded random fault campaign over backup, resume, restore,
increments and watch, checked against the source after every run.

usage: python chaos/campaign.py [--minutes M] [--seed S] [--run K] [--keep]

Each run picks an operation and one or two faults (server SIGKILL and restart on the
same store, proxy drop/stall/slow/cut/refuse, client SIGKILL, a full disk, an S3 restart
for ``--dest``), runs the real ``mongo-backup`` as a child process with the faults
applied at random moments, then retries as a user would (the same command with
``--resume``; a watch is started again) until it succeeds. A watch runs 2 s while the
source changes, then gets SIGTERM (1.5 s on a retry), and its location's chain is
checked. The outcome is checked against the source: documents byte for byte, options,
indexes and views; the archive verifies; no archive exists under its final name unless
it is complete; the password is in no file and no output.
One line per run, then a summary; the exit code is 1 on any data lost, unrecovered or
hung run. ``--seed S --run K`` replays run K of seed S alone.
"""

from __future__ import annotations

import argparse
import compileall
import logging
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from world import (
    SOURCE,
    World,
    change_source,
    choose_faults,
    disk_limit,
    inject,
    scrub_tree,
    snapshot,
)

import mongo_backup
from mongo_backup.archive.reader import open_backup
from mongo_backup.backup.options import BackupOptions
from mongo_backup.backup.run import run_backup
from mongo_backup.errors import MongoBackupError
from mongo_backup.names import ARCHIVE_NAME
from mongo_backup.restore.options import RestoreOptions
from mongo_backup.restore.run import run_restore
from mongo_backup.verify.run import VerifyOptions, run_verify

logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log

OPERATIONS = ("backup", "backup", "restore", "restore", "incremental", "backup-dest", "watch")
WATCH_FOR = (2.0, 1.5)  # seconds a watch runs before its SIGTERM: first try, retries
COMMAND_BOUND = 60.0  # seconds one command may take before the run counts as hung
ATTEMPTS = 4  # the faulty run, then up to three retries as a user would


@dataclass
class Outcome:
    verdict: str = "recovered"  # recovered | lost | unrecovered | unsurvived | hung
    attempts: int = 0
    notes: list[str] = field(default_factory=list)
    outputs: list[bytes] = field(default_factory=list)


class Campaign:
    def __init__(self, world: World, seed: int, keep: bool = False) -> None:
        self.world, self.seed, self.keep = world, seed, keep
        self.tool = [sys.executable, "-m", "mongo_backup"]
        self.pristine = world.root / "pristine"
        with world.direct() as client:
            self.source_at_start = snapshot(client, SOURCE)
        self._source: dict[str, Any] | None = self.source_at_start
        made = subprocess.run(
            [*self.tool, "backup", "--uri", world.uri, "--db", SOURCE,
             "--out-dir", self.pristine, "-q"],
            capture_output=True, timeout=120, check=True,
        )  # fmt: skip
        self.pristine_archive = Path(made.stdout.decode().strip())

    # -- one run ---------------------------------------------------------------------------

    def run(self, number: int) -> tuple[str, Outcome]:
        rng = random.Random(f"{self.seed}:{number}")
        op = rng.choice(OPERATIONS)
        work = self.world.root / f"run{number}"
        work.mkdir()
        env = {**os.environ, "MONGO_BACKUP_STATE_DIR": str(work / "state")}
        command, expected = self._prepare(op, number, work, rng)
        # Faults land while the command runs: a backup of the campaign's source takes about a
        # second, a restore a few, a watch runs 2 s.
        horizon = 2.5 if op in ("restore", "watch") else 1.2
        faults = choose_faults(rng, op, horizon=horizon, out=work / "out")
        limit = disk_limit(rng) if op != "restore" else None
        labels = [f.label() for f in faults] + ([f"disk-full({limit}B)"] if limit else [])
        outcome = Outcome()
        writer = self._writes_during_watch(rng) if op == "watch" else None
        try:
            self._attempts(command, env, faults, limit, outcome, writer)
            riding_out = op != "restore" and limit is None and all(f.survivable for f in faults)
            if outcome.verdict == "recovered" and riding_out and outcome.attempts > 1:
                # A backup promises to retry these faults itself: a user's retry was needed.
                outcome.verdict = "unsurvived"
            if outcome.verdict == "recovered":
                self._check(op, number, work, expected, outcome, rng.random() < 0.25)
        finally:
            self.world.ensure_up()
        self._check_secrets(work, outcome)
        line = f"{op:<12} faults {'+'.join(labels):<52}"
        if not self.keep:
            scrub_tree(work)
        return line, outcome

    def _prepare(
        self, op: str, number: int, work: Path, rng: random.Random
    ) -> tuple[list[str], dict[str, Any]]:
        """The command a user would type, and what must come out of it."""
        uri = self.world.uri
        common = [
            "--retries",
            "6",
            "--retry-delay",
            "0.2",
            "--timeout",
            "10",
            "--stall-timeout",
            "2",
        ]
        if op == "restore":
            target = f"chaos_r{number}"
            return (
                [*self.tool, "restore", str(self.pristine_archive), "--uri", uri, "--db", target,
                 "--drop", "--batch-size", "500", *common[4:]],
                {"db": target, "snapshot": self.source_at_start},
            )  # fmt: skip
        out = work / "out"
        backup = [*self.tool, "backup", "--uri", uri, "--db", SOURCE, "--out-dir", str(out),
                  "--checkpoint-interval", str(rng.choice([0.05, 0.2])),
                  "--batch-size", str(rng.choice([100, 200, 500, 1000])),
                  "-j", str(rng.choice([1, 2])), *common]  # fmt: skip
        if op == "watch":  # the same options, an increment every 0.5 s until SIGTERM
            return [*backup[:3], "watch", *backup[4:], "--interval", "0.5"], {}
        if op == "backup-dest":
            assert self.world.s3 is not None
            url = f"s3://{self.world.s3.bucket}/run{number}"
            backup += ["--dest", url, "--endpoint-url", self.world.s3.endpoint_url]
            if rng.random() < 0.5:
                backup.append("--stream")
            return backup, {"url": url}
        if op == "incremental":
            # A fresh base for each increment: the server keeps a bounded history, and the
            # campaign's own restores write enough to push an old base's point out of it
            # (the tool then rightly asks for a full backup).
            # In this process with the real code (the base is not what is tested, and a
            # second interpreter start per run would cost a tenth of the campaign).
            run_backup(BackupOptions(uri=self.world.direct_uri, db=SOURCE, out_dir=out))
            with self.world.direct() as client:
                change_source(client[SOURCE], rng)
            self._source = None
            backup += ["--incremental"]
        return backup, {}

    def _writes_during_watch(self, rng: random.Random) -> threading.Thread:
        """Changes to the source while a watch follows it (the check compares after)."""
        moments = sorted(rng.uniform(0.2, 1.5) for _ in range(3))
        seeds = [rng.randrange(10**9) for _ in moments]

        def write() -> None:
            started = time.monotonic()
            for moment, seed in zip(moments, seeds, strict=True):
                time.sleep(max(0.0, moment - (time.monotonic() - started)))
                for _ in range(20):  # the server may be down for a while: as any writer
                    try:
                        with self.world.direct() as client:
                            change_source(client[SOURCE], random.Random(seed))
                        self._source = None
                        break
                    except Exception:
                        time.sleep(0.3)

        thread = threading.Thread(target=write, daemon=True)
        thread.start()
        return thread

    def _attempts(
        self,
        command: list[str],
        env: dict[str, str],
        faults: list[Any],
        limit: int | None,
        outcome: Outcome,
        writer: threading.Thread | None = None,
    ) -> None:
        """The faulty attempt, then retries with --resume until one succeeds."""
        for attempt in range(ATTEMPTS):
            outcome.attempts = attempt + 1
            # The same command with --resume, as the README tells a user (a resumed restore
            # keeps what it restored; --drop then applies only to what it had not begun).
            watch = "watch" in command[3:4]
            again = command if attempt == 0 or watch else [*command, "--resume"]
            code = self._run_once(
                again,
                env,
                faults if attempt == 0 else [],
                limit if attempt == 0 else None,
                outcome,
                stop_after=WATCH_FOR[min(attempt, 1)] if watch else None,
                writer=writer,
            )
            if code is None:
                outcome.verdict = "hung"
                return
            self._no_partial_archive(command, outcome)
            if code in (0,):
                return
            self.world.ensure_up()
        outcome.verdict = "unrecovered"

    def _run_once(
        self,
        command: list[str],
        env: dict[str, str],
        faults: list[Any],
        limit: int | None,
        outcome: Outcome,
        stop_after: float | None = None,
        writer: threading.Thread | None = None,
    ) -> int | None:
        def child_setup() -> None:
            if limit is not None:
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True, preexec_fn=child_setup,
        )  # fmt: skip
        injector = inject(self.world, process, faults)
        # A watch runs until told to stop: SIGTERM to it alone (its converters are children
        # it stops itself), as systemd's KillMode=mixed does.
        # The writes end first: what the watch must hold is the source when it was told to
        # stop (a write after its last increment is not the watch's to keep).
        stopper = threading.Timer(stop_after or 0.0, _terminate, args=(process, writer))
        if stop_after is not None:
            stopper.start()
        try:
            out, err = process.communicate(timeout=COMMAND_BOUND)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            out, err = process.communicate()
            outcome.outputs += [out, err]
            outcome.notes.append(f"hung: {command[3]} past {COMMAND_BOUND:.0f} s")
            return None
        stopper.cancel()
        injector.join(30)
        outcome.outputs += [out, err]
        if process.returncode:
            last = err.decode(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
            outcome.notes.append(f"exit {process.returncode}: {last[0][:160]}")
        return process.returncode

    # -- checks ----------------------------------------------------------------------------

    def _no_partial_archive(self, command: list[str], outcome: Outcome) -> None:
        """An archive under its final name is a complete one, even after a failure."""
        if "--out-dir" not in command:
            return
        folder = Path(command[command.index("--out-dir") + 1]) / "backup_data"
        for path in sorted(folder.glob("backup_*")) if folder.is_dir() else []:
            if ARCHIVE_NAME.match(path.name) and path.name != self.pristine_archive.name:
                report = run_verify(VerifyOptions(str(path)))
                if not report.ok:
                    outcome.verdict = "lost"
                    outcome.notes.append(f"incomplete archive under its final name: {path.name}")

    def _check(
        self,
        op: str,
        number: int,
        work: Path,
        expected: dict[str, Any],
        outcome: Outcome,
        restore_too: bool = True,
    ) -> None:
        with self.world.direct() as client:
            if op == "restore":
                self._same(client, expected["db"], expected["snapshot"], outcome)
                client.drop_database(expected["db"])
                return
            if op == "backup-dest":
                source = expected["url"] + "/" + self._stored_key(expected["url"])
                endpoint = self.world.s3.endpoint_url if self.world.s3 else None
            elif op == "watch":  # the location: its newest chain
                source, endpoint = str(work / "out"), None
            else:
                archives = sorted((work / "out" / "backup_data").glob("backup_*.tar*"))
                archives = [
                    a
                    for a in archives
                    if ARCHIVE_NAME.match(a.name) and a.name != self.pristine_archive.name
                ]
                # A client killed after its archive was written leaves a whole backup; the
                # user's retry (nothing left to resume) then takes a second one. Every one
                # verifies (_no_partial_archive); the newest must restore to the source.
                if not archives:
                    outcome.verdict = "lost"
                    outcome.notes.append("no archive written")
                    return
                source, endpoint = str(archives[-1]), None
            # In this process, with the real code (a mutant build is only the tool's):
            # a second interpreter start per run would cost a tenth of the campaign.
            os.environ["MONGO_BACKUP_STATE_DIR"] = str(work / "state")
            if op in ("backup", "backup-dest"):
                # A full backup of a source that did not change while it ran: compared with
                # the source as it stands (documents by _id on exact bytes, options, indexes,
                # views), and restored as well for one run in four (a restore and two reads
                # of the source cost more than the backup itself).
                self._same_as_source(client, source, endpoint, outcome)
                if not restore_too:
                    return
            target = f"chaos_c{number}"
            try:
                restored = run_restore(
                    RestoreOptions(
                        # The check's own copy need not be durable: acknowledged is enough.
                        source,
                        self.world.direct_uri + "&w=1&journal=false",
                        target,
                        drop=True,
                        endpoint_url=endpoint,
                    )
                )
                if not restored.complete:
                    raise MongoBackupError("the restore of the result is not complete")
            except MongoBackupError as error:
                outcome.verdict = "lost"
                outcome.notes.append(f"restore of the result failed: {error}")
            else:
                self._same(client, target, self.source_snapshot(client), outcome)
            client.drop_database(target)

    def _same_as_source(
        self, client: Any, source: str, endpoint: str | None, outcome: Outcome
    ) -> None:
        """``verify --against-uri``: the archive is intact and holds the source exactly."""
        report = run_verify(
            VerifyOptions(source, against_uri=self.world.direct_uri, endpoint_url=endpoint)
        )
        names = {entry.name for entry in report.manifest.collections if entry.type != "changes"}
        if not report.ok or names != set(self.source_snapshot(client)):
            outcome.verdict = "lost"
            problems = [str(problem) for problem in report.problems][:3]
            outcome.notes.append(f"the backup differs from the source: {names}; {problems}")

    def source_snapshot(self, client: Any) -> dict[str, Any]:
        """The source as it stands (read again only after the campaign changed it)."""
        if self._source is None:
            self._source = snapshot(client, SOURCE)
        return self._source

    def _stored_key(self, url: str) -> str:
        assert self.world.s3 is not None
        prefix = url.split("/", 3)[3] + "/"
        keys = [k for k in self.world.s3.keys(prefix) if ARCHIVE_NAME.match(k[len(prefix) :])]
        return keys[-1][len(prefix) :] if keys else "(none)"

    def _same(self, client: Any, db: str, expected: dict[str, Any], outcome: Outcome) -> None:
        actual = snapshot(client, db)
        if actual != expected:
            outcome.verdict = "lost"
            for name in sorted(set(expected) | set(actual)):
                if expected.get(name) != actual.get(name):
                    have, want = actual.get(name) or {}, expected.get(name) or {}
                    outcome.notes.append(
                        f"{db}.{name} differs: {len(have.get('documents', []))} documents, "
                        f"{len(want.get('documents', []))} expected"
                    )

    def _check_secrets(self, work: Path, outcome: Outcome) -> None:
        secret = self.world.secret.encode()
        leaks = [p for p in work.rglob("*") if p.is_file() and secret in p.read_bytes()]
        leaks += [str(i) for i, text in enumerate(outcome.outputs) if secret in text]
        for path in work.rglob("backup_*.tar*"):
            try:
                with open_backup(path) as reader:
                    if self.world.secret in repr(reader.manifest):
                        leaks.append(f"{path.name} manifest")
            except Exception:
                pass
        if leaks:
            outcome.verdict = "lost"
            outcome.notes.append(f"the password is in {leaks[:3]}")


def _terminate(process: subprocess.Popen[bytes], writer: threading.Thread | None) -> None:
    if writer is not None:
        writer.join(30)
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=float(os.environ.get("CHAOS_MINUTES", 10)))
    parser.add_argument("--seed", type=int, default=int(os.environ.get("CHAOS_SEED", 0)) or None)
    parser.add_argument("--run", type=int, default=None, help="replay this run of --seed alone")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--stop-on-failure", action="store_true", help="end at the first failure")
    args = parser.parse_args()
    seed = args.seed or random.randrange(1, 10**6)
    # The tool starts several times a run. An installed package comes compiled; a source
    # tree run with PYTHONDONTWRITEBYTECODE would compile itself at every start (~0.35 s).
    compileall.compile_dir(Path(mongo_backup.__file__).parent, quiet=1)
    root = Path(tempfile.mkdtemp(prefix="chaos-"))
    world = World(root).start()
    print(f"chaos: seed {seed}, {args.minutes:g} minutes, work in {root}", flush=True)
    totals = dict.fromkeys(
        ("runs", "faults", "recovered", "lost", "unrecovered", "unsurvived", "hung"), 0
    )
    try:
        campaign = Campaign(world, seed, keep=args.keep)
        deadline = time.monotonic() + args.minutes * 60
        numbers = [args.run] if args.run is not None else range(1, 10**6)
        for number in numbers:
            if args.run is None and time.monotonic() > deadline:
                break
            started = time.monotonic()
            line, outcome = campaign.run(number)
            totals["runs"] += 1
            totals["faults"] += line.count("@") + line.count("disk-full")
            totals[outcome.verdict] += 1
            note = (
                f"  [{'; '.join(outcome.notes)}]"
                if outcome.notes and outcome.verdict != "recovered"
                else ""
            )
            print(
                f"run {number:4d}  seed {seed}:{number}  {line} -> {outcome.verdict} "
                f"({outcome.attempts} attempt{'s' if outcome.attempts > 1 else ''}, "
                f"{time.monotonic() - started:.1f} s){note}",
                flush=True,
            )
            if args.stop_on_failure and outcome.verdict != "recovered":
                break
            if args.run is not None and outcome.verdict != "recovered":
                for text in outcome.outputs:  # a replay shows everything the tool said
                    print(text.decode(errors="replace"), end="")
    finally:
        world.stop()
        if not args.keep:
            scrub_tree(root)
    print(
        f"summary: runs {totals['runs']}, faults injected {totals['faults']}, recovered "
        f"{totals['recovered']}, data lost {totals['lost']}, unrecovered {totals['unrecovered']}, "
        f"not ridden out {totals['unsurvived']}, hung {totals['hung']}  (seed {seed})"
    )
    failed = ("lost", "unrecovered", "unsurvived", "hung")
    return 1 if any(totals[key] for key in failed) else 0


if __name__ == "__main__":
    sys.exit(main())
