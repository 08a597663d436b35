"""Hostile input, made on purpose (test_damaged covers damage): members that leave the
folder (absolute paths, ``..``, links), special files, manifests whose checksum matches
but whose fields are hostile, and bombs (decompression, tar headers, long lines, nesting).
``restore`` and ``verify`` must refuse each with exit 1 and one line naming the problem,
write nothing outside the test's folder and nothing into the database, in bounded memory.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zstandard

from conftest import CliResult, CliRunner
from damagetools import compress_bytes, forged_manifest
from mongo_backup.archive.extjson import document_from_line
from mongo_backup.archive.lines import MAX_LINE_BYTES, iter_documents, iter_lines
from mongo_backup.archive.manifest import (
    MAX_COLLECTIONS,
    MAX_MANIFEST_BYTES,
    CollectionEntry,
    Manifest,
)
from mongo_backup.archive.manifest import manifest_bytes as to_bytes
from mongo_backup.archive.reader import ZstdFramesReader, open_backup
from mongo_backup.errors import ArchiveError, LineFormatError
from restoretools import assert_single_error_line, documents_in

DATA = b'{"_id": {"$numberInt": "1"}}\n{"_id": {"$numberInt": "2"}}\n'
LINE1 = DATA[: DATA.index(b"\n") + 1]
OUTSIDE = Path(tempfile.gettempdir()) / f"mongo-backup-hostile-{uuid.uuid4().hex}"
EVIL = f"{OUTSIDE}/evil.jsonl"
# How the CLI reports an exception that is not a MongoBackupError (a bug).
UNEXPECTED = "mongo-backup: error: unexpected "
REG, SYM, LNK = tarfile.REGTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE
Spec = tuple[str, bytes, bytes, str]  # member name, tar type, data, link target


def entry(**change: Any) -> CollectionEntry:
    sha = hashlib.sha256(DATA).hexdigest()
    base = dict(name="c", type="collection", file="c.jsonl", count=2, bytes=len(DATA), sha256=sha)
    return CollectionEntry(**(base | change))


def manifest(*entries: CollectionEntry, **change: Any) -> bytes:
    """A manifest whose checksum matches: any refusal must come from validation."""
    base = Manifest("hostile", "0.1.0", "canonical", False, "none", "t0", "t1", {}, [])
    return to_bytes(dataclasses.replace(base, collections=list(entries) or [entry()], **change))


M: Spec = ("manifest.json", REG, manifest(), "")
C: Spec = ("c.jsonl", REG, DATA, "")


def hostile_tar(path: Path, specs: list[Spec], compress: str = "none") -> Path:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, data, link in specs:
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.devmajor, info.devminor = kind, link, 1, 3
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


def tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.lstat().st_size for p in root.rglob("*")}


@dataclasses.dataclass
class Target:
    cli: CliRunner
    client: Any
    uri: str
    db: str
    work: Path  # tmp_path/a/b and the working directory: ../evil would land in tmp_path

    def refused(self, source: Path, named: str, hostile: tuple[str, ...] = ()) -> None:
        """restore and verify: exit 1, one error line naming ``named``, nothing written."""
        before = tree(self.work.parents[1])
        restore = self.cli("restore", source, "--uri", self.uri, "--db", self.db, "-q")
        for result in (restore, self.cli("verify", source)):
            assert result.code == 1, result
            if not result.err and "FAILED" in result.out:
                # verify reports a damaged line in its table on stdout, not as an error
                assert named in result.out and "Traceback" not in result.out, result
                continue
            line = assert_single_error_line(result)
            assert not line.startswith(UNEXPECTED) and named in line, line
        assert tree(self.work.parents[1]) == before and not OUTSIDE.exists()
        assert not any((self.work / name).exists() for name in hostile)
        assert self.client[self.db].list_collection_names() == []


@pytest.fixture
def target(
    cli: CliRunner, client: Any, mongo_uri: str, target_db: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Target:  # fmt: skip
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    return Target(cli, client, mongo_uri, target_db, work)


# --- members that leave the folder or are not regular files --------------------------

MEMBERS: list[Any] = [
    pytest.param([M, (EVIL, REG, DATA, "")], EVIL, id="absolute-path"),
    pytest.param([M, C, (EVIL, REG, DATA, "")], EVIL, id="absolute-path-extra"),
    pytest.param([M, ("../evil.jsonl", REG, DATA, "")], "../evil.jsonl", id="dotdot"),
    pytest.param([M, ("x/../../../evil.jsonl", REG, DATA, "")], "evil.jsonl", id="dotdot-deep"),
    pytest.param([M, ("c.jsonl", SYM, b"", "/etc/passwd")], "not a regular file", id="symlink"),
    pytest.param([M, C, ("evil", SYM, b"", str(OUTSIDE))], "evil", id="symlink-extra"),
    pytest.param([M, ("c.jsonl", LNK, b"", "manifest.json")], "not a regular", id="hardlink"),
    pytest.param([M, ("c.jsonl", tarfile.CHRTYPE, b"", "")], "c.jsonl", id="char-device"),
    pytest.param([M, ("c.jsonl", tarfile.BLKTYPE, b"", "")], "c.jsonl", id="block-device"),
    pytest.param([M, ("c.jsonl", tarfile.FIFOTYPE, b"", "")], "c.jsonl", id="fifo"),
    pytest.param([M, ("c.jsonl", tarfile.DIRTYPE, b"", "")], "c.jsonl", id="directory"),
    pytest.param([("manifest.json", SYM, b"", "/etc/passwd"), C], "manifest.json", id="m-sym"),
    pytest.param([("manifest.json", LNK, b"", "c.jsonl"), C], "manifest.json", id="m-hardlink"),
]  # Duplicate member names: test_damaged (duplicate-member, duplicate-manifest).


def test_intact_hand_built_archive_is_accepted(target: Target) -> None:
    """The control: the builder itself makes archives the tool accepts."""
    source = hostile_tar(target.work / "ok.tar.zst", [M, C], "zstd")
    assert target.cli("verify", source).code == 0
    assert target.cli("restore", source, "--uri", target.uri, "--db", target.db).code == 0
    assert documents_in(target.client, target.db) == 2


@pytest.mark.parametrize(("specs", "named"), MEMBERS)
@pytest.mark.parametrize("suffix", [".tar", ".tar.zst"])
def test_hostile_member(target: Target, specs: list[Spec], named: str, suffix: str) -> None:
    source = hostile_tar(target.work / f"h{suffix}", specs, "zstd" if "zst" in suffix else "none")
    hostile = tuple(name for name, *_ in specs if name not in ("manifest.json", "c.jsonl"))
    target.refused(source, named, hostile)


def test_sparse_member_is_refused_before_it_is_read(tmp_path: Path) -> None:
    """A GNU sparse member is 'regular' to tarfile: 2**50 bytes of zeros in 3 KiB. The tool
    never writes one; reading it to the end, as verify does, would take days."""
    sparse = bytearray(header("c.jsonl", 0, fmt=tarfile.GNU_FORMAT))
    sparse[156:157], sparse[483:495] = tarfile.GNUTYPE_SPARSE, tarfile.itn(2**50, 12, 1)
    sparse[148:156] = b" " * 8
    sparse[148:156] = b"%06o\0 " % sum(sparse)
    source = tmp_path / "sparse.tar"
    data = manifest(entry(bytes=2**50, count=1, sha256=None))
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


@pytest.mark.parametrize("member", ["c.jsonl", "c.jsonl.zst", "manifest.json"])
def test_folder_symlink_to_outside_is_not_followed(target: Target, member: str) -> None:
    """What the link points to is intact: following it would succeed. The manifest, which
    anchors every checksum, must not come from outside the folder any more than a member."""
    folder = backup_folder(target.work)
    content = {"c.jsonl": DATA, "c.jsonl.zst": compress_bytes(DATA, "zstd"), "manifest.json": M[2]}
    if member == "manifest.json":
        (folder / "c.jsonl").write_bytes(DATA)
        (folder / member).unlink()
    (outside := target.work.parent / member).write_bytes(content[member])
    (folder / member).symlink_to(outside)
    target.refused(folder, "manifest.json" if member == "manifest.json" else "c.jsonl")


@pytest.mark.parametrize("file", ["../outside.jsonl", "../../outside.jsonl", f"{OUTSIDE}.jsonl"])
def test_folder_manifest_naming_a_file_outside(target: Target, file: str) -> None:
    folder = backup_folder(target.work, manifest(entry(file=file)))
    (folder.parent / "outside.jsonl").write_bytes(DATA)
    target.refused(folder, "unsafe file name")


SPECIAL: list[Any] = [  # a FIFO would block a reader forever; the truncated file is sparse
    pytest.param(lambda f: os.mkfifo(f / "c.jsonl"), "c.jsonl", id="fifo-member"),
    pytest.param(lambda f: os.truncate(f / "manifest.json", MAX_MANIFEST_BYTES + 1),
                 "manifest.json", id="manifest-too-big"),
]  # fmt: skip


@pytest.mark.parametrize(("make", "named"), SPECIAL)
def test_folder_special_files(target: Target, make: Callable[[Path], None], named: str) -> None:
    make(folder := backup_folder(target.work))
    target.refused(folder, named)


# --- manifests with hostile fields (checksum matching) --------------------------------


def deep_text(depth: int, **entry_change: Any) -> bytes:
    """``"DEEP"`` replaced by ``depth`` levels: too deep for json, so no checksum either."""
    text = manifest(entry(**entry_change))
    return text.replace(b'"DEEP"', b'{"a":' * depth + b"1" + b"}" * depth)


def deep_manifest(depth: int) -> bytes:
    """Options nested ``depth`` levels: within json's reach, beyond any server's."""
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20 * depth)  # dataclasses.asdict recurses through it
    try:
        return manifest(entry(options={"validator": value}))
    finally:
        sys.setrecursionlimit(limit)


def too_many_collections() -> bytes:
    def add(data: dict[str, Any]) -> None:
        view = dict(data["collections"][0], type="view", file=None)
        data["collections"] += [dict(view, name=f"v{i}") for i in range(MAX_COLLECTIONS)]

    return forged_manifest(manifest(), add)  # a matching checksum, as manifest() makes


COUNTS = [("count", 10**18), ("bytes", 10**18), ("count", -1), ("bytes", -2)]
FILES = [EVIL, "a/b.jsonl", "c\0.jsonl", "..", "..\\evil.jsonl", ""]
INDEX = {"key": {"a": 1}, "name": "a_1", "partialFilterExpression": "DEEP"}
FIELDS: list[Any] = [
    *(pytest.param(manifest(entry(**{k: v})), "impossible counts", id=f"{k}{v}")
      for k, v in COUNTS),
    *(pytest.param(manifest(entry(file=f)), "unsafe file name", id=f"file-{f!r}") for f in FILES),
    pytest.param(manifest(entry(name="")), "bad name", id="empty-name"),
    pytest.param(manifest(entry(name="c\0evil")), "manifest.json", id="nul-in-name"),
    pytest.param(deep_text(100_000, options={"v": "DEEP"}), "not valid JSON", id="deep-options"),
    pytest.param(deep_text(100_000, indexes=[INDEX]), "not valid JSON", id="deep-indexes"),
    pytest.param(None, "too many collections", id="too-many-collections"),
    pytest.param(600, "manifest.json", id="options-600-deep"),
]  # fmt: skip


@pytest.mark.parametrize(("data", "named"), FIELDS)
def test_hostile_manifest_field(target: Target, data: bytes | int | None, named: str) -> None:
    if not isinstance(data, bytes):  # built here, not at collection: slow or deep
        data = too_many_collections() if data is None else deep_manifest(data)
    target.refused(hostile_tar(target.work / "m.tar", [("manifest.json", REG, data, ""), C]), named)


@pytest.mark.parametrize("compress", ["none", "zstd"])
def test_manifest_over_the_size_bound_in_tar_header(target: Target, compress: str) -> None:
    body = header("manifest.json", MAX_MANIFEST_BYTES + 1) + b"{" * 512 + bytes(1024)
    source = target.work / f"big.tar{'.zst' if compress == 'zstd' else ''}"
    source.write_bytes(compress_bytes(body, compress))
    target.refused(source, "manifest.json")


def test_escape_line_carrying_invalid_bson(target: Target) -> None:
    """An escape line must carry a real BSON document, not bytes shaped like one."""
    payload = b"\x0d\x00\x00\x00\x42_id\x00\x01\x02\x00\x00"  # element type 0x42: none
    wrapper = {"$binary": {"base64": base64.b64encode(payload).decode(), "subType": "00"}}
    data = json.dumps({"$mongoBackupBSON": wrapper}).encode() + b"\n"
    sha = hashlib.sha256(data).hexdigest()
    man = manifest(entry(count=1, bytes=len(data), sha256=sha))
    specs = [("manifest.json", REG, man, ""), ("c.jsonl", REG, data, "")]
    target.refused(hostile_tar(target.work / "e.tar", specs), "c.jsonl")


@pytest.mark.parametrize("database", ["../evil", "a\0b", "a/b"])
def test_hostile_database_name_without_db_flag(target: Target, database: str) -> None:
    specs = [("manifest.json", REG, manifest(database=database), ""), C]
    result = target.cli("restore", hostile_tar(target.work / "d.tar", specs), "--uri", target.uri)
    assert result.code in (1, 2), result
    assert not assert_single_error_line(result).startswith(UNEXPECTED)


def test_long_chain_of_views_does_not_crash_restore(target: Target) -> None:
    views = [
        entry(name=f"v{i}", type="view", file=None, count=0, bytes=0, sha256=None,
              options={"viewOn": f"v{i + 1}", "pipeline": []})
        for i in range(1500)
    ]  # fmt: skip
    specs = [("manifest.json", REG, manifest(entry(), *views), ""), C]
    source = hostile_tar(target.work / "v.tar", specs)
    result = target.cli("restore", source, "--uri", target.uri, "--db", target.db, "-q")
    assert UNEXPECTED not in result.err and "Traceback" not in result.err, result


# --- bombs -----------------------------------------------------------------------------

AS_LIMIT = 1536 << 20
FRAME = 16 << 20
_LIMITED = (
    "import resource, sys; resource.setrlimit(resource.RLIMIT_AS, ({0}, {0})); "
    "from mongo_backup.cli.main import main; sys.argv[0] = 'mongo-backup'; main()"
)


def limited_cli(*argv: str | Path) -> CliResult:
    """The CLI in a child process whose address space is capped at 1.5 GiB."""
    command = [sys.executable, "-c", _LIMITED.format(AS_LIMIT), *map(str, argv)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    return CliResult(done.returncode, done.stdout, done.stderr)


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


@pytest.mark.parametrize("command", ["verify", "restore"])
def test_zstd_bomb_fails_cleanly_in_bounded_memory(target: Target, command: str) -> None:
    byte = b"{" if command == "restore" else b"\0"
    source = zstd_bomb(target.work / "bomb.tar.zst", 2 << 30, byte)  # 2 GiB in ~70 KB
    assert source.stat().st_size < 200_000
    if command == "verify":
        result = limited_cli("verify", source)
        assert result.code == 1 and "longer than" in result.out and not result.err, result
    else:
        result = limited_cli("restore", source, "--uri", target.uri, "--db", target.db, "-q")
        assert result.code == 1 and "longer than" in assert_single_error_line(result), result
    assert target.client[target.db].list_collection_names() == []


@contextlib.contextmanager
def traced() -> Iterator[list[int]]:
    """Yields a list that holds, after the block, the peak of traced allocations."""
    peak: list[int] = []
    tracemalloc.start()
    try:
        yield peak
    finally:
        peak.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()


def test_zstd_reader_memory_does_not_follow_the_compression_ratio() -> None:
    frames = zstandard.ZstdCompressor().compress(b"{" * FRAME) * 32  # 512 MiB in 17 KB
    reader = ZstdFramesReader(io.BytesIO(frames))
    with traced() as peak:
        for _ in range(8):
            assert len(reader.read(1 << 20)) == 1 << 20
    assert peak[0] < MAX_LINE_BYTES, f"{peak[0] >> 20} MiB held to hand out 8 MiB"


def test_line_reader_memory_is_bounded_by_the_line_limit() -> None:
    frames = zstandard.ZstdCompressor().compress(b"{" * FRAME) * 13  # 208 MiB, no newline
    braces = zstandard.ZstdDecompressor().stream_reader(frames, read_across_frames=True)
    with traced() as peak, pytest.raises(LineFormatError, match="longer than"):
        list(iter_lines(braces, "bomb.jsonl"))
    assert peak[0] < 4 * MAX_LINE_BYTES, f"{peak[0] >> 20} MiB"


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
    assert not assert_single_error_line(result).startswith(UNEXPECTED)


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
        for _ in iter_documents(iter_lines(io.BytesIO(LINE1 + line), "bomb.jsonl"), "bomb.jsonl"):
            pass


@pytest.mark.parametrize("line", NESTING)
def test_nesting_bomb_in_single_file_restore(target: Target, line: bytes) -> None:
    source = target.work / "export.jsonl"
    source.write_bytes(LINE1 + line + b"\n" + DATA[len(LINE1) :])
    argv = ("--uri", target.uri, "--db", target.db, "--collection", "c")
    result = target.cli("restore", source, *argv)
    error = assert_single_error_line(result)
    assert result.code == 1 and "export.jsonl, line 2" in error, error
    assert not error.startswith(UNEXPECTED), error
    assert target.client[target.db].list_collection_names() == []
