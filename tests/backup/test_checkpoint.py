"""Unit tests of the pieces that make resume exact: member files continued from a
checkpoint, split ranges joined, plans and restore progress saved and loaded."""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import threading
from pathlib import Path

import pytest
import zstandard

from mongo_backup.archive.writer import MemberWriter, join_parts, member_paths
from mongo_backup.backup.checkpoint import (
    Plan,
    Unit,
    decode_key,
    encode_key,
    load_plan,
    load_unit_progress,
    save_plan,
    unit_progress_path,
)
from mongo_backup.errors import CheckpointError
from mongo_backup.restore.state import (
    CollectionState,
    RestoreState,
    Watermark,
    load_state,
    progress_hook,
)

CHUNKS = [f'{{"n":{i},"pad":"{"x" * (i % 50)}"}}\n'.encode() for i in range(2000)]


def plain_bytes(folder: Path, name: str, compression: str) -> bytes:
    path = member_paths(folder, name, compression, keep_plain=False)[0]
    data = path.read_bytes()
    if compression == "zstd":
        reader = zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True)
        return reader.read()
    return data


@pytest.mark.parametrize("compression", ["none", "zstd"])
@pytest.mark.parametrize("keep_plain", [False, True])
def test_member_continued_from_a_checkpoint_equals_one_written_at_once(
    tmp_path: Path, compression: str, keep_plain: bool
) -> None:
    whole = MemberWriter(tmp_path, "whole.jsonl", compression, keep_plain)
    for chunk in CHUNKS:
        whole.write(chunk)
    whole.close()

    first = MemberWriter(tmp_path, "resumed.jsonl", compression, keep_plain)
    for chunk in CHUNKS[:700]:
        first.write(chunk)
    state = first.checkpoint()
    for chunk in CHUNKS[700:900]:  # written after the checkpoint, then "killed"
        first.write(chunk)
    first.close()
    for path in first.paths:  # and a torn last line on top
        with path.open("ab") as handle:
            handle.write(b'{"torn": ')
    second = MemberWriter(tmp_path, "resumed.jsonl", compression, keep_plain, resume=state)
    assert second.bytes == state["bytes"]
    for chunk in CHUNKS[700:]:
        second.write(chunk)
    second.close()

    assert (second.bytes, second.sha256) == (whole.bytes, whole.sha256)
    assert plain_bytes(tmp_path, "resumed.jsonl", compression) == b"".join(CHUNKS)
    if keep_plain:
        assert (tmp_path / "resumed.jsonl").read_bytes() == b"".join(CHUNKS)


def test_a_member_that_does_not_match_its_checkpoint_is_refused(tmp_path: Path) -> None:
    writer = MemberWriter(tmp_path, "m.jsonl", "zstd", keep_plain=False)
    for chunk in CHUNKS[:100]:
        writer.write(chunk)
    state = writer.checkpoint()
    writer.close()
    with pytest.raises(ValueError, match="does not match"):
        MemberWriter(tmp_path, "m.jsonl", "zstd", False, resume={**state, "sha256": "0" * 64})
    short = {**state, "sizes": {name: size + 1000 for name, size in state["sizes"].items()}}
    with pytest.raises(ValueError):
        MemberWriter(tmp_path, "m.jsonl", "zstd", False, resume=short)


@pytest.mark.parametrize("compression", ["none", "zstd"])
def test_joined_ranges_equal_one_member(tmp_path: Path, compression: str) -> None:
    cuts = [0, 300, 301, 1500, len(CHUNKS)]
    parts = []
    for index, (start, end) in enumerate(itertools.pairwise(cuts)):
        writer = MemberWriter(tmp_path, f"c.jsonl.part{index}", compression, False)
        for chunk in CHUNKS[start:end]:
            writer.write(chunk)
        writer.close()
        parts.append(f"c.jsonl.part{index}")
    size, sha256 = join_parts(tmp_path, "c.jsonl", parts, compression, keep_plain=False)
    expected = b"".join(CHUNKS)
    assert (size, sha256) == (len(expected), hashlib.sha256(expected).hexdigest())
    assert plain_bytes(tmp_path, "c.jsonl", compression) == expected


def test_plan_round_trip_and_refusals(tmp_path: Path) -> None:
    key = b"\x0e\x00\x00\x00\x10_id\x00\x05\x00\x00\x00\x00"
    assert decode_key(encode_key(key)) == key and decode_key(None) is None
    plan = Plan(
        database="shop",
        hosts=["db:27017"],
        started_at="2026-11-26T10:00:00+00:00",
        options={"compress": "zstd"},
        server={"version": "8.0"},
        intents=[{"name": "c", "type": "collection"}],
        files={"c": "c.jsonl"},
        units=[Unit("c", "c.jsonl.part0", "c.jsonl", 0, 2, None, encode_key(key))],
        done={"c.jsonl.part0": {"count": 1}},
    )
    save_plan(tmp_path, plan)
    assert (tmp_path / "checkpoint.json").stat().st_mode & 0o777 == 0o600
    assert load_plan(tmp_path) == plan
    for text, problem in [
        ("{}", "not a mongo-backup checkpoint"),
        ("garbage", "cannot be read"),
        (json.dumps({"format": "mongo-backup-checkpoint", "format_version": 99}), "version"),
        (json.dumps({"format": "mongo-backup-checkpoint", "format_version": 1}), "damaged"),
    ]:
        (tmp_path / "checkpoint.json").write_text(text)
        with pytest.raises(CheckpointError, match=problem):
            load_plan(tmp_path)
    with pytest.raises(CheckpointError, match=r"no checkpoint\.json"):
        load_plan(tmp_path / "nowhere")


def test_an_unreadable_unit_checkpoint_means_start_again(tmp_path: Path) -> None:
    path = unit_progress_path(tmp_path, "c.jsonl")
    assert load_unit_progress(path) is None
    for text in ["", "{", '{"count": 1}', '{"last_id": "%%%", "count": 1, "bytes": 1, '
                 '"sha256": "", "escaped": 0}']:  # fmt: skip
        path.write_text(text)
        assert load_unit_progress(path) is None


def test_watermark_advances_over_answered_prefixes_only() -> None:
    mark = Watermark(start=50)
    tickets = [mark.send(10) for _ in range(6)]
    assert mark.sent == 110 and mark.acknowledged == 50
    for ticket in (1, 2, 4):
        mark.answered(ticket)
    assert mark.acknowledged == 50  # batch 0 is still out
    mark.answered(tickets[0])
    assert mark.acknowledged == 80
    mark.answered(tickets[3])
    mark.answered(tickets[5])
    assert mark.acknowledged == 110


def test_watermark_from_many_threads() -> None:
    mark = Watermark(start=0)
    tickets = [mark.send(3) for _ in range(500)]
    random.Random(7).shuffle(tickets)
    threads = [
        threading.Thread(target=lambda part=tickets[i::4]: [mark.answered(t) for t in part])
        for i in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert mark.acknowledged == 1500


def test_restore_state_is_saved_before_a_batch_passes_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "restores" / "k.json"
    state = RestoreState(source="a.tar.zst", database="shop")
    state.collections["c"] = CollectionState()
    state.save(path)  # as the restore does once the collections are prepared
    mark = Watermark(0)
    before_send = progress_hook(state, path, "c", mark, step=100, interval=3600)
    before_send(10)  # the first batch passes the initial limit of 0: saved
    saved = load_state(path)
    assert saved is not None and saved.collections["c"].limit == 110
    for _ in range(9):  # up to 100 documents: no new save needed
        mark.answered(mark.send(10))
        before_send(10)
    mark.answered(mark.send(10))
    assert load_state(path).collections["c"].limit == 110  # type: ignore[union-attr]
    before_send(10)  # 100 sent + 10 > 110? no: 100 + 10 == 110, still inside
    mark.answered(mark.send(10))
    before_send(10)  # 110 + 10 > 110: saved with the acknowledged prefix
    reloaded = load_state(path)
    assert reloaded is not None
    assert reloaded.collections["c"].acknowledged == 110
    assert reloaded.collections["c"].limit == 220
    reloaded.save(path)  # a whole save: the journal starts again, nothing is lost
    assert not path.with_suffix(".journal").exists()
    assert load_state(path).collections["c"].limit == 220  # type: ignore[union-attr]


def test_a_journal_older_than_the_state_is_not_applied(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    state = RestoreState(source="a.tar.zst", database="shop")
    state.collections["c"] = CollectionState()
    state.save(path)
    state.collections["c"].acknowledged = 5
    state.note(path, "c")
    stale = path.with_suffix(".journal").read_bytes()
    state.collections["c"].status = "done"
    state.save(path)  # a crash before the old journal was removed leaves it beside
    path.with_suffix(".journal").write_bytes(stale + b'{"torn')
    reloaded = load_state(path)
    assert reloaded is not None and reloaded.collections["c"].status == "done"
