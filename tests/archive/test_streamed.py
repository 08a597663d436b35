"""The streamed form of an archive (plan first, members as finished, manifest last):
read front to back, every member checked against the manifest that ends it, and every
way such a stream can lie refused with one ArchiveError (pure: no server)."""

from __future__ import annotations

import hashlib
import io
from dataclasses import replace
from pathlib import Path

import pytest

from mongo_backup.archive.manifest import (
    MANIFEST_NAME,
    PLAN_NAME,
    CollectionEntry,
    Manifest,
    manifest_bytes,
)
from mongo_backup.archive.reader import open_backup
from mongo_backup.archive.streamed import StreamedReader
from mongo_backup.archive.tar_stream import TarStream
from mongo_backup.errors import ArchiveError

ORDERS = b'{"_id":{"$numberInt":"1"}}\n{"_id":{"$numberInt":"2"}}\n'
USERS = b'{"_id":"u1"}\n'


def entry(name: str, data: bytes, **fields: object) -> CollectionEntry:
    return CollectionEntry(
        name, "collection", f"{name}.jsonl", count=data.count(b"\n"), bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(), indexes=[{"name": "_id_"}], **fields,
    )  # fmt: skip


def manifests() -> tuple[Manifest, Manifest]:
    final = Manifest(
        "shop", "0.1.0", "canonical", False, "none", "t0", "t1", {}, [], backup_id="b1",
        collections=[entry("orders", ORDERS), entry("users", USERS)],
    )  # fmt: skip
    plan = replace(
        final,
        finished_at="",
        collections=[replace(e, count=0, bytes=0, sha256=None) for e in final.collections],
    )
    return plan, final


def streamed(
    members: list[tuple[str, bytes]],
    plan: Manifest | None = None,
    final: Manifest | None = None,
    end: bool = True,
) -> bytes:
    """A streamed archive (uncompressed) of ``members``, in their order."""
    default_plan, default_final = manifests()
    out = io.BytesIO()
    tar = TarStream(out, "none", mtime=0)
    tar.add_bytes(PLAN_NAME, manifest_bytes(plan or default_plan))
    for name, data in members:
        tar.add_bytes(name, data)
    if end:
        tar.add_bytes(MANIFEST_NAME, manifest_bytes(final or default_final))
        tar.close()
    else:
        tar.flush()
    return out.getvalue()


def read_all(data: bytes) -> tuple[StreamedReader, dict[str, bytes]]:
    reader = StreamedReader(io.BytesIO(data), "stdin")
    got = {entry.name: stream.read() for entry, stream in reader.members()}
    return reader, got


GOOD = [("users.jsonl", USERS), ("orders.jsonl", ORDERS)]  # in the order finished


def test_members_come_in_stream_order_and_the_manifest_replaces_the_plan() -> None:
    reader = StreamedReader(io.BytesIO(streamed(GOOD)), "stdin")
    assert reader.manifest.collections[0].sha256 is None  # the plan, until the end
    got = [(entry.name, stream.read()) for entry, stream in reader.members()]
    assert got == [("users", USERS), ("orders", ORDERS)]
    assert reader.manifest == manifests()[1]


def test_a_member_left_unread_is_still_checked() -> None:
    reader = StreamedReader(io.BytesIO(streamed(GOOD)), "stdin")
    for _entry, stream in reader.members():
        stream.read(3)  # the rest is read (and hashed) by the reader itself
    assert reader.manifest.collections[1].count == 1


def test_a_saved_stream_reads_as_an_archive_file(tmp_path: Path) -> None:
    path = tmp_path / "saved.tar"
    path.write_bytes(streamed(GOOD))
    with open_backup(path) as reader:
        assert reader.manifest == manifests()[1]  # known before the first member
        assert {e.name: s.read() for e, s in reader.members()} == {
            "users": USERS,
            "orders": ORDERS,
        }


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([("users.jsonl", USERS)], "orders.jsonl is missing"),
        ([*GOOD, ("extra.jsonl", b"{}\n")], "unexpected member 'extra.jsonl'"),
        ([*GOOD, ("users.jsonl", USERS)], "unexpected member 'users.jsonl'"),
        ([("users.jsonl", USERS), ("orders.jsonl", ORDERS.replace(b"2", b"3"))], "checksum"),
    ],
)
def test_a_stream_that_lies_about_its_members_is_refused(
    members: list[tuple[str, bytes]], message: str
) -> None:
    with pytest.raises(ArchiveError, match=message):
        read_all(streamed(members))


def test_a_stream_cut_before_its_manifest_is_refused() -> None:
    with pytest.raises(ArchiveError, match=r"ends before its manifest\.json"):
        read_all(streamed(GOOD, end=False))
    whole = streamed(GOOD)
    inside_manifest = whole.rindex(b'"collections"')  # (the end's zero padding may go)
    for cut in (600, len(whole) // 3, inside_manifest):
        with pytest.raises(ArchiveError):
            read_all(whole[:cut])


def test_a_manifest_that_differs_from_the_plan_is_refused() -> None:
    plan, final = manifests()
    other = replace(final, collections=[replace(final.collections[0], options={"capped": True}),
                                        final.collections[1]])  # fmt: skip
    with pytest.raises(ArchiveError, match="differ on 'orders'"):
        read_all(streamed(GOOD, final=other))
    elsewhere = replace(final, database="other")
    with pytest.raises(ArchiveError, match="does not match the archive's plan"):
        read_all(streamed(GOOD, final=elsewhere))
    fewer = replace(final, collections=final.collections[:1])
    with pytest.raises(ArchiveError):
        read_all(streamed([("orders.jsonl", ORDERS)], final=fewer))
    assert plan.collections  # the plan listed both


def test_a_collection_that_failed_in_the_backup_has_no_member() -> None:
    _, final = manifests()
    failed = replace(final.collections[1], file=None, status="failed", error="boom",
                     count=0, bytes=0, sha256=None)  # fmt: skip
    final = replace(final, collections=[final.collections[0], failed])
    reader, got = read_all(streamed([("orders.jsonl", ORDERS)], final=final))
    assert got == {"orders": ORDERS}
    assert reader.manifest.failed == [failed]


def test_data_after_the_end_is_refused() -> None:
    with pytest.raises(ArchiveError, match="after the end"):
        read_all(streamed(GOOD) + b"junk" * 200)


def test_members_the_plan_does_not_list_are_only_the_captured_changes() -> None:
    plan, final = manifests()
    users = CollectionEntry("$users", "users", "~users-and-roles.jsonl", count=1,
                            bytes=len(USERS), sha256=hashlib.sha256(USERS).hexdigest())  # fmt: skip
    changes = replace(users, name="$changes", type="changes", file="~changes.jsonl")
    plan = replace(plan, collections=[*plan.collections, users])  # written before the export
    final = replace(final, collections=[*final.collections, users, changes])
    members = [("~users-and-roles.jsonl", USERS), *GOOD, ("~changes.jsonl", USERS)]
    reader, got = read_all(streamed(members, plan=plan, final=final))
    assert set(got) == {"$users", "users", "orders", "$changes"}
    assert reader.manifest.changes == changes
    unplanned = [("~users-and-roles.jsonl", USERS), *GOOD]
    with pytest.raises(ArchiveError, match=r"unexpected member '~users-and-roles\.jsonl'"):
        read_all(streamed(unplanned, final=final))
