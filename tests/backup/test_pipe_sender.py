"""The thread that sends ``backup --archive -`` down the pipe: members in the order they
are handed over, the manifest last, and an abort that stops at once, even when the
reader takes nothing (pure: no server)."""

from __future__ import annotations

import io
import tarfile
import threading
import time
from pathlib import Path

from mongo_backup.backup.pipe_sender import PipeSender


class SlowOut(io.RawIOBase):
    """A reader that takes ``delay`` seconds for each write, or blocks until released."""

    def __init__(self, delay: float = 0.0, blocked: bool = False) -> None:
        self.data = bytearray()
        self.delay = delay
        self.release = threading.Event()
        if not blocked:
            self.release.set()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.release.wait()
        time.sleep(self.delay)
        self.data += data
        return len(data)


def members(folder: Path, count: int) -> list[str]:
    names = [f"c{i}.jsonl" for i in range(count)]
    for name in names:
        (folder / name).write_bytes(b'{"_id": 1}\n' * 100)
    return names


def test_members_go_in_the_order_handed_over_and_the_manifest_last(tmp_path: Path) -> None:
    out = SlowOut()
    sender = PipeSender(tmp_path, "none", [], b"{}", out=out)  # type: ignore[arg-type]
    for name in reversed(members(tmp_path, 3)):
        sender.send_member(name, 1100)
    sender.send_member("c2.jsonl", 1100)  # twice: sent once
    assert sender.finish(b'{"m": 1}') == len(out.data)
    with tarfile.open(fileobj=io.BytesIO(bytes(out.data))) as tar:
        names = tar.getnames()
    assert names == ["plan.json", "c2.jsonl", "c1.jsonl", "c0.jsonl", "manifest.json"]


def test_an_abort_sends_nothing_that_was_still_queued(tmp_path: Path) -> None:
    out = SlowOut(delay=0.05)
    sender = PipeSender(tmp_path, "none", [], b"{}", out=out)  # type: ignore[arg-type]
    for name in members(tmp_path, 20):
        sender.send_member(name, 1100)
    started = time.monotonic()
    sender.abort()
    assert time.monotonic() - started < 2
    assert len(out.data) < 20 * 1100  # most of the queue never went out
    assert b"manifest.json" not in out.data  # no end: the reader sees a cut stream


def test_an_abort_does_not_wait_for_a_reader_that_takes_nothing(tmp_path: Path) -> None:
    out = SlowOut(blocked=True)
    sender = PipeSender(tmp_path, "none", [], b"{}", out=out)  # type: ignore[arg-type]
    started = time.monotonic()
    sender.abort()
    assert time.monotonic() - started < 8  # bounded (5 s), then the backup goes on
    out.release.set()


def test_an_output_that_fails_at_an_encrypted_stream_s_last_write_is_a_failure(
    tmp_path: Path,
) -> None:
    # age (pyrage 1.4) drops the error of the last write it makes: the sender still
    # tells it, instead of reporting an archive that never left.
    import errno

    from pyrage import x25519

    from mongo_backup.errors import ArchiveError

    class Closed(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, data: bytes) -> int:  # type: ignore[override]
            raise OSError(errno.EIO, "Input/output error")  # EPIPE would redirect stdout

    recipient = x25519.Identity.generate().to_public()
    sender = PipeSender(tmp_path, "zstd", [recipient], b'{"plan": 1}', out=Closed())
    try:
        sender.finish(b'{"manifest": 1}')
    except ArchiveError as error:
        assert "Input/output error" in str(error)
    else:
        raise AssertionError("a broken pipe was reported as a written archive")
