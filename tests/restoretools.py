"""Helpers shared by the restore, round-trip and damaged-archive tests.

They drive the CLI the way a user would (backup, restore, verify) and read the
databases back as raw bytes, so a round trip is judged on exactly what the server
holds, never on decoded Python values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bsontools import raw_docs_by_id
from conftest import CliResult, CliRunner

ERROR_PREFIX = "mongo-backup: error:"


def backup_archive(cli: CliRunner, uri: str, db: str, out: Path, *extra: str) -> Path:
    """A backup that must succeed; returns the archive path it printed."""
    result = cli("backup", "--uri", uri, "--db", db, "--out-dir", out, "-q", *extra)
    assert result.code == 0, result.err
    return Path(result.out.strip())


def restore_cli(cli: CliRunner, source: Path | str, uri: str, *extra: str) -> CliResult:
    return cli("restore", source, "--uri", uri, "-q", *extra)


def user_collections(client: Any, db: str) -> list[str]:
    return sorted(n for n in client[db].list_collection_names() if not n.startswith("system."))


def documents_in(client: Any, db: str) -> int:
    """Documents in every non-view collection of ``db`` (0 if it does not exist)."""
    database = client[db]
    total = 0
    for info in database.list_collections():
        if info.get("type", "collection") != "view":
            total += database[info["name"]].count_documents({})
    return total


def assert_same_bytes(client: Any, source_db: str, target_db: str, coll: str) -> int:
    """Every document of ``coll`` is byte-identical in both databases; returns the count."""
    expected = raw_docs_by_id(client, source_db, coll)
    actual = raw_docs_by_id(client, target_db, coll)
    assert sorted(actual) == sorted(expected), f"{coll}: different _id sets"
    different = [key for key, raw in expected.items() if actual[key] != raw]
    assert not different, f"{coll}: {len(different)} documents differ, e.g. {different[:3]}"
    return len(expected)


def collection_options(client: Any, db: str) -> dict[str, Any]:
    """{name: options} as listCollections reports them (uuid lives in 'info', not here)."""
    return {info["name"]: info.get("options", {}) for info in client[db].list_collections()}


def index_specs(client: Any, db: str, coll: str) -> dict[str, dict[str, Any]]:
    """{index name: spec without ns/v}: what a restore must reproduce."""
    return {
        spec["name"]: {k: v for k, v in spec.items() if k not in ("ns", "v")}
        for spec in (dict(ix) for ix in client[db][coll].list_indexes())
    }


def assert_single_error_line(result: CliResult) -> str:
    """Exactly one line on stderr, the CLI's error line, and no traceback."""
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith(ERROR_PREFIX), result.err
    assert "Traceback" not in result.err
    return lines[0]
