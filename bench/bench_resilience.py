"""The resilience section (issue 4): one big collection read by one cursor and in ``_id``
ranges, the CPU cost of checkpoints, and a resume after a kill half-way."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from types import SimpleNamespace
from typing import Any

from pymongo import MongoClient


def section_resilience(c: Any, tools: SimpleNamespace, raw: dict[str, Any], backup: Any) -> None:
    """Issue 4: one big collection read by one cursor and split in _id ranges (wall, RSS),
    the CPU cost of checkpoints, and how long a resume takes after a kill half-way."""
    if backup is None:
        tools.say("SKIP resilience: the main backup failed")
        return
    # Checkpoints every second (the default) vs none at all (an interval longer than the run).
    no_checkpoints = c.backup("no_checkpoint", c.db, "--checkpoint-interval", "1e9")
    if no_checkpoints:
        tools.check("RATIO checkpoint overhead cpu", backup.cpu / no_checkpoints.cpu, 1.05)
    resume_after_kill(c, tools, raw, backup)
    if not c.args.big_n:
        return
    big = c.big_data()
    with MongoClient(c.uri) as client:
        orders = client[big]["orders"].estimated_document_count()
    tools.say(f"orders of {big}: {orders} documents")
    single = c.backup("orders_j1", big, "--collection", "orders", "-j", "1", repeat=1)
    # A threshold of ~half the size estimate the server allows (1 KiB per document when
    # it reports no sizes) makes two _id ranges, read by two workers.
    half = f"{orders * 1024 // 2 // 1024 + 1}KB"
    split = c.backup(
        "orders_split", big, "--collection", "orders", "-j", "2", "--split-threshold", half,
        repeat=1,
    )  # fmt: skip
    if single and split:
        tools.check("RATIO orders split/single wall", split.wall / single.wall, 1.0)
    for stats in (single, split):
        if stats:
            growth = (stats.rss - backup.rss) / backup.rss * 100
            tools.check(
                f"RSS growth {stats.tool} vs N={c.args.n} backup %", growth, 15, "{:+.1f}", "{:g}"
            )


def resume_after_kill(c: Any, tools: SimpleNamespace, raw: dict[str, Any], backup: Any) -> None:
    """Kill a backup with SIGKILL at half the full backup's wall time, then time --resume."""
    tmp = tempfile.mkdtemp(prefix="bench-resume-")
    try:
        cmd = [a.replace("{TMP}", tmp) for a in c.backup_command(c.db)]
        proc = subprocess.Popen(cmd, cwd=tmp, env=c.mb_env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)  # fmt: skip
        time.sleep(backup.wall / 2)
        proc.kill()
        proc.wait()
        run = tools.measure([*cmd, "--resume"], tmp, c.args.timeout, c.mb_env)
        if run.code != 0:
            tools.say(f"SKIP resume: {tools.reason(run)}")
            return
        tools.say(f"resume        cpu {run.cpu:.2f} s  wall {run.wall:.2f} s  rss {run.rss:.1f} MiB"
            "  (after SIGKILL at 50% of the backup's wall)")  # fmt: skip
        raw.setdefault("tools", {})["resume"] = {"wall": run.wall, "cpu": run.cpu, "rss": run.rss}
        tools.check("RATIO resume/backup wall", run.wall / backup.wall, 0.60)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
