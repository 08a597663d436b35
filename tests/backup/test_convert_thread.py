"""The converter thread does the converter process's work with the same bytes, reports
its failures on the next call as the process does, and runs at a lower priority than
the threads that read (pure: no server)."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bson
import pytest

from mongo_backup.archive.extjson import accelerator
from mongo_backup.archive.writer import member_paths
from mongo_backup.backup.checkpoint import Layout
from mongo_backup.backup.convert_child import member_spec
from mongo_backup.backup.convert_thread import (
    BIG_DOCUMENT,
    ConverterThread,
    SizedConverter,
    _lower_priority,
    new_converter,
)
from mongo_backup.backup.convert_worker import ConverterProcess
from mongo_backup.errors import MongoBackupError, OutputError


def spec(folder: Path, file: str, compression: str = "zstd", keep_plain: bool = False) -> Any:
    layout = Layout(compress=compression, keep_folder=keep_plain)
    return member_spec(folder, file, layout)


def batch(start: int, count: int) -> bytes:
    return b"".join(
        bson.encode({"_id": i, "name": f"n{i}", "nested": {"a": [1, 2.5, "x"]}})
        for i in range(start, start + count)
    )


def convert(converter: Any, folder: Path, compression: str = "zstd") -> dict[str, Any]:
    try:
        converter.open(spec(folder, "c.jsonl", compression, True))
        for start in range(0, 3000, 1000):
            converter.write(batch(start, 1000))
        return dict(converter.close())
    finally:
        converter.shutdown()


@pytest.fixture
def converter() -> Iterator[ConverterThread]:
    thread = ConverterThread()
    try:
        yield thread
    finally:
        thread.shutdown()


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_the_thread_writes_what_the_process_writes(tmp_path: Path, compression: str) -> None:
    (tmp_path / "thread").mkdir()
    (tmp_path / "process").mkdir()
    by_thread = convert(ConverterThread(), tmp_path / "thread", compression)
    by_process = convert(ConverterProcess(), tmp_path / "process", compression)
    assert by_thread == by_process
    assert by_thread["count"] == 3000
    thread_files = sorted(p.name for p in (tmp_path / "thread").iterdir())
    assert thread_files == sorted(p.name for p in (tmp_path / "process").iterdir())
    plain = (tmp_path / "thread" / "c.jsonl").read_bytes()
    assert plain == (tmp_path / "process" / "c.jsonl").read_bytes()
    assert plain.count(b"\n") == 3000


def test_a_failure_is_raised_by_the_next_call_and_restart_recovers(
    tmp_path: Path, converter: ConverterThread
) -> None:
    converter.open(spec(tmp_path / "missing", "c.jsonl", "zstd", False))
    with pytest.raises(OutputError):  # the folder does not exist: a file error
        for _ in range(3):
            converter.write(batch(0, 10))
        converter.close()
    with pytest.raises(MongoBackupError):  # gone after the error, as the process
        converter.write(batch(0, 10))
    converter.discard()  # no error: there is nothing left to discard
    converter.restart()
    assert convert(converter, tmp_path)["count"] == 3000


def test_a_damaged_batch_fails_the_member_not_the_worker(
    tmp_path: Path, converter: ConverterThread
) -> None:
    converter.open(spec(tmp_path, "c.jsonl", "zstd", False))
    converter.write(b"\x05\x00\x00")  # a length prefix with no document
    with pytest.raises(MongoBackupError) as raised:
        converter.close()
    assert not isinstance(raised.value, OutputError)


def test_discard_removes_the_members_files(tmp_path: Path, converter: ConverterThread) -> None:
    converter.open(spec(tmp_path, "c.jsonl", "zstd", True))
    converter.write(batch(0, 100))
    converter.discard()
    assert not [p for p in member_paths(tmp_path, "c.jsonl", "zstd", True) if p.exists()]


def test_the_process_is_kept_where_the_conversion_needs_the_gil() -> None:
    canonical = Layout(compress="zstd", keep_folder=False)
    for layout, expected in [
        (canonical, SizedConverter if accelerator() is not None else ConverterProcess),
        (Layout(compress="zstd", keep_folder=False, json_format="relaxed"), ConverterProcess),
        (Layout(compress="zstd", keep_folder=False, pretty=True), ConverterProcess),
    ]:
        converter = new_converter(layout, 0)
        try:
            assert type(converter) is expected
        finally:
            converter.shutdown()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread niceness: Linux")
def test_only_the_converter_thread_is_niced() -> None:
    seen: dict[str, int] = {}

    def lowered() -> None:
        _lower_priority(5)
        seen["thread"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    before = os.getpriority(os.PRIO_PROCESS, 0)
    thread = threading.Thread(target=lowered)
    thread.start()
    thread.join()
    assert seen["thread"] == min(19, before + 5)
    assert os.getpriority(os.PRIO_PROCESS, 0) == before  # the process, this thread: as was


def big_batch(start: int, count: int) -> bytes:
    return b"".join(
        bson.encode({"_id": i, "blob": bson.Binary(os.urandom(BIG_DOCUMENT + 10))})
        for i in range(start, start + count)
    )


@pytest.mark.parametrize("big", [False, True])
def test_members_of_big_documents_go_to_a_process(tmp_path: Path, big: bool) -> None:
    """A thread's conversion shares the backup's memory: documents of a MiB and more are
    converted in a process instead, member by member, with the same bytes."""
    make = big_batch if big else batch
    batches = [make(0, 2), make(2, 2)]
    results = {}
    for kind, converter in [("sized", SizedConverter()), ("process", ConverterProcess())]:
        folder = tmp_path / kind
        folder.mkdir()
        try:
            converter.open(spec(folder, "c.jsonl", "zstd", True))
            for one in batches:
                converter.write(one)
            results[kind] = converter.close()
            if isinstance(converter, SizedConverter):
                assert (converter._process is not None) is big
                assert (converter._thread is not None) is not big
        finally:
            converter.shutdown()
        results[kind]["plain"] = (folder / "c.jsonl").read_bytes()
    assert results["sized"] == results["process"]


def test_an_empty_member_and_a_discarded_one_need_no_converter(tmp_path: Path) -> None:
    converter = SizedConverter()
    try:
        converter.open(spec(tmp_path, "empty.jsonl", "zstd", False))
        assert converter.close()["count"] == 0
        converter.open(spec(tmp_path, "gone.jsonl", "zstd", False))
        converter.discard()
        assert not (tmp_path / "gone.jsonl.zst").exists()
    finally:
        converter.shutdown()
