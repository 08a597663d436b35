"""Destinations: one conformance suite over every implementation, then what is
particular to each (local files on disk, S3 on a real HTTP API), and the pure helpers.

The conformance fixture ``destination`` runs each test over a local folder, the
in-memory destination, obstore's in-memory store (the object store code without a
network), and S3 (moto's server on loopback, see ``s3tools.py``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from obstore.exceptions import GenericError, PermissionDeniedError
from obstore.store import MemoryStore

from mongo_backup.destinations import (
    MAX_PARTS,
    Destination,
    LocalFolder,
    MemoryDestination,
    ObjectStoreDestination,
    StoreSettings,
    is_url,
    open_destination,
    part_size_for,
    split_archive_url,
)
from mongo_backup.destinations import objectstore as objectstore_module
from mongo_backup.destinations.storeerrors import describe, is_transient, with_retries
from mongo_backup.errors import ConfigError, DestinationError, InvalidKey, ObjectNotFound
from mongo_backup.retry import RetryPolicy
from s3tools import (
    ACCESS_KEY_ID,
    CREDENTIALS,
    SECRET_ACCESS_KEY,
    MotoS3,
    credential_leaks,
    log_records,
    moto_s3_fixture,  # noqa: F401  (registers the fixture moto_s3)
)

MiB = 1024 * 1024
REPO_ROOT = Path(__file__).resolve().parents[2]


class SourceFailed(Exception):
    """What a caller's iterator raises in the tests."""


def pattern(size: int, seed: int = 0) -> bytes:
    """Bytes that differ from place to place, so that a misplaced part shows."""
    block = hashlib.sha256(str(seed).encode()).digest() * (64 * 1024 // 32)
    return (block * (size // len(block) + 1))[:size]


def chunked(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def failing(data: bytes, size: int) -> Iterator[bytes]:
    yield from chunked(data, size)
    raise SourceFailed("the source broke")


def read_back(destination: Destination, key: str) -> bytes:
    with destination.open(key) as reader:
        return b"".join(iter(lambda: reader.read(MiB), b""))


@pytest.fixture(params=["local", "memory", "obstore-memory", "s3"])
def destination(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Destination]:
    kind = request.param
    if kind == "local":
        yield LocalFolder(tmp_path / "store")
    elif kind == "memory":
        yield MemoryDestination()
    elif kind == "obstore-memory":
        settings = StoreSettings(part_size=5 * MiB)
        yield ObjectStoreDestination(MemoryStore(), "memory://obstore", settings=settings)
    else:
        s3: MotoS3 = request.getfixturevalue("moto_s3")
        url = s3.fresh_url()
        yield open_destination(url, endpoint_url=s3.endpoint_url, settings=s3.settings())
        s3.clear(url.split("/", 3)[3])


# -- conformance ---------------------------------------------------------------------


def test_small_stream_round_trip(destination: Destination) -> None:
    info = destination.put_stream("a/small.bin", [b"hello ", b"", b"world"])
    assert (info.key, info.size, info.metadata) == ("a/small.bin", 11, {})
    assert read_back(destination, "a/small.bin") == b"hello world"
    stat = destination.stat("a/small.bin")
    assert stat is not None and stat.size == 11 and stat.modified is not None


def test_large_stream_in_small_chunks_round_trip(destination: Destination) -> None:
    # 20 MiB and a bit in 64 KiB chunks: five parts of 5 MiB on the object stores.
    data = pattern(20 * MiB + 12345)
    info = destination.put_stream("big.bin", chunked(data, 64 * 1024), size_hint=len(data))
    assert info.size == len(data)
    with destination.open("big.bin") as reader:
        digest = hashlib.sha256()
        while piece := reader.read(1_000_003):  # an odd size: reads cross the ranges
            digest.update(piece)
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()


def test_stream_read_from_another_object(destination: Destination) -> None:
    # The chunks come from the store itself while the upload runs: on the object
    # stores, reads inside the upload (obstore's runtime) must not collide.
    data = pattern(7 * MiB, seed=3)
    destination.put_stream("source", chunked(data, MiB))
    with destination.open("source") as reader:
        destination.put_stream("target", iter(lambda: reader.read(300_000), b""))
    assert read_back(destination, "target") == data


def test_empty_stream(destination: Destination) -> None:
    assert destination.put_stream("empty", iter([])).size == 0
    assert read_back(destination, "empty") == b""


def test_put_file_round_trip(destination: Destination, tmp_path: Path) -> None:
    for name, size in (("small", 1000), ("large", 11 * MiB + 7)):
        source = tmp_path / f"{name}.src"
        source.write_bytes(pattern(size, seed=size))
        info = destination.put_file(f"files/{name}", source, metadata={"kind": name})
        assert (info.size, info.metadata) == (size, {"kind": name})
        assert read_back(destination, f"files/{name}") == source.read_bytes()


def test_put_file_of_missing_source(destination: Destination, tmp_path: Path) -> None:
    with pytest.raises(DestinationError, match="cannot read"):
        destination.put_file("x", tmp_path / "absent")
    assert destination.list() == []


def test_overwrite_replaces_bytes_and_metadata(destination: Destination) -> None:
    destination.put_stream("k", [b"first"], metadata={"n": "1"})
    destination.put_stream("k", [b"second!"])
    stat = destination.stat("k")
    assert stat is not None and (stat.size, stat.metadata) == (7, {})
    assert read_back(destination, "k") == b"second!"


def test_metadata_round_trip(destination: Destination) -> None:
    metadata = {"sha256": "ab" * 32, "format": "tar.zst", "documents": "12 345"}
    info = destination.put_stream("m.tar.zst", [b"x" * 10], metadata=metadata)
    assert info.metadata == metadata
    stat = destination.stat("m.tar.zst")
    assert stat is not None and stat.metadata == metadata


@pytest.mark.parametrize(
    "metadata",
    [
        {"Upper": "x"},
        {"with-dash": "x"},
        {"ok": "caf\u00e9"},
        {"ok": "line\nbreak"},
        {"big": "x" * 3000},
    ],
)
def test_unportable_metadata_is_refused(destination: Destination, metadata: dict[str, str]) -> None:
    with pytest.raises(DestinationError):
        destination.put_stream("k", [b"x"], metadata=metadata)
    assert destination.stat("k") is None


def test_stat_open_copy_delete_of_missing_key(destination: Destination) -> None:
    assert destination.stat("nothing/here") is None
    with pytest.raises(ObjectNotFound) as raised:
        destination.open("nothing/here")
    assert "\n" not in str(raised.value) and destination.url in str(raised.value)
    with pytest.raises(ObjectNotFound):
        destination.copy("nothing/here", "target")
    destination.delete("nothing/here")  # no error
    assert destination.stat("target") is None


def test_delete(destination: Destination) -> None:
    destination.put_stream("d/one", [b"1"], metadata={"a": "b"})
    destination.put_stream("d/two", [b"2"])
    destination.delete("d/one")
    assert destination.stat("d/one") is None
    assert [info.key for info in destination.list()] == ["d/two"]
    # A new object under the key starts without the old metadata.
    destination.put_stream("d/one", [b"1"])
    stat = destination.stat("d/one")
    assert stat is not None and stat.metadata == {}


def test_copy_keeps_bytes_and_metadata(destination: Destination) -> None:
    destination.put_stream("src/a", [b"payload"], metadata={"origin": "src"})
    destination.put_stream("dst/a", [b"old contents"])
    destination.copy("src/a", "dst/a")
    assert read_back(destination, "dst/a") == b"payload"
    stat = destination.stat("dst/a")
    assert stat is not None and stat.metadata == {"origin": "src"}
    destination.copy("src/a", "src/a")  # onto itself: nothing changes
    assert read_back(destination, "src/a") == b"payload"


def test_list_is_sorted_recursive_and_by_string_prefix(destination: Destination) -> None:
    for key in ("b", "a/y/z", "ab", "a/x", "abc/d", "backup_1.tar", "backup_2.tar"):
        destination.put_stream(key, [key.encode()], metadata={"k": "v"})

    def keys(prefix: str = "") -> list[str]:
        return [info.key for info in destination.list(prefix)]

    assert keys() == ["a/x", "a/y/z", "ab", "abc/d", "b", "backup_1.tar", "backup_2.tar"]
    assert keys("a") == ["a/x", "a/y/z", "ab", "abc/d"]
    assert keys("a/") == ["a/x", "a/y/z"]
    assert keys("a/y/") == ["a/y/z"]
    assert keys("backup_") == ["backup_1.tar", "backup_2.tar"]
    assert keys("zzz") == [] and keys("q/") == []
    listed = destination.list("a/x")[0]
    assert listed.size == 3 and listed.metadata is None  # list() does not fetch metadata


def test_failing_iterator_leaves_nothing(destination: Destination) -> None:
    # Past the first part (12 MiB with 5 MiB parts): a multipart upload is under way
    # on the object stores when the source breaks.
    with pytest.raises(SourceFailed, match="the source broke"):
        destination.put_stream("broken", failing(pattern(12 * MiB), 256 * 1024))
    with pytest.raises(SourceFailed):
        destination.put_stream("broken-early", failing(b"tiny", 2))
    assert destination.stat("broken") is None and destination.stat("broken-early") is None
    assert destination.list() == []


def test_failing_iterator_keeps_the_previous_object(destination: Destination) -> None:
    destination.put_stream("keep", [b"version one"], metadata={"v": "1"})
    with pytest.raises(SourceFailed):
        destination.put_stream("keep", failing(pattern(7 * MiB), MiB), metadata={"v": "2"})
    assert read_back(destination, "keep") == b"version one"
    stat = destination.stat("keep")
    assert stat is not None and stat.metadata == {"v": "1"}


UNSAFE_KEYS = [
    "",
    "../escape",
    "a/../../escape",
    "/absolute",
    "a\\b",
    "..\\escape",
    "a//b",
    "a/",
    ".",
    "a/./b",
    "with space",
    "caf\u00e9",
    "percent%2F",
    "x.meta.json",
    "dir/.x.mb-tmp-123",
]


@pytest.mark.parametrize("key", UNSAFE_KEYS)
def test_unsafe_keys_are_refused(destination: Destination, key: str) -> None:
    destination.put_stream("fine", [b"x"])
    calls = [
        lambda: destination.put_stream(key, [b"x"]),
        lambda: destination.stat(key),
        lambda: destination.open(key),
        lambda: destination.delete(key),
        lambda: destination.copy("fine", key),
        lambda: destination.copy(key, "fine2"),
    ]
    for call in calls:
        with pytest.raises(InvalidKey):
            call()
    with pytest.raises(InvalidKey):
        destination.list("../")
    assert [info.key for info in destination.list()] == ["fine"]


def test_url_and_repr_carry_no_credentials(destination: Destination) -> None:
    # The S3 destination was opened with the session's credentials in the environment.
    for text in (destination.url, repr(destination)):
        assert "@" not in text and "\n" not in text
        assert not [value for value in CREDENTIALS if value in text], text


# -- local folder ----------------------------------------------------------------------


def test_local_layout_sidecar_and_no_leftovers(tmp_path: Path) -> None:
    folder = LocalFolder(tmp_path)
    folder.put_stream("a/b.tar", [b"data"], metadata={"sha": "1"})
    assert (tmp_path / "a" / "b.tar").read_bytes() == b"data"
    assert (tmp_path / "a" / "b.tar.meta.json").read_text() == '{"sha": "1"}'
    with pytest.raises(SourceFailed):
        folder.put_stream("a/c.tar", failing(b"x" * 100, 10), metadata={"sha": "2"})
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b.tar", "b.tar.meta.json"]
    folder.delete("a/b.tar")
    assert list((tmp_path / "a").iterdir()) == []
    assert folder.url == tmp_path.as_uri()


def test_local_list_shows_objects_only(tmp_path: Path) -> None:
    folder = LocalFolder(tmp_path)
    folder.put_stream("real", [b"x"])
    (tmp_path / ".real.mb-tmp-abc").write_bytes(b"half")  # a crashed write
    (tmp_path / "orphan.meta.json").write_text("{}")
    (tmp_path / "my notes.txt").write_text("not a key")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    (tmp_path / "empty-folder").mkdir()
    assert [info.key for info in folder.list()] == ["real"]
    assert LocalFolder(tmp_path / "absent").list() == []


def test_local_damaged_sidecar(tmp_path: Path) -> None:
    folder = LocalFolder(tmp_path)
    folder.put_stream("k", [b"x"], metadata={"a": "b"})
    (tmp_path / "k.meta.json").write_text("{not json")
    with pytest.raises(DestinationError, match="metadata file of 'k' is damaged"):
        folder.stat("k")


def test_local_write_failure_is_one_line(tmp_path: Path) -> None:
    folder = LocalFolder(tmp_path)
    folder.put_stream("file", [b"x"])
    with pytest.raises(DestinationError) as raised:
        folder.put_stream("file/below", [b"y"])  # a file stands where a folder must be
    message = str(raised.value)
    assert "\n" not in message and "cannot write 'file/below'" in message
    assert folder.stat("file") is not None


def test_local_folder_is_not_an_object(tmp_path: Path) -> None:
    folder = LocalFolder(tmp_path)
    folder.put_stream("dir/x", [b"x"])
    assert folder.stat("dir") is None
    with pytest.raises(ObjectNotFound):
        folder.open("dir")


# -- S3 on a real HTTP API ---------------------------------------------------------------


def s3_destination(s3: MotoS3, **settings: object) -> tuple[ObjectStoreDestination, str]:
    url = s3.fresh_url()
    destination = open_destination(
        url, endpoint_url=s3.endpoint_url, settings=s3.settings(**settings)
    )
    assert isinstance(destination, ObjectStoreDestination)
    return destination, url.split("/", 3)[3]


def test_s3_multipart_parts_and_metadata_as_stored(moto_s3: MotoS3) -> None:
    destination, prefix = s3_destination(moto_s3)
    data = pattern(20 * MiB + 1)
    destination.put_stream("big", chunked(data, 100_000), metadata={"sha256": "abc"})
    head = moto_s3.client().head_object(Bucket=moto_s3.bucket, Key=f"{prefix}/big")
    assert head["ETag"].strip('"').endswith("-5")  # five parts of 5 MiB (the last small)
    assert head["Metadata"] == {"sha256": "abc"}
    destination.put_stream("small", [b"tiny"])
    head = moto_s3.client().head_object(Bucket=moto_s3.bucket, Key=f"{prefix}/small")
    assert "-" not in head["ETag"]  # one plain PUT
    moto_s3.clear(prefix)


def test_s3_failing_iterator_aborts_the_upload(moto_s3: MotoS3) -> None:
    destination, prefix = s3_destination(moto_s3)
    with pytest.raises(SourceFailed):
        destination.put_stream("broken", failing(pattern(16 * MiB), MiB))
    assert moto_s3.keys(prefix) == [] and moto_s3.pending_uploads(prefix) == []


def test_s3_stream_past_the_part_limit(moto_s3: MotoS3, monkeypatch: pytest.MonkeyPatch) -> None:
    destination, prefix = s3_destination(moto_s3)
    monkeypatch.setattr(objectstore_module, "MAX_PARTS", 2)
    with pytest.raises(DestinationError, match="give a size hint") as raised:
        destination.put_stream("huge", chunked(pattern(12 * MiB), MiB))
    assert "\n" not in str(raised.value)
    assert moto_s3.keys(prefix) == [] and moto_s3.pending_uploads(prefix) == []


def test_s3_server_gone_mid_upload(moto_s3: MotoS3) -> None:
    destination, prefix = s3_destination(moto_s3)

    def chunks() -> Iterator[bytes]:
        for number in range(30):
            if number == 8:  # one 5 MiB part is up, the next one is being gathered
                moto_s3.stop()
            yield pattern(MiB, seed=number)

    started = time.monotonic()
    try:
        with pytest.raises(DestinationError) as raised:
            destination.put_stream("cut", chunks())
        elapsed = time.monotonic() - started
    finally:
        moto_s3.restart()
    message = str(raised.value)
    assert elapsed < 30, f"took {elapsed:.1f} s"
    assert "\n" not in message and message.startswith(destination.url)
    # The server is back with everything it had: no object appeared under the key. The
    # abort could not reach the server, so the upload may stay pending (the lifecycle
    # rule's job, see objectstore.py); the test cleans it up.
    assert destination.stat("cut") is None and moto_s3.keys(prefix) == []
    moto_s3.clear(prefix)


def test_s3_server_gone_mid_read(moto_s3: MotoS3) -> None:
    destination, prefix = s3_destination(moto_s3, read_buffer=MiB)
    destination.put_stream("k", chunked(pattern(6 * MiB), MiB))
    try:
        with destination.open("k") as reader:
            assert len(reader.read(MiB)) == MiB
            moto_s3.stop()
            with pytest.raises(DestinationError) as raised:
                reader.read()
    finally:
        moto_s3.restart()
    assert "\n" not in str(raised.value) and "cannot read 'k'" in str(raised.value)
    moto_s3.clear(prefix)


def test_s3_transient_failure_is_retried(moto_s3: MotoS3) -> None:
    """The server is down for the first attempt and back (brought back by the retry's own
    warning, not by a timer) for the second: the put succeeds after exactly one retry."""
    # obstore's own retries off: what brings the put through is the operation retry.
    destination, prefix = s3_destination(
        moto_s3, request_retries=0, retry=RetryPolicy(retries=3, base_delay=0.05, max_delay=0.1)
    )
    retries: list[str] = []

    class BackOnRetry(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "; retry " in record.getMessage():
                retries.append(record.getMessage())
                moto_s3.restart()

    handler = BackOnRetry()
    watched = logging.getLogger("mongo_backup")
    watched.addHandler(handler)
    moto_s3.stop()
    try:
        destination.put_stream("late", [b"made it"])
    finally:
        watched.removeHandler(handler)
        moto_s3.restart()
    assert len(retries) == 1 and "retry 1 of 3" in retries[0], retries
    assert read_back(destination, "late") == b"made it"
    moto_s3.clear(prefix)


def test_s3_permanent_failure_is_not_retried(moto_s3: MotoS3) -> None:
    slow = RetryPolicy(retries=5, base_delay=5.0)
    destination, _ = s3_destination(moto_s3, retry=slow, request_retries=5)
    started = time.monotonic()
    with pytest.raises(ObjectNotFound):
        destination.open("absent")
    missing_bucket = open_destination(
        "s3://no-such-bucket/x",
        endpoint_url=moto_s3.endpoint_url,
        settings=moto_s3.settings(retry=slow),
    )
    with pytest.raises(DestinationError, match="NoSuchBucket") as raised:
        missing_bucket.put_stream("k", [b"x"])
    assert "\n" not in str(raised.value)
    assert time.monotonic() - started < 3


def test_s3_errors_never_show_credentials(moto_s3: MotoS3, tmp_path: Path) -> None:
    """The session's credentials (unique strings, in the environment) in no error, repr,
    log record or object the destination wrote; nor those of a location's userinfo."""
    with log_records() as records:
        destination, prefix = s3_destination(moto_s3)
        destination.put_stream("k", [b"x"], metadata={"m": "1"})
        moto_s3.stop()
        try:
            with pytest.raises(DestinationError) as raised:
                destination.stat("k")
            with pytest.raises(DestinationError) as raised_put:
                destination.put_stream("k2", [b"y"])
        finally:
            moto_s3.restart()
        with pytest.raises(ConfigError) as refused:
            open_destination(f"s3://{ACCESS_KEY_ID}:{SECRET_ACCESS_KEY}@bucket/prefix")
    assert records, "the failed requests logged nothing: the log check would see nothing"
    texts = {
        "stat error": str(raised.value),
        "put error": str(raised_put.value),
        "repr": repr(destination),
        "url": destination.url,
        "userinfo error": str(refused.value),
    }
    assert credential_leaks(texts, records, [tmp_path], [(moto_s3, prefix)]) == []
    moto_s3.clear(prefix)


def test_s3_list_skips_foreign_names(moto_s3: MotoS3) -> None:
    destination, prefix = s3_destination(moto_s3)
    client = moto_s3.client()
    # Not "folder/": obstore reports such a folder marker as an object "folder".
    for key in ("with space", "ok", "x.meta.json", "dir/.a.mb-tmp-1"):
        client.put_object(Bucket=moto_s3.bucket, Key=f"{prefix}/{key}", Body=b"1")
    assert [info.key for info in destination.list()] == ["ok"]
    moto_s3.clear(prefix)


def test_s3_copy_beyond_copy_object_limit(moto_s3: MotoS3, monkeypatch: pytest.MonkeyPatch) -> None:
    destination, prefix = s3_destination(moto_s3)
    monkeypatch.setattr(objectstore_module, "S3_COPY_LIMIT", 0)  # every copy streams
    data = pattern(6 * MiB)
    destination.put_stream("src", chunked(data, MiB), metadata={"m": "1"})
    destination.copy("src", "dst")
    stat = destination.stat("dst")
    assert stat is not None and stat.metadata == {"m": "1"}
    assert read_back(destination, "dst") == data
    moto_s3.clear(prefix)


def test_s3_stream_memory_stays_bounded(moto_s3: MotoS3) -> None:
    # In a child process: its peak RSS (VmHWM) starts afresh, and moto's own memory
    # (it holds the uploaded object) stays in this one.
    url = moto_s3.fresh_url()
    script = textwrap.dedent(
        """
        import os, sys
        from mongo_backup.destinations import open_destination

        def peak_kib():
            with open("/proc/self/status") as status:
                line = next(l for l in status if l.startswith("VmHWM:"))
            return int(line.split()[1])

        destination = open_destination(sys.argv[1], endpoint_url=sys.argv[2])
        destination.put_stream("warm-up", [b"x"])  # runtime and connections in place
        before = peak_kib()
        chunks = (os.urandom(1 << 20) for _ in range(200))
        info = destination.put_stream("big", chunks)
        print(info.size, (peak_kib() - before) // 1024)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, url, moto_s3.endpoint_url],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    size, growth_mib = map(int, result.stdout.split())
    moto_s3.clear(url.split("/", 3)[3])
    assert size == 200 * MiB
    assert growth_mib < 64, f"peak memory grew by {growth_mib} MiB"


# -- opening by URL -----------------------------------------------------------------------


def test_is_url() -> None:
    assert all(is_url(u) for u in ("s3://b/p", "gs://b", "az://c/p", "file:///x", "S3://B"))
    assert not any(is_url(u) for u in ("/backups", "backups", "C:\\backups", "http://x", ""))


def test_open_destination_kinds(tmp_path: Path) -> None:
    local = open_destination(str(tmp_path))
    assert isinstance(local, LocalFolder) and local.root == tmp_path
    by_url = open_destination(tmp_path.as_uri())
    assert isinstance(by_url, LocalFolder) and by_url.root == tmp_path
    s3 = open_destination("s3://bucket/some/prefix/")
    assert s3.url == "s3://bucket/some/prefix"


def test_gcs_and_azure_are_built_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    gcs = open_destination("gs://bucket/backups")
    assert isinstance(gcs, ObjectStoreDestination) and gcs.url == "gs://bucket/backups"
    monkeypatch.delenv("AZURE_STORAGE_ACCOUNT_NAME", raising=False)
    with pytest.raises(ConfigError) as raised:
        open_destination("az://container/backups")
    assert "\n" not in str(raised.value)
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", "account")
    azure = open_destination("az://container/backups")
    assert azure.url == "az://container/backups"
    emulated = open_destination("az://container", endpoint_url="http://127.0.0.1:10000/account")
    assert "127.0.0.1:10000" in repr(emulated)


@pytest.mark.parametrize(
    ("url", "endpoint"),
    [
        ("ftp://host/x", None),
        ("s3://", None),
        ("s3://bucket/a/../b", None),
        ("s3://bucket/x?versionId=1", None),
        ("s3://bucket/x", "http://storage.example.com"),  # plain http off loopback
        ("s3://bucket/x", f"http://{ACCESS_KEY_ID}:{SECRET_ACCESS_KEY}@127.0.0.1:9000"),
        ("file://otherhost/x", None),
        ("/backups", "http://127.0.0.1:9000"),
    ],
)
def test_bad_urls_are_config_errors(url: str, endpoint: str | None) -> None:
    with pytest.raises(ConfigError) as raised:
        open_destination(url, endpoint_url=endpoint)
    assert "\n" not in str(raised.value)
    assert credential_leaks({"error": str(raised.value)}) == []


def test_split_archive_url(tmp_path: Path) -> None:
    destination, key = split_archive_url("s3://b/prefix/backup_x.tar.zst")
    assert (destination.url, key) == ("s3://b/prefix", "backup_x.tar.zst")
    destination, key = split_archive_url("s3://b/backup_x.tar.zst")
    assert (destination.url, key) == ("s3://b", "backup_x.tar.zst")
    destination, key = split_archive_url(str(tmp_path / "backup_x.tar"))
    assert (destination.url, key) == (tmp_path.as_uri(), "backup_x.tar")
    destination, key = split_archive_url("file:///backup_x.tar")
    assert (destination.url, key) == ("file:///", "backup_x.tar")
    for folder_only in ("s3://b/prefix/", "s3://b", str(tmp_path) + "/"):
        with pytest.raises(ConfigError, match="not an archive"):
            split_archive_url(folder_only)


# -- part sizes, error texts, retries --------------------------------------------------------


def test_part_size_schedule() -> None:
    assert part_size_for(None) == 8 * MiB
    assert part_size_for(0) == 8 * MiB and part_size_for(70 * 1024 * MiB) == 8 * MiB
    assert part_size_for(100 * 1024 * MiB) == 16 * MiB
    for size in (10**9, 10**11, 10**12, 5 * 1024**4):
        part = part_size_for(size)
        assert part % (8 * MiB) == 0 and (part // (8 * MiB)).bit_count() == 1
        assert size <= part * MAX_PARTS * 9 // 10 and part <= 5 * 1024 * MiB
        assert part == 8 * MiB or size > part // 2 * MAX_PARTS * 9 // 10  # the smallest
    with pytest.raises(ValueError, match="minimum"):
        part_size_for(None, first=MiB)


def test_error_descriptions_are_one_clean_line() -> None:
    error = GenericError(
        "Generic S3 error: Error performing PUT https://acct.blob.core.windows.net/c/k"
        "?sig=SASSIGNATURE&se=2030 in 3ms - Server returned non-2xx status code: "
        '503 Service Unavailable: <?xml version="1.0"?><Error><Code>SlowDown</Code>'
        "<Message>Reduce your request rate.</Message></Error>\n\nDebug source:\n..."
    )
    text = describe(error, ["SECRETVALUE1"])
    assert "\n" not in text and "SASSIGNATURE" not in text and "<?xml" not in text
    assert text.endswith("(SlowDown: Reduce your request rate.)")
    assert (
        describe(GenericError("token SECRETVALUE1 leaked"), ["SECRETVALUE1"]) == "token *** leaked"
    )


def test_transient_and_permanent_errors() -> None:
    assert is_transient(GenericError("... status code: 503 Service Unavailable"))
    assert is_transient(GenericError("... status code: 429 Too Many Requests"))
    assert is_transient(GenericError("HTTP error: error sending request"))
    assert not is_transient(GenericError("... status code: 400 Bad Request"))
    assert not is_transient(PermissionDeniedError("... 403 Forbidden"))
    assert not is_transient(FileNotFoundError("... 404 Not Found"))
    assert not is_transient(SourceFailed("connection"))


def test_with_retries_waits_by_the_policy() -> None:
    policy = RetryPolicy(retries=3, base_delay=1.0, max_delay=30.0)
    waits: list[float] = []
    failures = [GenericError("status code: 500"), GenericError("status code: 502")]

    def flaky() -> str:
        if failures:
            raise failures.pop(0)
        return "done"

    assert with_retries(flaky, policy=policy, what="test", sleep=waits.append) == "done"
    assert len(waits) == 2 and 1.0 <= waits[0] <= 1.25 and 2.0 <= waits[1] <= 2.5

    def forbidden() -> str:
        raise PermissionDeniedError("403")

    waits.clear()
    with pytest.raises(PermissionDeniedError):
        with_retries(forbidden, policy=policy, what="test", sleep=waits.append)
    assert waits == []

    def always_down() -> str:
        raise GenericError("status code: 503")

    with pytest.raises(GenericError):
        with_retries(always_down, policy=policy, what="test", sleep=waits.append)
    assert len(waits) == 3


def test_memory_destinations_are_separate() -> None:
    first, second = MemoryDestination(), MemoryDestination()
    first.put_stream("k", [b"x"])
    assert second.stat("k") is None and first.url != second.url
    assert os.path.basename(first.url)  # memory://NAME
