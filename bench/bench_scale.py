"""The benchmark's ``scale`` section: costs that stay flat as deployments grow (issue 15).

Each part runs on a SecantusDB of its own (started here), so that "every database" means
the part's data alone:

(a) many namespaces: 2,000 collections of 10 documents in one database, and 200 databases
    of 5 collections of 10 documents (one all-databases archive); each against the same
    documents in ONE collection (its baseline), so that the difference is what the
    collections cost: ``per collection = (cpu(many) - cpu(one)) / (collections - 1)``,
    target <= 5 ms of client CPU for backup and restore; verify and list are printed.
(b) one collection of 2,000,000 small documents, against 100,000 of the same shape: the
    client CPU per document, and the peak RSS within 15% of the smaller one's.
(c) 1,000 documents of 15 MiB, 100 a collection (``--scale-big-docs`` sets the count; 0
    skips): peak RSS.

Peak RSS <= 150 MiB everywhere. The section's helpers (say, check, server: the
EmbeddedServer class) come from bench.py, passed in by ``main``.
"""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any

from pymongo import MongoClient

DOCS_PER_COLLECTION = 10
RSS_TARGET = 150.0
BIG_PER_COLLECTION = 100  # 15 MiB documents a collection in part (c): see big_documents


def _fill(uri: str, layout: list[tuple[str, str, int]], pad: int = 32) -> None:
    """Insert ``count`` small documents into each (db, collection)."""
    with MongoClient(uri) as client:
        for db, name, count in layout:
            collection = client[db][name]
            for start in range(0, count, 10_000):
                stop = min(count, start + 10_000)
                collection.insert_many(
                    [{"_id": i, "v": i, "p": "x" * pad} for i in range(start, stop)]
                )


class Part:
    """One part's server and the commands measured on it."""

    def __init__(self, c: Any, tools: SimpleNamespace, label: str) -> None:
        self.c, self.tools, self.label = c, tools, label
        self.server = tools.server().start()
        self.target = tools.server().start()  # restores go to a server of their own

    def close(self) -> None:
        self.server.stop()
        self.target.stop()

    def run(self, tool: str, argv: list[str], keep: bool = False) -> tuple[Any, str | None]:
        # One run each: the data sets are big, and the figures are CPU differences.
        return self.c.run("scale", f"{self.label}_{tool}", [*self.c.mb, *argv], ours=True,
                          keep=keep, repeat=1)  # fmt: skip

    def backup(self, tool: str, *selection: str) -> tuple[Any, str | None]:
        argv = ["backup", "--uri", self.server.uri, "--out-dir", "{TMP}", "-q", *selection]
        return self.run(tool, argv, keep=True)

    def restore(self, tool: str, archive: str) -> Any:
        argv = ["restore", archive, "--uri", self.target.uri, "--drop", "-q"]
        return self.run(tool, argv)[0]


def _per_collection(check: Any, what: str, many: Any, one: Any, collections: int) -> None:
    if many is None or one is None:
        return
    cost = (many.cpu - one.cpu) / (collections - 1) * 1000
    check(f"COST per collection, {what} (ms client CPU; {collections} vs 1)", cost, 5.0,
          "{:.2f}", "{:g}")  # fmt: skip


def many_namespaces(c: Any, tools: SimpleNamespace, databases: int, collections: int) -> None:
    """``databases`` x ``collections`` collections of 10 documents vs one collection."""
    label = f"{databases}x{collections}"
    total = databases * collections
    part = Part(c, tools, label)
    try:
        layout = [(f"db{d:03d}", f"c{k:04d}", DOCS_PER_COLLECTION)
                  for d in range(databases) for k in range(collections)]  # fmt: skip
        _fill(part.server.uri, layout)
        _fill(part.server.uri, [("flat", "one", total * DOCS_PER_COLLECTION)])
        tools.say(f"data {label}: {total} collections of {DOCS_PER_COLLECTION} documents in "
                  f"{databases} database(s); baseline: the same {total * 10} in one")  # fmt: skip
        selection = ["--ns-exclude", "flat.*"] if databases > 1 else ["--db", "db000"]
        many, archive = part.backup("backup", *selection)
        one, one_archive = part.backup("backup_one", "--db", "flat")
        _per_collection(tools.check, "backup", many, one, total)
        if archive and one_archive:
            restore_many = part.restore("restore", archive)
            restore_one = part.restore("restore_one", one_archive)
            _per_collection(tools.check, "restore", restore_many, restore_one, total)
            verify, _ = part.run("verify", ["verify", archive, "-q"])
            part.run("list", ["list", os.path.dirname(archive)])
            for stats, what in ((many, "backup"), (restore_many, "restore"), (verify, "verify")):
                if stats is not None:
                    tools.check(f"RSS {label} {what} MiB", stats.rss, RSS_TARGET, "{:.1f}", "{:g}")
    finally:
        part.close()


def many_documents(c: Any, tools: SimpleNamespace, small: int, large: int) -> None:
    """One collection of ``large`` small documents against ``small`` of the same shape."""
    part = Part(c, tools, "docs")
    try:
        _fill(part.server.uri, [("small", "docs", small), ("large", "docs", large)])
        tools.say(f"data docs: one collection of {large} documents, and of {small}")
        little, _ = part.backup("backup_small", "--db", "small")
        big, _ = part.backup("backup_large", "--db", "large")
        if little and big:
            tools.say(f"COST per document, backup: {big.cpu / large * 1e6:.2f} us client CPU at "
                      f"{large}, {little.cpu / small * 1e6:.2f} us at {small}")  # fmt: skip
            tools.check(f"RATIO RSS {large}/{small} documents", big.rss / little.rss, 1.15)
            tools.check(f"RSS docs {large} backup MiB", big.rss, RSS_TARGET, "{:.1f}", "{:g}")
    finally:
        part.close()


def big_documents(c: Any, tools: SimpleNamespace, count: int) -> None:
    """``count`` documents of 15 MiB: memory must not grow with the documents' size.

    In collections of :data:`BIG_PER_COLLECTION`: SecantusDB holds the whole answer to a
    ``find`` (and a ``$sample``'s input) in memory, and one collection of 15 GiB had the
    kernel kill the server on this 23 GiB machine. Each document still passes through the
    backup, the restore and the verify on its own, whatever collection holds it."""
    part = Part(c, tools, "big")
    try:
        with MongoClient(part.server.uri) as client:
            blob = os.urandom(15 * 1024 * 1024 // 2).hex()[: 15 * 1024 * 1024 - 64]
            for i in range(count):
                client.big[f"docs{i // BIG_PER_COLLECTION}"].insert_one({"_id": i, "blob": blob})
        collections = -(-count // BIG_PER_COLLECTION)
        tools.say(f"data big: {count} documents of 15 MiB in {collections} collection(s)")
        backup, archive = part.backup("backup", "--db", "big")
        # The source's store goes before the restore: SecantusDB keeps every document
        # twice (its collection and the oplog), and 15 GiB twice on each of two servers,
        # plus the archive, is more than this machine's disk holds.
        part.server.stop()
        restore = part.restore("restore", archive) if archive else None
        verify = part.run("verify", ["verify", archive])[0] if archive else None
        for stats, what in ((backup, "backup"), (restore, "restore"), (verify, "verify")):
            if stats is not None:
                tools.check(f"RSS big {what} MiB", stats.rss, RSS_TARGET, "{:.1f}", "{:g}")
    finally:
        part.close()


def section_scale(c: Any, tools: SimpleNamespace) -> None:
    parts = c.args.scale_parts
    if "a" in parts:
        many_namespaces(c, tools, 1, 2000)
        many_namespaces(c, tools, 200, 5)
    if "b" in parts:
        many_documents(c, tools, 100_000, c.args.scale_docs)
    if "c" in parts and c.args.scale_big_docs:
        big_documents(c, tools, c.args.scale_big_docs)
