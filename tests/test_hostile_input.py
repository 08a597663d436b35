"""Hostile input: archives, folders and lines built to attack the reader.

test_damaged covers damage (cuts, flips, re-ordered, missing, extra and duplicate
members, forged counts and checksums). Here the input is made on purpose: members that
point outside the folder (absolute paths, ``..``, links), special files, manifests whose
checksum matches but whose fields are hostile, and bombs (decompression, tar headers,
over-long lines, nesting). ``restore`` and ``verify`` must refuse each with exit 1 and
one line ``mongo-backup: error: ...`` naming the problem, write nothing outside the
test's folder and nothing into the database, and stay within bounded memory.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

import pytest
import zstandard

from conftest import CliResult, CliRunner
from damagetools import compress_bytes, forged_manifest
from mongo_backup.archive import ZstdFramesReader, open_backup
from mongo_backup.errors import ArchiveError, LineFormatError
from mongo_backup.extjson import MAX_LINE_BYTES, document_from_line, iter_documents, iter_lines
from mongo_backup.manifest import MAX_COLLECTIONS, MAX_MANIFEST_BYTES, CollectionEntry, Manifest
from mongo_backup.manifest import manifest_bytes as to_bytes
from restoretools import assert_single_error_line, documents_in

DATA = b'{"_id": {"$numberInt": "1"}}\n{"_id": {"$numberInt": "2"}}\n'
OUTSIDE = Path(tempfile.gettempdir()) / f"mongo-backup-hostile-{uuid.uuid4().hex}"
# How the CLI reports an exception that is not a MongoBackupError (a bug).
UNEXPECTED = "mongo-backup: error: unexpected "
REG, SYM, LNK = tarfile.REGTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE
Spec = tuple[str, bytes, bytes, str]  # member name, tar type, data, link target


def entry(**change: Any) -> CollectionEntry:
    fields = {
        "name": "c",
        "type": "collection",
        "file": "c.jsonl",
        "count": 2,
        "bytes": len(DATA),
        "sha256": hashlib.sha256(DATA).hexdigest(),
    }
    return CollectionEntry(**(fields | change))


def manifest(*entries: CollectionEntry, **change: Any) -> bytes:
    """A manifest with a matching checksum: any refusal must come from validation."""
    fields = {
        "database": "hostile",
        "tool_version": "0.1.0",
        "json_format": "canonical",
        "pretty": False,
        "compression": "none",
        "started_at": "2026-11-26T00:00:00",
        "finished_at": "2026-11-26T00:00:01",
        "server": {},
        "hosts": [],
        "collections": list(entries) or [entry()],
    }
    return to_bytes(Manifest(**(fields | change)))


M: Spec = ("manifest.json", REG, manifest(), "")
C: Spec = ("c.jsonl", REG, DATA, "")


def hostile_tar(path: Path, specs: list[Spec], compress: str = "none") -> Path:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, data, link in specs:
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.mode = kind, link, 0o600
            info.devmajor, info.devminor = 1, 3  # /dev/null, for the device members
            info.size = len(data) if kind == REG else 0
            tar.addfile(info, io.BytesIO(data) if kind == REG else None)
    path.write_bytes(compress_bytes(buffer.getvalue(), compress))
    return path


def header(name: str, size: int, kind: bytes = REG, fmt: int = tarfile.USTAR_FORMAT) -> bytes:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mode = kind, size, 0o600
    return info.tobuf(format=fmt)


def manifest_member(data: bytes) -> bytes:
    return header("manifest.json", len(data)) + data + b"\0" * (-len(data) % 512)


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp_path/a/b, also the working directory: ``../evil`` would land inside tmp_path."""
    folder = tmp_path / "a" / "b"
    folder.mkdir(parents=True)
    monkeypatch.chdir(folder)
    return folder


def tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.lstat().st_size for p in root.rglob("*")}


def assert_refused(
    cli: CliRunner,
    client: Any,
    uri: str,
    source: Path,
    target_db: str,
    named: str,
    hostile_names: tuple[str, ...] = (),
) -> None:
    """restore and verify: exit 1, one error line naming ``named``, nothing written."""
    sentinel = source.parents[2]  # tmp_path: the input lives in tmp_path/a/b
    before = tree(sentinel)
    for argv in (("restore", source, "--uri", uri, "--db", target_db, "-q"), ("verify", source)):
        result = cli(*argv)
        assert result.code == 1, (argv[0], result.code, result.out, result.err)
        line = assert_single_error_line(result)
        assert UNEXPECTED not in line and named in line, (argv[0], line)
    assert tree(sentinel) == before
    assert not OUTSIDE.exists()
    for name in hostile_names:
        assert not (source.parent / name).exists() and not (sentinel / name).exists()
    assert client[target_db].list_collection_names() == []


# --- members that leave the folder or are not regular files --------------------------

EVIL = f"{OUTSIDE}/evil.jsonl"
MEMBERS: list[Any] = [
    pytest.param([M, (EVIL, REG, DATA, "")], EVIL, id="absolute-path"),
    pytest.param([M, C, (EVIL, REG, DATA, "")], EVIL, id="absolute-path-extra"),
    pytest.param([M, ("../evil.jsonl", REG, DATA, "")], "../evil.jsonl", id="dotdot"),
    pytest.param([M, ("x/../../../evil.jsonl", REG, DATA, "")], "evil.jsonl", id="dotdot-deep"),
    pytest.param([M, ("c.jsonl", SYM, b"", "/etc/passwd")], "not a regular file", id="symlink"),
    pytest.param([M, C, ("evil", SYM, b"", str(OUTSIDE))], "evil", id="symlink-extra"),
    pytest.param([M, ("c.jsonl", LNK, b"", "manifest.json")], "not a regular file", id="hardlink"),
    pytest.param([M, ("c.jsonl", tarfile.CHRTYPE, b"", "")], "c.jsonl", id="char-device"),
    pytest.param([M, ("c.jsonl", tarfile.BLKTYPE, b"", "")], "c.jsonl", id="block-device"),
    pytest.param([M, ("c.jsonl", tarfile.FIFOTYPE, b"", "")], "c.jsonl", id="fifo"),
    pytest.param([M, ("c.jsonl", tarfile.DIRTYPE, b"", "")], "c.jsonl", id="directory"),
    pytest.param(
        [("manifest.json", SYM, b"", "/etc/passwd"), C], "manifest.json", id="manifest-symlink"
    ),
    pytest.param(
        [("manifest.json", LNK, b"", "c.jsonl"), C], "manifest.json", id="manifest-hardlink"
    ),
]  # duplicate member names: test_damaged (duplicate-member, duplicate-manifest)


def test_intact_hand_built_archive_is_accepted(
    cli: CliRunner, client: Any, mongo_uri: str, target_db: str, work: Path
) -> None:
    """The control: the builder itself makes archives the tool accepts."""
    source = hostile_tar(work / "ok.tar.zst", [M, C], "zstd")
    assert cli("verify", source).code == 0
    assert cli("restore", source, "--uri", mongo_uri, "--db", target_db, "-q").code == 0
    assert documents_in(client, target_db) == 2


@pytest.mark.parametrize(("specs", "named"), MEMBERS)
@pytest.mark.parametrize("compress", ["none", "zstd"])
def test_hostile_member(
    cli: CliRunner,
    client: Any,
    mongo_uri: str,
    target_db: str,
    work: Path,
    specs: list[Spec],
    named: str,
    compress: str,
) -> None:
    source = hostile_tar(work / f"h.tar{'.zst' if compress == 'zstd' else ''}", specs, compress)
    names = tuple(name for name, *_ in specs if name not in ("manifest.json", "c.jsonl"))
    assert_refused(cli, client, mongo_uri, source, target_db, named, names)


def test_sparse_member_is_refused_before_it_is_read(work: Path) -> None:
    """A GNU sparse member is 'regular' to tarfile and costs nothing to store: 2**50
    bytes of zeros in a 3 KiB archive. The tool never writes one; reading it to the end
    (as verify does) would take days, so it must be refused, not read."""
    sparse = bytearray(header("c.jsonl", 0, fmt=tarfile.GNU_FORMAT))
    sparse[156:157], sparse[483:495] = tarfile.GNUTYPE_SPARSE, tarfile.itn(2**50, 12, 1)
    sparse[148:156] = b" " * 8
    sparse[148:156] = b"%06o\0 " % sum(sparse)
    data = manifest(entry(bytes=2**50, count=1, sha256=None))
    source = work / "sparse.tar"
    source.write_bytes(manifest_member(data) + bytes(sparse) + bytes(1024))
    with pytest.raises(ArchiveError, match=r"c\.jsonl"), open_backup(source) as reader:
        for _entry, stream in reader.members():
            stream.read(1 << 20)  # refused before this, or one bounded read and out


# --- folders ---------------------------------------------------------------------------


def backup_folder(work: Path, manifest_data: bytes | None = None) -> Path:
    folder = work / "backup"
    folder.mkdir()
    (folder / "manifest.json").write_bytes(manifest_data or manifest())
    return folder


@pytest.mark.parametrize("member", ["c.jsonl", "c.jsonl.zst"])
def test_folder_member_symlink_to_outside_is_not_followed(
    cli: CliRunner, client: Any, mongo_uri: str, target_db: str, work: Path, member: str
) -> None:
    folder = backup_folder(work)
    outside = work.parent / member  # intact data: following the link would succeed
    outside.write_bytes(compress_bytes(DATA, "zstd" if member.endswith(".zst") else "none"))
    (folder / member).symlink_to(outside)
    assert_refused(cli, client, mongo_uri, folder, target_db, "c.jsonl")


@pytest.mark.parametrize("file", ["../outside.jsonl", "../../outside.jsonl", f"{OUTSIDE}.jsonl"])
def test_folder_manifest_naming_a_file_outside(
    cli: CliRunner, client: Any, mongo_uri: str, target_db: str, work: Path, file: str
) -> None:
    folder = backup_folder(work, manifest(entry(file=file)))
    (folder.parent / "outside.jsonl").write_bytes(DATA)
    assert_refused(cli, client, mongo_uri, folder, target_db, "unsafe file name")


def test_folder_manifest_symlink_to_outside_is_not_followed(
    cli: CliRunner, client: Any, mongo_uri: str, target_db: str, work: Path
) -> None:
    """Members behind a symlink are refused; the manifest, the anchor of every checksum,
    must not be taken from outside the folder either."""
    folder = backup_folder(work)
    (folder / "c.jsonl").write_bytes(DATA)
    outside = work.parent / "manifest.json"
    (folder / "manifest.json").rename(outside)
    (folder / "manifest.json").symlink_to(outside)
    assert_refused(cli, client, mongo_uri, folder, target_db, "manifest.json")


def test_folder_member_fifo_does_not_hang(
    cli: CliRunner, client: Any, mongo_uri: str, target_db: str, work: Path
) -> None:
    folder = backup_folder(work)
    os.mkfifo(folder / "c.jsonl")  # opening it for reading would block forever
    assert_refused(cli, client, mongo_uri, folder, target_db, "c.jsonl")


def test_folder_manifest_over_the_size_bound(
    cli: CliRunner, client: Any, mongo_uri: str, target_db: str, work: Path
) -> None:
    folder = backup_folder(work)
    os.truncate(folder / "manifest.json", MAX_MANIFEST_BYTES + 1)  # sparse: costs no disk
    assert_refused(cli, client, mongo_uri, folder, target_db, "manifest.json")


# --- manifests with hostile fields (checksum matching) --------------------------------


def deep(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def deep_text(entry_change: dict[str, Any], depth: int) -> bytes:
    """A manifest whose placeholder is replaced by ``depth`` levels (no checksum can be
    computed for JSON this deep: it must be refused as JSON)."""
    text = manifest(entry(**entry_change))
    return text.replace(b'"DEEP"', b'{"a":' * depth + b"1" + b"}" * depth)


def deep_manifest(depth: int) -> bytes:
    """Options nested ``depth`` levels: below json's limit, above any server's."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20 * depth)
    try:
        return manifest(entry(options={"validator": deep(depth)}))
    finally:
        sys.setrecursionlimit(limit)


FIELDS: list[Any] = [
    *(
        pytest.param(lambda c=c: manifest(entry(**c)), "impossible counts", id=i)
        for i, c in [
            ("huge-count", {"count": 10**18}),
            ("huge-bytes", {"bytes": 10**18}),
            ("negative-count", {"count": -1}),
            ("negative-bytes", {"bytes": -2}),
        ]
    ),
    *(
        pytest.param(lambda f=f: manifest(entry(file=f)), "unsafe file name", id=f"file-{i}")
        for i, f in [
            ("absolute", EVIL),
            ("slash", "a/b.jsonl"),
            ("nul", "c\0.jsonl"),
            ("dotdot", ".."),
            ("backslash", "..\\evil.jsonl"),
            ("empty", ""),
        ]
    ),
    pytest.param(lambda: manifest(entry(name="")), "bad name", id="empty-name"),
    pytest.param(lambda: manifest(entry(name="c\0evil")), "manifest.json", id="nul-in-name"),
    pytest.param(
        lambda: forged_manifest(
            manifest(),
            lambda d: d["collections"].extend(
                dict(d["collections"][0], name=f"v{i}", file=None, type="view")
                for i in range(MAX_COLLECTIONS)
            ),
        ),
        "too many collections",
        id="too-many-collections",
    ),
    pytest.param(
        lambda: deep_text({"options": {"validator": "DEEP"}}, 100_000),
        "not valid JSON",
        id="deep-options",
    ),
    pytest.param(
        lambda: deep_text(
            {"indexes": [{"key": {"a": 1}, "name": "a_1", "partialFilterExpression": "DEEP"}]},
            100_000,
        ),
        "not valid JSON",
        id="deep-indexes",
    ),
    pytest.param(lambda: deep_manifest(600), "manifest.json", id="options-600-deep"),
]


@pytest.mark.parametrize(("make", "named"), FIELDS)
def test_hostile_manifest_field(
    cli: CliRunner, client: Any, mongo_uri: str, target_db: str, work: Path, make: Any, named: str
) -> None:
    source = hostile_tar(work / "m.tar", [("manifest.json", REG, make(), ""), C])
    assert_refused(cli, client, mongo_uri, source, target_db, named)


@pytest.mark.parametrize("compress", ["none", "zstd"])
def test_manifest_over_the_size_bound_in_tar_header(
    cli: CliRunner, client: Any, mongo_uri: str, target_db: str, work: Path, compress: str
) -> None:
    body = header("manifest.json", MAX_MANIFEST_BYTES + 1) + b"{" * 512 + bytes(1024)
    source = work / f"big.tar{'.zst' if compress == 'zstd' else ''}"
    source.write_bytes(compress_bytes(body, compress))
    assert_refused(cli, client, mongo_uri, source, target_db, "manifest.json")


def test_escape_line_carrying_invalid_bson(
    cli: CliRunner, client: Any, mongo_uri: str, target_db: str, work: Path
) -> None:
    """An escape line must carry a real BSON document, not bytes shaped like one."""
    payload = b"\x0d\x00\x00\x00\x42_id\x00\x01\x02\x00\x00"  # element type 0x42: none
    line = json.dumps(
        {
            "$mongoBackupBSON": {
                "$binary": {"base64": base64.b64encode(payload).decode(), "subType": "00"}
            }
        }
    )
    data = line.encode() + b"\n"
    specs = [
        (
            "manifest.json",
            REG,
            manifest(entry(count=1, bytes=len(data), sha256=hashlib.sha256(data).hexdigest())),
            "",
        ),
        ("c.jsonl", REG, data, ""),
    ]
    assert_refused(cli, client, mongo_uri, hostile_tar(work / "e.tar", specs), target_db, "c.jsonl")


@pytest.mark.parametrize("database", ["../evil", "a\0b", "a/b"])
def test_hostile_database_name_without_db_flag(
    cli: CliRunner, mongo_uri: str, work: Path, database: str
) -> None:
    source = hostile_tar(
        work / "d.tar", [("manifest.json", REG, manifest(database=database), ""), C]
    )
    result = cli("restore", source, "--uri", mongo_uri, "-q")
    assert result.code in (1, 2), result
    assert UNEXPECTED not in assert_single_error_line(result)


def test_long_chain_of_views_does_not_crash_restore(
    cli: CliRunner, mongo_uri: str, target_db: str, work: Path
) -> None:
    views = [
        entry(
            name=f"v{i}",
            type="view",
            file=None,
            count=0,
            bytes=0,
            sha256=None,
            options={"viewOn": f"v{i + 1}", "pipeline": []},
        )
        for i in range(1500)
    ]
    source = hostile_tar(work / "v.tar", [("manifest.json", REG, manifest(entry(), *views), ""), C])
    result = cli("restore", source, "--uri", mongo_uri, "--db", target_db, "-q")
    assert UNEXPECTED not in result.err and "Traceback" not in result.err, result


# --- bombs -----------------------------------------------------------------------------

AS_LIMIT = 1536 << 20
_LIMITED = (
    "import resource, sys; resource.setrlimit(resource.RLIMIT_AS, ({0}, {0})); "
    "from mongo_backup.cli.main import main; sys.argv[0] = 'mongo-backup'; main()"
)


def limited_cli(*argv: str | Path) -> CliResult:
    """The CLI in a child process whose address space is capped at 1.5 GiB."""
    done = subprocess.run(
        [sys.executable, "-c", _LIMITED.format(AS_LIMIT), *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return CliResult(done.returncode, done.stdout, done.stderr)


FRAME = 16 << 20


def zstd_bomb(path: Path, size: int, byte: bytes) -> Path:
    """A .tar.zst whose member is ``size`` bytes of ``byte``: one tiny frame, repeated."""
    compressor = zstandard.ZstdCompressor()
    frame = compressor.compress(byte * FRAME)
    head = manifest_member(manifest(entry(bytes=size, count=1, sha256=None)))
    with open(path, "wb") as out:
        out.write(compressor.compress(head + header("c.jsonl", size)))
        for _ in range(size // FRAME):
            out.write(frame)
        out.write(compressor.compress(bytes(1024)))
    return path


@pytest.mark.parametrize("byte", [b"{", b"\0"], ids=["brace", "zeros"])
def test_zstd_bomb_fails_cleanly_in_bounded_memory(
    client: Any, mongo_uri: str, target_db: str, tmp_path: Path, byte: bytes
) -> None:
    source = zstd_bomb(tmp_path / "bomb.tar.zst", 2 << 30, byte)  # 2 GiB in ~70 KB
    assert source.stat().st_size < 200_000
    result = limited_cli("verify", source)
    assert result.code == 1 and "longer than" in result.out, result
    assert "error" not in result.err, result
    result = limited_cli("restore", source, "--uri", mongo_uri, "--db", target_db, "-q")
    assert result.code == 1, result
    assert "longer than" in assert_single_error_line(result)
    assert client[target_db].list_collection_names() == []


def test_zstd_reader_memory_does_not_follow_the_compression_ratio() -> None:
    frame = zstandard.ZstdCompressor().compress(b"{" * FRAME)
    reader = ZstdFramesReader(io.BytesIO(frame * 32))  # 512 MiB in 17 KB
    tracemalloc.start()
    try:
        for _ in range(8):
            assert len(reader.read(1 << 20)) == 1 << 20
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < MAX_LINE_BYTES, f"{peak >> 20} MiB held to hand out 8 MiB"


class Braces:
    """A stream of ``size`` bytes of ``{`` and no newline, made as it is read."""

    def __init__(self, size: int) -> None:
        self.left = size

    def read(self, size: int = -1) -> bytes:
        size = min(self.left, size if size > 0 else 1 << 20)
        self.left -= size
        return b"{" * size


def test_line_reader_memory_is_bounded_by_the_line_limit() -> None:
    tracemalloc.start()
    try:
        with pytest.raises(LineFormatError, match="longer than"):
            for _ in iter_lines(Braces(200 << 20), "bomb.jsonl"):  # type: ignore[arg-type]
                pass
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * MAX_LINE_BYTES, f"{peak >> 20} MiB"


@pytest.mark.parametrize("kind", [tarfile.XHDTYPE, tarfile.GNUTYPE_LONGNAME], ids=["pax", "gnu"])
def test_tar_header_bomb_fails_cleanly_in_bounded_memory(tmp_path: Path, kind: bytes) -> None:
    """A 1 GiB extended header (PAX record or GNU long name) in a 1 MB .tar.gz."""
    chunk = gzip.compress(b"9" * FRAME, compresslevel=9)
    source = tmp_path / "header-bomb.tar.gz"
    with open(source, "wb") as out:
        out.write(gzip.compress(header("././@LongLink", 1 << 30, kind, tarfile.GNU_FORMAT)))
        for _ in range((1 << 30) // FRAME):
            out.write(chunk)  # gzip members may follow one another
        out.write(gzip.compress(bytes(1024)))
    result = limited_cli("verify", source)
    assert result.code == 1, result
    assert UNEXPECTED not in assert_single_error_line(result)


NESTING = [
    pytest.param(b'{"a":' * 100_000 + b"1" + b"}" * 100_000, id="objects"),
    pytest.param(b'{"a":' + b"[" * 100_000 + b"1" + b"]" * 100_000 + b"}", id="arrays"),
    pytest.param(b'{"a":1} {"b":' + b"[" * 100_000, id="after-a-document"),
    pytest.param(b'{\n"a":' + b'{"a":' * 100_000 + b"1" + b"}" * 100_000 + b"\n}", id="pretty"),
]


@pytest.mark.parametrize("line", NESTING)
def test_nesting_bomb_is_a_line_format_error(line: bytes) -> None:
    with pytest.raises(LineFormatError):
        document_from_line(line, "bomb.jsonl", 1)
    with pytest.raises(LineFormatError, match=r"bomb\.jsonl, line 2"):
        for _ in iter_documents(
            iter_lines(io.BytesIO(DATA[:29] + line), "bomb.jsonl"), "bomb.jsonl"
        ):
            pass


@pytest.mark.parametrize("line", NESTING)
def test_nesting_bomb_in_single_file_restore(
    cli: CliRunner, client: Any, mongo_uri: str, target_db: str, work: Path, line: bytes
) -> None:
    source = work / "export.jsonl"
    source.write_bytes(DATA[:29] + line + b"\n" + DATA[29:])
    result = cli("restore", source, "--uri", mongo_uri, "--db", target_db, "--collection", "c")
    assert result.code == 1, result
    error = assert_single_error_line(result)
    assert "export.jsonl, line 2" in error and UNEXPECTED not in error, error
    assert client[target_db].list_collection_names() == []
