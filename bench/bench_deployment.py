"""The benchmark's ``deployment`` section: several databases in one archive, and a pipe.

Issue 13's targets:

- an all-databases backup of the main data set split over 3 databases (its collections
  dealt out in turn, the same documents) costs at most 1.05x the client CPU and wall time
  of the backup of the same data in one database, measured in interleaved rounds;
- ``backup --archive - | restore -`` between two server processes takes at most 0.75x
  the wall time of a file backup plus a file restore of the same data (the two sides
  overlap), and each side's peak RSS stays at or under 150 MiB.

The section's helpers (say, check, load) come from bench.py, passed in by ``main``.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from types import SimpleNamespace
from typing import Any

from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient

from mongo_backup.mongo.prefetch import split_batch

PARTS = ("bench_dep_a", "bench_dep_b", "bench_dep_c")
RAW = CodecOptions(document_class=RawBSONDocument)


def split_copy(uri: str, db: str) -> list[str]:
    """Copy ``db``'s collections (with their indexes) over PARTS, in turn; their names."""
    with MongoClient(uri) as client:
        names = sorted(n for n in client[db].list_collection_names() if not n.startswith("system."))
        for index, name in enumerate(names):
            source = client[db].get_collection(name, codec_options=RAW)
            target = client[PARTS[index % len(PARTS)]].get_collection(name, codec_options=RAW)
            target.drop()
            batch: list[RawBSONDocument] = []
            for document in source.find_raw_batches():
                batch.extend(RawBSONDocument(raw) for raw in split_batch(document))
                if len(batch) >= 1000:
                    target.insert_many(batch)
                    batch = []
            if batch:
                target.insert_many(batch)
            for spec in source.list_indexes():
                if spec["name"] != "_id_":
                    target.create_index(list(spec["key"].items()), name=spec["name"])
    return names


def _side(proc: subprocess.Popen[bytes]) -> tuple[int, float, float]:
    """(exit code, CPU seconds, peak RSS MiB) of one finished side of the pipe."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def pipe_once(c: Any, db: str, target_uri: str) -> dict[str, float]:
    """One ``backup --archive - | restore - --drop`` run: wall, and each side's CPU and
    RSS; RuntimeError (the last error line) if a side fails."""
    with tempfile.TemporaryDirectory(prefix="bench-pipe-") as tmp:
        backup_cmd = [*c.mb, "backup", "--uri", c.uri, "--db", db, "--out-dir", tmp,
                      "--archive", "-", "-q"]  # fmt: skip
        restore_cmd = [*c.mb, "restore", "-", "--uri", target_uri, "--drop", "-q"]
        started = time.perf_counter()
        with open(os.path.join(tmp, "err"), "wb") as errors:
            producer = subprocess.Popen(
                backup_cmd, stdout=subprocess.PIPE, stderr=errors, env=c.mb_env
            )
            consumer = subprocess.Popen(
                restore_cmd, stdin=producer.stdout, stderr=errors, env=c.mb_env
            )
            assert producer.stdout is not None
            producer.stdout.close()
            code_b, cpu_b, rss_b = _side(producer)
            code_r, cpu_r, rss_r = _side(consumer)
        wall = time.perf_counter() - started
        if code_b or code_r:
            with open(os.path.join(tmp, "err"), encoding="utf-8", errors="replace") as text:
                lines = text.read().strip().splitlines()
            raise RuntimeError(lines[-1] if lines else f"exit {code_b}/{code_r}")
    return {"wall": wall, "backup_cpu": cpu_b, "restore_cpu": cpu_r,
            "backup_rss": rss_b, "restore_rss": rss_r}  # fmt: skip


def section_deployment(c: Any, tools: SimpleNamespace, second_uri: str) -> None:
    say, check = tools.say, tools.check
    # In a process of its own: the documents it holds would otherwise count in the peak
    # RSS of every command this process starts afterwards (a child's RSS before exec).
    copied = subprocess.run(
        [sys.executable, __file__, c.uri, c.db], check=True, capture_output=True, text=True
    )
    names = copied.stdout.split()
    say(f"data {c.db} split over {', '.join(PARTS)}: {len(names)} collections dealt out in turn")
    one = [*c.mb, "backup", "--uri", c.uri, "--db", c.db, "--out-dir", "{TMP}", "-q"]
    several = [*c.mb, "backup", "--uri", c.uri, "--out-dir", "{TMP}", "-q"]
    several += [arg for part in PARTS for arg in ("--db", part)]
    ones, alls = [], []
    for _ in range(c.args.repeat):  # interleaved: neither one always runs on a warmer server
        ones.append(c.run("deployment", "one_database", one, ours=True, repeat=1)[0])
        alls.append(c.run("deployment", "three_databases", several, ours=True, repeat=1)[0])
    single, split = tools.merged("one_db", ones), tools.merged("three_dbs", alls)
    if single and split:
        check("RATIO three_dbs/one_db cpu", split.cpu / single.cpu, 1.05)
        check("RATIO three_dbs/one_db wall", split.wall / single.wall, 1.05)
    with MongoClient(c.uri) as client:
        for part in PARTS:
            client.drop_database(part)

    # The pipe against a file backup and a file restore of the same data, same servers,
    # in interleaved rounds (this machine drifts: a series of each would compare times of
    # day). Every restore, file or pipe, goes into an empty target (a copy to a new
    # deployment): dropping the last run's collections is not part of what is measured.
    def empty_target() -> None:
        with MongoClient(second_uri) as client:
            client.drop_database(c.db)

    first, archive = c.run("deployment", "file_backup", one, ours=True, keep=True, repeat=1)
    if archive is None:
        return
    restore = [*c.mb, "restore", archive, "--uri", second_uri, "--drop", "-q"]
    backups, restores, runs = [first], [], []
    try:
        for round_ in range(c.args.repeat):
            if round_:
                backups.append(c.run("deployment", "file_backup", one, ours=True, repeat=1)[0])
            restores.append(c.run("deployment", "file_restore", restore, ours=True, repeat=1,
                                  before=empty_target)[0])  # fmt: skip
            empty_target()
            runs.append(pipe_once(c, c.db, second_uri))
    except RuntimeError as error:
        say(f"SKIP deployment pipe: {error}")
        return
    file_backup, file_restore = (
        tools.merged("file_backup", backups),
        tools.merged("file_restore", restores),
    )
    pipe = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    say(f"pipe          wall {pipe['wall']:.2f} s  backup cpu {pipe['backup_cpu']:.2f} s "
        f"rss {pipe['backup_rss']:.1f} MiB  restore cpu {pipe['restore_cpu']:.2f} s "
        f"rss {pipe['restore_rss']:.1f} MiB  (median of {len(runs)})")  # fmt: skip
    if file_backup and file_restore:
        serial = file_backup.wall + file_restore.wall
        check(f"RATIO pipe/(file backup + file restore) wall ({serial:.2f} s)",
              pipe["wall"] / serial, 0.75)  # fmt: skip
    check("RSS pipe backup side MiB", pipe["backup_rss"], 150, "{:.1f}", "{:.0f}")
    check("RSS pipe restore side MiB", pipe["restore_rss"], 150, "{:.1f}", "{:.0f}")
    with MongoClient(second_uri) as client:
        client.drop_database(c.db)


if __name__ == "__main__":  # the copy, run apart (see section_deployment)
    print(" ".join(split_copy(sys.argv[1], sys.argv[2])))
