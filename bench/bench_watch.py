"""The benchmark's ``watch`` section: continuous backups under a steady write load.

Issue 14's targets, with ``watch --interval 5`` against gen_data's ``orders`` while a
writer updates them at a fixed rate (``--watch-rate`` updates/s, default 500):

- the recovery point: every second, the newest write (now: the writer never pauses)
  minus the newest durable change (the point of the last closed increment, read from the
  watch's state file); p95 <= 2 x interval;
- client CPU of the ``watch`` process (and its children) over the measured span, per
  1,000 changes/s: <= 5% of one core;
- memory flat: the median RSS of the last minute within 5% of the first minute's.

The span starts once the first full backup is closed (plus a warm-up of one interval)
and lasts ``--watch-minutes`` (default 10). The section's helpers come from bench.py.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from pymongo import MongoClient, UpdateOne

INTERVAL = 5.0
BATCH = 25  # updates per round trip of the writer
TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """User + system time of ``pid`` and its reaped children (its converter processes)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return (utime + stime + cutime + cstime) / TICK


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _point_seconds(state: Path) -> float | None:
    """The cluster time (seconds) of the last closed backup, from the watch's state."""
    try:
        manifest = json.loads(json.loads(state.read_text())["manifest"])
        return float(manifest["point"]["cluster_time"]["$timestamp"]["t"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


class _Writer:
    """Updates ``orders`` at a fixed rate until stopped; counts what it did."""

    def __init__(self, uri: str, db: str, rate: float) -> None:
        self.uri, self.db, self.rate = uri, db, rate
        self.stop = threading.Event()
        self.count = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        # Batches of updates in one round trip each (an application under load writes in
        # bulk; one update per round trip cannot reach the rate on a small machine).
        with MongoClient(self.uri) as client:
            orders = client[self.db].orders
            ids = [d["_id"] for d in orders.find({}, {"_id": 1}).limit(5000)]
            started = time.monotonic()
            while not self.stop.is_set():
                due = started + self.count / self.rate
                if (wait := due - time.monotonic()) > 0:
                    time.sleep(wait)
                batch = [
                    UpdateOne({"_id": ids[(self.count + k) % len(ids)]}, {"$inc": {"bench_n": 1}})
                    for k in range(BATCH)
                ]
                orders.bulk_write(batch, ordered=False)
                self.count += BATCH


def section_watch(c: Any, tools: SimpleNamespace) -> None:
    say, check = tools.say, tools.check
    minutes, rate = c.args.watch_minutes, c.args.watch_rate
    work = tempfile.mkdtemp(prefix="bench-watch-")
    state = Path(work) / ".watch" / c.db / "state.json"
    command = [*c.mb, "watch", "--uri", c.uri, "--db", c.db, "--out-dir", work,
               "--interval", str(INTERVAL), "-q"]  # fmt: skip
    writer = _Writer(c.uri, c.db, rate)
    process = subprocess.Popen(command, env=c.mb_env, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while _point_seconds(state) is None:  # the first full backup
            if process.poll() is not None or time.monotonic() > deadline:
                say(f"SKIP watch: the first full backup did not close (exit {process.poll()})")
                return
            time.sleep(0.5)
        writer.thread.start()
        time.sleep(INTERVAL)  # warm-up: the first increments
        cpu0, count0, t0 = _cpu_seconds(process.pid), writer.count, time.monotonic()
        lags: list[float] = []
        rss: list[tuple[float, float]] = []
        while (elapsed := time.monotonic() - t0) < minutes * 60:
            point = _point_seconds(state)
            if point is not None:
                lags.append(max(0.0, time.time() - point))
            rss.append((elapsed, _rss_mib(process.pid)))
            time.sleep(1.0)
        cpu = _cpu_seconds(process.pid) - cpu0
        span, changes = time.monotonic() - t0, writer.count - count0
    finally:
        writer.stop.set()
        process.terminate()
        try:
            process.wait(120)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(work, ignore_errors=True)
    achieved = changes / span
    say(f"watch: --interval {INTERVAL:g}, {span / 60:.1f} min, updates asked {rate:g}/s, "
        f"done {achieved:.0f}/s ({changes} changes), data {c.db} (N={c.args.n})")  # fmt: skip
    p95 = statistics.quantiles(lags, n=20)[-1] if len(lags) >= 20 else max(lags or [0.0])
    say(f"watch recovery point: p50 {statistics.median(lags):.1f} s, p95 {p95:.1f} s, "
        f"max {max(lags):.1f} s ({len(lags)} samples, one a second)")  # fmt: skip
    check("RATIO watch recovery-point p95/interval", p95 / INTERVAL, 2.0)
    share = cpu / span
    per_thousand = share / (achieved / 1000) if achieved else float("inf")
    say(f"watch client CPU: {cpu:.1f} s over {span:.0f} s = {100 * share:.1f}% of one core "
        f"at {achieved:.0f} changes/s")  # fmt: skip
    check("watch CPU share of one core per 1,000 changes/s", per_thousand, 0.05, "{:.3f}", "{:.3f}")
    first = statistics.median(m for t, m in rss if t <= 60)
    last = statistics.median(m for t, m in rss if t >= span - 60)
    say(f"watch RSS: first minute {first:.1f} MiB, last minute {last:.1f} MiB")
    check("RATIO watch RSS last/first minute", last / first, 1.05)
