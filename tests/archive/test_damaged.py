"""Damaged, foreign and hostile input: refused before a single document is written.

Each case damages a small real backup one way (truncation, flipped bits, re-ordered,
missing, extra or duplicate members, foreign tars, random bytes, a malformed line) and
then checks the promise of issue 3: ``restore`` exits 1 with exactly one line on
stderr, no traceback, nothing inserted, quickly; ``verify`` exits 1 and names the
damaged member (and line) where there is one to name.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import CliResult, CliRunner
from damagetools import (
    compress_bytes,
    damaged_copy,
    data_span,
    flipped,
    forged_manifest,
    members_of,
    write_tar,
    write_tar_bytes,
)
from mongo_backup.backup.run import backup
from restoretools import assert_single_error_line, documents_in

COMPRESSIONS = ["none", "gzip", "zstd"]
SUFFIX = {"none": ".tar", "gzip": ".tar.gz", "zstd": ".tar.zst"}
# Far more than any case needs on this machine; a hang shows up as a failure here.
TIME_LIMIT_S = 30.0
# The second data member is damaged where a case needs one: the first one must not
# slip into the database either.
VICTIM = "beta.jsonl"


@pytest.fixture(scope="module")
def archives(
    client: Any, mongo_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Path]]:
    """One small intact backup per compression, built once for the whole module."""
    name = f"dmg_{uuid.uuid4().hex[:8]}"
    db = client[name]
    db.alpha.insert_many([{"_id": i, "s": f"a{i}" * 3} for i in range(150)])
    db.beta.insert_many([{"_id": i, "n": i * 1.5, "t": "β" * (i % 9)} for i in range(100)])
    db.gamma.insert_many([{"_id": f"g{i}"} for i in range(50)])
    db.beta.create_index("n")
    out = tmp_path_factory.mktemp("damaged-src")
    try:
        result = {c: backup(mongo_uri, name, out / c, compress=c).archive for c in COMPRESSIONS}
    finally:
        client.drop_database(name)
    yield {c: Path(str(p)) for c, p in result.items()}


# --- the promise every damaged input must keep --------------------------------------


def refused(
    cli: CliRunner, client: Any, uri: str, source: Path, target_db: str, *extra: str
) -> str:
    """restore exits 1 with one error line, writes nothing, fast; returns the line."""
    started = time.monotonic()
    result = cli("restore", source, "--uri", uri, "--db", target_db, "-q", *extra)
    assert time.monotonic() - started < TIME_LIMIT_S
    assert result.code == 1, (result.code, result.out, result.err)
    line = assert_single_error_line(result)
    if not extra:  # --no-verify may write the members before the damaged one
        assert documents_in(client, target_db) == 0
    return line


def verify_fails(cli: CliRunner, source: Path, *names: str) -> CliResult:
    """verify exits 1 quickly and mentions each of ``names`` (member, line)."""
    started = time.monotonic()
    result = cli("verify", source)
    assert time.monotonic() - started < TIME_LIMIT_S
    assert result.code == 1, (result.out, result.err)
    assert "Traceback" not in result.err
    for name in names:
        assert name in result.out + result.err, (name, result.out, result.err)
    return result


# --- the cases -----------------------------------------------------------------------

TRUNCATION_POINTS = [k / 11 for k in range(1, 11)]


@pytest.mark.parametrize("compress", COMPRESSIONS)
def test_truncated_archive(
    cli: CliRunner,
    client: Any,
    mongo_uri: str,
    archives: dict[str, Path],
    target_db: str,
    tmp_path: Path,
    compress: str,
) -> None:
    archive = archives[compress]
    data = archive.read_bytes()
    # For a plain tar, cut only inside the content: a tar's trailing zero padding
    # carries nothing, so losing part of it loses nothing either.
    end = sum(data_span(archive, "gamma.jsonl")) if compress == "none" else len(data)
    for fraction in TRUNCATION_POINTS:
        cut = int(end * fraction)
        source = damaged_copy(tmp_path, archive, data[:cut], f"cut{cut}")
        refused(cli, client, mongo_uri, source, target_db)
        verify_fails(cli, source)


@pytest.mark.parametrize("compress", ["none", "gzip", "zstd"])
def test_archive_missing_only_its_last_bytes(
    cli: CliRunner,
    client: Any,
    mongo_uri: str,
    archives: dict[str, Path],
    target_db: str,
    tmp_path: Path,
    compress: str,
) -> None:
    archive = archives[compress]
    data = archive.read_bytes()
    end = sum(data_span(archive, "gamma.jsonl")) if compress == "none" else len(data)
    source = damaged_copy(tmp_path, archive, data[: end - 1], "cut-last")
    refused(cli, client, mongo_uri, source, target_db)
    verify_fails(cli, source)


@pytest.mark.parametrize("compress", ["gzip", "zstd"])
def test_bit_flip_in_last_bytes_of_compressed_archive(
    cli: CliRunner,
    client: Any,
    mongo_uri: str,
    archives: dict[str, Path],
    target_db: str,
    tmp_path: Path,
    compress: str,
) -> None:
    archive = archives[compress]
    data = archive.read_bytes()
    for back in (1, 5, 8):  # gzip: the length and CRC-32 of the trailer
        source = damaged_copy(tmp_path, archive, flipped(data, len(data) - back, 2), "tail")
        refused(cli, client, mongo_uri, source, target_db)
        verify_fails(cli, source)


def test_bit_flips_in_plain_tar_data_and_manifest(
    cli: CliRunner,
    client: Any,
    mongo_uri: str,
    archives: dict[str, Path],
    target_db: str,
    tmp_path: Path,
) -> None:
    archive = archives["none"]
    data = archive.read_bytes()
    offset, size = data_span(archive, VICTIM)
    for where in (0, size // 3, size // 2, size - 2):
        for bit in (0, 5):
            source = damaged_copy(tmp_path, archive, flipped(data, offset + where, bit), "flip")
            refused(cli, client, mongo_uri, source, target_db)
            verify_fails(cli, source, VICTIM)
    offset, size = data_span(archive, "manifest.json")
    for where in (0, size // 4, size // 2, size - 3):
        source = damaged_copy(tmp_path, archive, flipped(data, offset + where, 1), "mflip")
        assert "manifest.json" in refused(cli, client, mongo_uri, source, target_db)
        verify_fails(cli, source, "manifest.json")


@pytest.mark.parametrize("compress", ["gzip", "zstd"])
def test_bit_flips_in_compressed_stream(
    cli: CliRunner,
    client: Any,
    mongo_uri: str,
    archives: dict[str, Path],
    target_db: str,
    tmp_path: Path,
    compress: str,
) -> None:
    archive = archives[compress]
    data = archive.read_bytes()
    for fraction in (0.2, 0.4, 0.6, 0.8):
        source = damaged_copy(
            tmp_path, archive, flipped(data, int(len(data) * fraction), 3), "cflip"
        )
        refused(cli, client, mongo_uri, source, target_db)
        verify_fails(cli, source)


@pytest.mark.parametrize("compress", COMPRESSIONS)
def test_bit_flip_in_manifest_of_rebuilt_archive(
    cli: CliRunner,
    client: Any,
    mongo_uri: str,
    archives: dict[str, Path],
    target_db: str,
    tmp_path: Path,
    compress: str,
) -> None:
    members = members_of(archives[compress])
    name, manifest = members[0]
    # A flip inside a value ("count": 150 -> 151), so the JSON stays valid.
    spot = manifest.index(b'"count": 150') + len(b'"count": 15')
    members[0] = (name, flipped(manifest, spot, 0))
    source = write_tar(tmp_path / f"m{SUFFIX[compress]}", members, compress)
    assert "checksum" in refused(cli, client, mongo_uri, source, target_db)
    verify_fails(cli, source, "manifest.json")


Rebuild = Callable[[list[tuple[str, bytes]]], list[tuple[str, bytes]]]

STRUCTURE: list[Any] = [
    pytest.param(lambda m: [m[0], m[2], m[1], *m[3:]], ("alpha.jsonl", VICTIM), id="swapped"),
    pytest.param(lambda m: [m[1], m[0], *m[2:]], ("manifest.json",), id="manifest-not-first"),
    pytest.param(lambda m: [m[0], m[1], *m[3:]], (VICTIM,), id="member-dropped"),
    pytest.param(lambda m: m[:-1], ("gamma.jsonl",), id="last-member-dropped"),
    pytest.param(
        lambda m: [*m, ("extra.jsonl", b'{"_id": 1}\n')], ("extra.jsonl",), id="extra-member-at-end"
    ),
    pytest.param(
        lambda m: [m[0], m[1], ("extra.jsonl", b""), *m[2:]],
        ("extra.jsonl",),
        id="extra-member-inside",
    ),
    pytest.param(lambda m: [m[0], m[1], m[1], *m[2:]], ("alpha.jsonl",), id="duplicate-member"),
    pytest.param(lambda m: [*m, m[1]], ("alpha.jsonl",), id="duplicate-member-at-end"),
    pytest.param(lambda m: [m[0], m[0], *m[1:]], ("manifest.json",), id="duplicate-manifest"),
    pytest.param(lambda m: [m[0]], ("alpha.jsonl",), id="manifest-only"),
]


@pytest.mark.parametrize(("rebuild", "named"), STRUCTURE)
@pytest.mark.parametrize("compress", ["none", "zstd"])
def test_members_out_of_place(
    cli: CliRunner,
    client: Any,
    mongo_uri: str,
    archives: dict[str, Path],
    target_db: str,
    tmp_path: Path,
    compress: str,
    rebuild: Rebuild,
    named: tuple[str, ...],
) -> None:
    members = members_of(archives[compress])
    assert [n for n, _ in members] == ["manifest.json", "alpha.jsonl", VICTIM, "gamma.jsonl"]
    source = write_tar(tmp_path / f"s{SUFFIX[compress]}", rebuild(members), compress)
    line = refused(cli, client, mongo_uri, source, target_db)
    assert any(name in line for name in named), line
    verify_fails(cli, source, named[0])


def test_intact_rebuilt_archive_is_accepted(
    cli: CliRunner,
    client: Any,
    mongo_uri: str,
    archives: dict[str, Path],
    target_db: str,
    tmp_path: Path,
) -> None:
    """The control for the cases above: rebuilding alone damages nothing."""
    source = write_tar(tmp_path / "same.tar.zst", members_of(archives["zstd"]), "zstd")
    assert cli("verify", source).code == 0
    result = cli("restore", source, "--uri", mongo_uri, "--db", target_db, "-q")
    assert result.code == 0, result.err
    assert documents_in(client, target_db) == 300


FOREIGN: list[Any] = [
    pytest.param(
        lambda: write_tar_bytes([("readme.txt", b"hello"), ("x.bin", bytes(300))]), id="foreign-tar"
    ),
    pytest.param(
        lambda: compress_bytes(write_tar_bytes([("a.json", b"{}")]), "zstd"), id="foreign-tar-zst"
    ),
    pytest.param(lambda: compress_bytes(b"plain text, not a tar", "gzip"), id="gzip-of-text"),
    pytest.param(lambda: random.Random(3).randbytes(5000), id="random-bytes"),
    pytest.param(
        lambda: b"\x28\xb5\x2f\xfd" + random.Random(4).randbytes(2000), id="zstd-magic-then-random"
    ),
    pytest.param(
        lambda: b"\x1f\x8b" + random.Random(5).randbytes(2000), id="gzip-magic-then-random"
    ),
    pytest.param(lambda: b"", id="empty-file"),
    pytest.param(lambda: bytes(10240), id="zeros"),
]


@pytest.mark.parametrize("make", FOREIGN)
@pytest.mark.parametrize("suffix", [".tar", ".tar.zst"])
def test_foreign_and_random_input(
    cli: CliRunner,
    client: Any,
    mongo_uri: str,
    target_db: str,
    tmp_path: Path,
    make: Callable[[], bytes],
    suffix: str,
) -> None:
    source = tmp_path / f"input{suffix}"
    source.write_bytes(make())
    refused(cli, client, mongo_uri, source, target_db)
    verify_fails(cli, source)


@pytest.mark.parametrize("compress", COMPRESSIONS)
def test_malformed_line_in_member(
    cli: CliRunner,
    client: Any,
    mongo_uri: str,
    archives: dict[str, Path],
    target_db: str,
    tmp_path: Path,
    compress: str,
) -> None:
    members = members_of(archives[compress])
    lines = members[2][1].split(b"\n")
    lines[6] = b'{"_id": {"$numberInt": "6"}, "n": '  # line 7: cut off mid-document
    members[2] = (VICTIM, b"\n".join(lines))
    source = write_tar(tmp_path / f"bad{SUFFIX[compress]}", members, compress)
    # Checked first: the member's checksum no longer matches the manifest.
    assert VICTIM in refused(cli, client, mongo_uri, source, target_db)
    verify_fails(cli, source, VICTIM, "line 7")
    # Unchecked: the line itself stops the restore, named by member and line.
    line = refused(cli, client, mongo_uri, source, target_db, "--no-verify")
    assert VICTIM in line and "line 7" in line, line
    assert client[target_db].beta.count_documents({}) == 0


def test_damaged_backup_folder(
    cli: CliRunner,
    client: Any,
    mongo_uri: str,
    target_db: str,
    tmp_path: Path,
    archives: dict[str, Path],
) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    for name, data in members_of(archives["none"]):
        (folder / name).write_bytes(data)
    assert cli("verify", folder).code == 0
    victim = folder / VICTIM
    intact = victim.read_bytes()
    victim.write_bytes(flipped(intact, len(intact) // 2, 2))
    refused(cli, client, mongo_uri, folder, target_db)
    verify_fails(cli, folder, VICTIM)
    victim.unlink()
    assert VICTIM in refused(cli, client, mongo_uri, folder, target_db)
    verify_fails(cli, folder, VICTIM)
    (folder / "manifest.json").unlink()
    refused(cli, client, mongo_uri, folder, target_db)
    verify_fails(cli, folder, "manifest.json")


def test_malformed_single_json_file(
    cli: CliRunner, client: Any, mongo_uri: str, target_db: str, tmp_path: Path
) -> None:
    source = tmp_path / "export.json"
    source.write_text('{"_id": 1}\n{"_id": 2}\n{"_id": 3,\n{"_id": 4}\n', encoding="utf-8")
    line = refused(cli, client, mongo_uri, source, target_db, "--collection", "c")
    assert "export.json" in line and "line 3" in line, line
    assert documents_in(client, target_db) == 0


@pytest.mark.parametrize("compress", COMPRESSIONS)
def test_truncated_archive_without_verify_still_fails_cleanly(
    cli: CliRunner,
    client: Any,
    mongo_uri: str,
    archives: dict[str, Path],
    target_db: str,
    tmp_path: Path,
    compress: str,
) -> None:
    """--no-verify skips the checksum pass, not the reader's own checks: no hang, one line."""
    archive = archives[compress]
    data = archive.read_bytes()
    end = sum(data_span(archive, "gamma.jsonl")) if compress == "none" else len(data)
    for fraction in (0.3, 0.6, 0.9):
        client.drop_database(target_db)  # earlier members may have gone in: no dup warnings
        source = damaged_copy(tmp_path, archive, data[: int(end * fraction)], "nv")
        refused(cli, client, mongo_uri, source, target_db, "--no-verify")


def _entry(data: dict[str, Any], name: str) -> dict[str, Any]:
    return next(e for e in data["collections"] if e["name"] == name)


FORGERIES: list[Any] = [
    pytest.param(
        lambda d: _entry(d, "beta").update(file="../beta.jsonl"), "unsafe", id="path-escape"
    ),
    pytest.param(lambda d: _entry(d, "beta").update(count=101), VICTIM, id="wrong-count"),
    pytest.param(lambda d: _entry(d, "beta").update(sha256="0" * 64), VICTIM, id="wrong-sha"),
    pytest.param(lambda d: d.update(format_version=99), "format version", id="future-version"),
    pytest.param(lambda d: d.update(format="other-tool"), "foreign", id="other-format"),
]


@pytest.mark.parametrize(("change", "named"), FORGERIES)
def test_forged_manifest_with_matching_checksum(
    cli: CliRunner,
    client: Any,
    mongo_uri: str,
    archives: dict[str, Path],
    target_db: str,
    tmp_path: Path,
    change: Callable[[dict[str, Any]], None],
    named: str,
) -> None:
    members = members_of(archives["none"])
    members[0] = ("manifest.json", forged_manifest(members[0][1], change))
    source = write_tar(tmp_path / "forged.tar", members, "none")
    assert named in refused(cli, client, mongo_uri, source, target_db)
    verify_fails(cli, source, named)
