"""Benchmark harness: mongo-backup against the shared baselines, on one embedded server.

usage: python bench/bench.py [--n 100000] [--repeat 3] [--only backup,...] [--big-n 400000]

One SecantusDB server (mongo_backup.mongo.embedded.EmbeddedServer) runs for the whole run; the
data sets are loaded with ../shared/bench/gen_data.py. Every measured command is a child
process: wall time is perf_counter around it, client CPU (user+sys) and peak RSS come
from os.wait4 on that child. Each command runs --repeat times and medians are reported.
The machine is small and noisy, so ratios against baselines measured in the same run
matter more than absolute numbers. A section whose command fails prints
`SKIP section: reason` and the run goes on. Printed lines and raw numbers are written to
bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bench_deployment import section_deployment
from bench_increments import section_increments
from bench_resilience import section_resilience
from bench_scale import section_scale
from bench_storage import section_destinations
from bench_watch import section_watch
from pymongo import MongoClient  # a dependency of the project, so in its venv

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "bench"  # baselines: called by path, never copied
RESULTS = REPO / "bench" / "results" / "latest.json"
SECTIONS = (
    "backup", "restore", "verify", "resilience", "increments", "destinations", "deployment",
    "scale", "watch",
)  # fmt: skip

try:  # use the installed package if there is one, else the source tree
    from mongo_backup.mongo.embedded import EmbeddedServer
except ImportError:
    sys.path.insert(0, str(REPO / "src"))
    from mongo_backup.mongo.embedded import EmbeddedServer

LINES: list[str] = []  # everything printed, for the JSON dump
RAW: dict[str, Any] = {}  # raw numbers, for the JSON dump


def say(line: str = "") -> None:
    print(line, flush=True)
    LINES.append(line)


@dataclass
class Run:
    """One child process: exit code, wall/CPU seconds, peak RSS (MiB), output."""

    code: int
    wall: float
    cpu: float
    rss: float
    stdout: str
    stderr: str


@dataclass
class Stats:
    """Medians over --repeat runs of one tool, plus the raw runs."""

    tool: str
    wall: float
    cpu: float
    rss: float
    runs: list[dict[str, float]] = field(default_factory=list)
    extra: float | None = None  # e.g. raw_load's own printed total_wall_s


class Failed(Exception):
    """A measured command exited non-zero (message: the reason for the SKIP line)."""


def measure(cmd: list[str], cwd: str, timeout: float, env: dict[str, str] | None = None) -> Run:
    """Run cmd once as a child; take CPU and peak RSS from os.wait4 on exactly that child."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL
        )
        killer = threading.Timer(timeout, proc.kill)  # a hung command must not hang us
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)  # already reaped: tell Popen
        out.seek(0)
        err.seek(0)
        return Run(
            code=proc.returncode,
            wall=wall,
            cpu=usage.ru_utime + usage.ru_stime,
            rss=usage.ru_maxrss / 1024,  # Linux reports KiB
            stdout=out.read().decode("utf-8", "replace"),
            stderr=err.read().decode("utf-8", "replace"),
        )


def reason(run: Run) -> str:
    """The first line of stderr for a SKIP line; the last if the first is a traceback's or
    argparse's usage header (the error itself is the last line then)."""
    lines = [ln.strip() for ln in run.stderr.splitlines() if ln.strip()]
    if not lines:
        return f"exit code {run.code}"
    return lines[-1] if lines[0].startswith(("Traceback", "usage:")) else lines[0]


def bench(
    tool: str,
    cmd: list[str],
    repeat: int,
    timeout: float,
    keep: list[str] | None = None,
    env: dict[str, str] | None = None,
    parse: str | None = None,
    before: Callable[[], None] | None = None,
) -> Stats:
    """Run cmd --repeat times, each in a fresh temporary dir (substituted for "{TMP}").

    Each dir is deleted after its run, except the last one if `keep` is given: its path
    and the command's stdout are appended to `keep` (used to reuse archives later).
    `parse` names a `key value` pair of stdout to record as Stats.extra (median).
    `before` runs before each run, untimed (e.g. empty the target database).
    """
    runs: list[Run] = []
    extras: list[float] = []
    for i in range(repeat):
        tmp = tempfile.mkdtemp(prefix=f"bench-{tool}-")
        kept = False
        try:
            if before is not None:
                before()
            run = measure([a.replace("{TMP}", tmp) for a in cmd], tmp, timeout, env)
            if run.code != 0:
                raise Failed(reason(run) if run.code != -9 else f"killed after {timeout:g} s")
            runs.append(run)
            if parse:
                found = re.search(rf"\b{parse}\s+([0-9.]+)", run.stdout)
                if not found:
                    raise Failed(f"no '{parse}' in output: {run.stdout.strip()[:200]}")
                extras.append(float(found.group(1)))
            if keep is not None and i == repeat - 1:
                keep.extend([tmp, run.stdout.strip()])
                kept = True
        finally:
            if not kept:
                shutil.rmtree(tmp, ignore_errors=True)
    stats = Stats(
        tool,
        statistics.median(r.wall for r in runs),
        statistics.median(r.cpu for r in runs),
        statistics.median(r.rss for r in runs),
        [{"wall": r.wall, "cpu": r.cpu, "rss": r.rss} for r in runs],
        statistics.median(extras) if extras else None,
    )
    RAW.setdefault("tools", {})[tool] = asdict(stats)
    line = f"{tool:<13} cpu {stats.cpu:.2f} s  wall {stats.wall:.2f} s  rss {stats.rss:.1f} MiB"
    say(line + (f"  ({parse} {stats.extra:.2f} s)" if parse and stats.extra is not None else ""))
    return stats


def check(
    label: str, value: float, target: float, fmt: str = "{:.2f}", tfmt: str = "{:.2f}"
) -> None:
    """Print `label value (target <= target) PASS|FAIL` and record it."""
    ok = value <= target
    say(f"{label} {fmt.format(value)} (target <= {tfmt.format(target)}) {'PASS' if ok else 'FAIL'}")
    RAW.setdefault("checks", {})[label] = {"value": value, "target": target, "pass": ok}


def ratio(
    a: Stats | None, b: Stats | None, metric: str, target: float, b_value: float | None = None
) -> None:
    """RATIO a/b metric: only when both sides were measured."""
    if a is None or b is None:
        return
    base = getattr(b, metric) if b_value is None else b_value
    check(f"RATIO {a.tool}/{b.tool} {metric}", getattr(a, metric) / base, target)


def load(uri: str, db: str, n: int) -> None:
    """Load a data set with the shared generator (not measured)."""
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, str(SHARED / "gen_data.py"), uri, db, str(n)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    with MongoClient(uri) as client:
        dbh = client[db]
        docs = sum(dbh[c].estimated_document_count() for c in dbh.list_collection_names())
        size = int(dbh.command("dbStats")["dataSize"])
    RAW.setdefault("data", {})[db] = {"n": n, "documents": docs, "data_size": size}
    say(
        f"data {db}: N={n}, {docs} documents, {size} bytes ({size / 2**20:.1f} MiB dataSize), "
        f"loaded in {time.perf_counter() - t0:.1f} s"
    )


def cli_command() -> tuple[list[str], dict[str, str] | None]:
    """The project's CLI: the script beside this interpreter, else `python -m mongo_backup`."""
    script = Path(sys.executable).with_name("mongo-backup")
    if script.exists():
        return [str(script)], None
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])),
    )
    return [sys.executable, "-m", "mongo_backup"], env


def compile_package() -> None:
    """Byte-compile the project's modules, as installing it does (pip writes every
    module's ``.pyc``). An editable checkout has none, and where PYTHONDONTWRITEBYTECODE
    is set (this machine) each process would compile the ~100 modules again: ~0.1 s of
    CPU in every backup and restore that no installed copy pays."""
    import compileall

    import mongo_backup

    folder = Path(mongo_backup.__file__).parent
    compileall.compile_dir(str(folder), quiet=1)
    RAW["byte_compiled"] = str(folder)


@dataclass
class Ctx:
    """What every section needs: server, database, CLI command, options, dirs to clean up."""

    uri: str
    db: str
    args: argparse.Namespace
    mb: list[str]  # the project's CLI command
    mb_env: dict[str, str] | None
    keep: list[str] = field(default_factory=list)  # temp dirs kept for reuse, removed at end
    archive: str | None = None  # our backup archive (last backup run's stdout)
    seed_archive: str | None = None  # seed_reference's .tar

    def run(
        self,
        section: str,
        tool: str,
        cmd: list[str],
        *,
        repeat: int | None = None,
        ours: bool = False,
        keep: bool = False,
        parse: str | None = None,
        before: Callable[[], None] | None = None,
    ) -> tuple[Stats | None, str | None]:
        """bench() with this run's options; returns (stats, last stdout line if kept)."""
        kept: list[str] = []
        try:
            stats: Stats | None = bench(
                tool,
                cmd,
                self.args.repeat if repeat is None else repeat,
                self.args.timeout,
                keep=kept if keep else None,
                env=self.mb_env if ours else None,
                parse=parse,
                before=before,
            )
        except Failed as exc:  # print `SKIP section: reason`, and the run goes on
            say(f"SKIP {section}: {exc}")
            RAW.setdefault("skipped", {})[tool] = str(exc)
            stats = None
        self.keep.extend(kept[:1])
        lines = kept[1].splitlines() if stats and len(kept) > 1 else []
        # A relative path printed by the command is relative to its cwd, the kept dir.
        return stats, (os.path.join(kept[0], lines[-1]) if lines else None)

    def backup_command(self, db: str, *extra: str) -> list[str]:
        return [*self.mb, "backup", "--uri", self.uri, "--db", db, "--out-dir", "{TMP}",
                "--compress", "zstd", "-q", *extra]  # fmt: skip

    def backup(self, tool: str, db: str, *extra: str, repeat: int | None = None) -> Stats | None:
        stats, out = self.run(
            "backup",
            tool,
            self.backup_command(db, *extra),
            ours=True,
            keep=self.archive is None,
            repeat=repeat,
        )
        self.archive = self.archive or out
        return stats

    def big_data(self) -> str:
        """The N=big_n data set, loaded once for the sections that need it."""
        if "bench_big" not in RAW.get("data", {}):
            load(self.uri, "bench_big", self.args.big_n)
        return "bench_big"

    def seed(self, repeat: int | None = None) -> Stats | None:
        stats, self.seed_archive = self.run(
            "seed",
            "seed",
            [
                sys.executable,
                str(SHARED / "seed_reference.py"),
                "--mongo-uri",
                self.uri,
                "--mongo-db",
                self.db,
                "--out-dir",
                "{TMP}",
            ],
            repeat=repeat,
            keep=True,
        )
        return stats


def merged(tool: str, rounds: list[Stats | None]) -> Stats | None:
    """One tool's rounds as one Stats (medians), printed; None if a round failed."""
    if not rounds or any(stats is None for stats in rounds):
        return None
    runs = [run for stats in rounds if stats for run in stats.runs]
    stats = Stats(
        tool,
        statistics.median(r["wall"] for r in runs),
        statistics.median(r["cpu"] for r in runs),
        statistics.median(r["rss"] for r in runs),
        runs,
    )
    RAW.setdefault("tools", {})[tool] = asdict(stats)
    say(f"{tool:<13} cpu {stats.cpu:.2f} s  wall {stats.wall:.2f} s  rss {stats.rss:.1f} MiB"
        f"  (median of {len(runs)} interleaved runs)")  # fmt: skip
    return stats


def interleaved(measures: dict[str, Callable[[], Stats | None]], repeat: int) -> list[Stats | None]:
    """Each measure once a round for ``repeat`` rounds, each round starting one further
    along: the server is slower just after the load and warmer later, and a tool measured
    in one block would carry that into its ratio. The tools' medians, in their order."""
    rounds: dict[str, list[Stats | None]] = {tool: [] for tool in measures}
    tools = list(measures)
    for index in range(repeat):
        start = index % len(tools)
        for tool in tools[start:] + tools[:start]:
            rounds[tool].append(measures[tool]())
    return [merged(tool, rounds[tool]) for tool in tools]


def interleaved_backup(c: Ctx) -> tuple[Stats | None, Stats | None, Stats | None]:
    """Backup, seed script and raw_drain in --repeat interleaved rounds. Each run's own
    line is printed as it ends."""
    drain_command = [sys.executable, str(SHARED / "raw_drain.py"), c.uri, c.db]
    backup, seed, drain = interleaved(
        {
            "backup": lambda: c.backup("backup", c.db, repeat=1),
            "seed": lambda: c.seed(repeat=1),
            "raw_drain": lambda: c.run("raw_drain", "raw_drain", drain_command, repeat=1)[0],
        },
        c.args.repeat,
    )
    return backup, seed, drain


def section_backup(c: Ctx, backup: Stats | None, seed: Stats | None, drain: Stats | None) -> None:
    """Backup vs the seed exporter (CPU) and the raw read floor (wall); then flat memory."""
    # Issue 15's targets: the read floor's wall (what mongodump does), a quarter of the
    # seed script's CPU.
    ratio(backup, seed, "cpu", 0.25)
    ratio(backup, drain, "wall", 1.00)
    if backup is None:
        return
    check("RSS backup", backup.rss, 150, "{:.1f} MiB", "{:g}")
    if not c.args.big_n:
        return
    # Flat memory: the same backup of a database big_n/n times larger must not need more RAM.
    big = c.backup("backup_big", c.big_data())
    if big:
        growth = (big.rss - backup.rss) / backup.rss * 100
        ok = growth < 15
        say(
            f"RSS growth N={c.args.big_n} vs N={c.args.n}: {growth:+.1f}% (target < 15%) "
            f"{'PASS' if ok else 'FAIL'}"
        )
        RAW.setdefault("checks", {})["RSS growth"] = {"value": growth, "target": 15, "pass": ok}


def section_restore(c: Ctx) -> None:
    """Restore our archive vs a hand-written json_util restore (CPU) and the write floor."""
    if c.archive is None:
        say("SKIP restore: no backup archive (backup skipped)")
        return
    target = f"{c.db}_restored"

    def empty_target() -> None:
        # Each run restores into an empty database, as raw_load's timed phase does (it
        # drops its target before timing): dropping the previous run's collections is
        # seconds of server time that neither baseline pays.
        with MongoClient(c.uri) as client:
            client.drop_database(target)

    restore, _ = c.run(
        "restore",
        "restore",
        [*c.mb, "restore", c.archive, "--uri", c.uri, "--db", target, "--drop", "-q"],
        ours=True,
        before=empty_target,
    )
    if restore is None:  # nothing to compare the (slow) restore baselines with
        return
    if c.seed_archive is None:  # --only without backup: make the seed archive once
        c.seed(repeat=1)
    naive = None
    if c.seed_archive:
        naive, _ = c.run(
            "naive_restore",
            "naive_restore",
            [
                sys.executable,
                str(SHARED / "naive_restore.py"),
                c.seed_archive,
                c.uri,
                f"{c.db}_naive",
            ],
        )
    raw_load, _ = c.run(
        "raw_load",
        "raw_load",
        [sys.executable, str(SHARED / "raw_load.py"), c.uri, c.db, c.uri, f"{c.db}_rawload"],
        parse="total_wall_s",
    )
    ratio(restore, naive, "cpu", 0.25)
    if raw_load:  # vs raw_load's own timed phase (inserts + index builds), not its process
        ratio(restore, raw_load, "wall", 1.00, b_value=raw_load.extra)
    check("RSS restore", restore.rss, 200, "{:.1f} MiB", "{:g}")


def section_verify(c: Ctx, backup: Stats | None) -> None:
    """Verifying an archive should cost well under making it."""
    if c.archive is None:
        say("SKIP verify: no backup archive (backup skipped)")
        return
    verify, _ = c.run("verify", "verify", [*c.mb, "verify", c.archive, "-q"], ours=True)
    ratio(verify, backup, "wall", 0.50)


def main() -> int:
    p = argparse.ArgumentParser(description="mongo-backup benchmark against shared baselines")
    p.add_argument("--n", type=int, default=100_000, help="gen_data N (orders) of the main set")
    p.add_argument("--repeat", type=int, default=3, help="runs per command; medians reported")
    p.add_argument("--only", default=",".join(SECTIONS), help="comma list of " + ",".join(SECTIONS))
    p.add_argument("--big-n", type=int, default=400_000, help="N of the flat-memory set; 0 skips")
    p.add_argument("--timeout", type=float, default=1800, help="kill a measured command after S s")
    p.add_argument("--watch-minutes", type=float, default=10, help="length of the watch section")
    p.add_argument("--scale-docs", type=int, default=2_000_000, help="scale (b): documents")
    p.add_argument("--scale-big-docs", type=int, default=1000, help="scale (c): 15 MiB documents")
    p.add_argument("--scale-parts", default="abc", help="scale: which parts (a, b, c) to run")
    p.add_argument("--watch-rate", type=float, default=500, help="updates/s during the watch")
    a = p.parse_args()
    only = {s.strip() for s in a.only.split(",") if s.strip()}
    if unknown := only - set(SECTIONS):
        p.error(f"unknown section(s) in --only: {', '.join(sorted(unknown))}")
    missing = [
        s
        for s in ("gen_data", "seed_reference", "raw_drain", "naive_restore", "raw_load")
        if not (SHARED / f"{s}.py").is_file()
    ]
    if missing:
        sys.exit(f"bench: baseline scripts missing in {SHARED}: {', '.join(missing)}")
    RAW["args"], (mb, mb_env) = vars(a), cli_command()
    compile_package()
    keep: list[str] = []  # temp dirs kept for reuse (archives); removed at the end
    try:
        with EmbeddedServer() as srv:  # one server for every measurement
            c = Ctx(srv.uri, "bench", a, mb, mb_env, keep)
            say(
                f"mongo-backup bench  {time.strftime('%Y-%m-%d %H:%M:%S')}  "
                f"python {platform.python_version()}  cores {os.cpu_count()}  "
                f"repeat {a.repeat}  sections {','.join(s for s in SECTIONS if s in only)}"
            )
            say(f"server {srv.uri}  cli {' '.join(mb)}")
            load(c.uri, c.db, a.n)
            say("")
            say("== backup")
            # Our backup runs whenever any section needs it: restore and verify use its archive
            # and verify compares against its wall time.
            if "backup" in only:
                backup, seed, drain = interleaved_backup(c)
                section_backup(c, backup, seed, drain)
            else:
                backup = c.backup("backup", c.db)
            if "resilience" in only:
                say("")
                say("== resilience")
                tools = SimpleNamespace(say=say, check=check, measure=measure, reason=reason)
                section_resilience(c, tools, RAW, backup)
            if "bench_big" in RAW.get("data", {}):  # keep the server lean for what follows
                with MongoClient(c.uri) as client:
                    client.drop_database("bench_big")
            if "restore" in only:
                say("")
                say("== restore")
                section_restore(c)
            if "verify" in only:
                say("")
                say("== verify")
                section_verify(c, backup)
            if "destinations" in only:
                say("")
                say("== destinations")
                tools = SimpleNamespace(say=say, check=check, interleaved=interleaved)
                section_destinations(c, tools)
            if "increments" in only:
                say("")
                say("== increments")
                section_increments(c, SimpleNamespace(say=say, check=check, load=load))
            if "deployment" in only:
                say("")
                say("== deployment")
                with EmbeddedServer() as second:  # the pipe's other end
                    tools = SimpleNamespace(say=say, check=check, merged=merged)
                    section_deployment(c, tools, second.uri)
            if "scale" in only:  # servers of its own
                say("")
                say("== scale")
                section_scale(c, SimpleNamespace(say=say, check=check, server=EmbeddedServer))
            if "watch" in only:  # last: it writes to the main data set
                say("")
                say("== watch")
                section_watch(c, SimpleNamespace(say=say, check=check))

    finally:
        for d in keep:
            shutil.rmtree(d, ignore_errors=True)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps({"lines": LINES, "raw": RAW}, indent=2) + "\n")
    print(f"results: {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
