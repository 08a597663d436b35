"""The converter child's side of :mod:`.convert_worker` (the protocol is described there):
raw BSON batches in on stdin, member files written, one JSON line answered on stdout.

Kept apart from the parent's side so that the child imports only what converting needs
(libbson, zstandard, hashlib): each backup starts one child per export worker, and every
module it loads is CPU taken from the server on a small machine (pymongo's ``bson``, the
manifest's dataclasses and ``subprocess`` were two thirds of a child's 0.06-0.08 s start).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import IO, Any, TypedDict

from ..allocator import return_big_blocks_to_the_system
from ..archive.extjson import BatchEncoder
from ..archive.writer import MemberWriter
from ..names import JsonFormat

_HEADER = 5  # type byte + 4-byte little-endian length
PIPE_BYTES = 1 << 20


def _read_exact(stream: IO[bytes], size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise EOFError
    return data


class MemberSpec(TypedDict):
    """What a converter needs to open a member (the ``O`` frame's JSON)."""

    folder: str
    file: str
    compression: str
    keep_plain: bool
    json_format: JsonFormat
    pretty: bool
    checkpoint: str | None  # where ``K`` writes the unit's progress
    resume: dict[str, Any] | None  # a UnitProgress (as a dict) to continue from


def member_spec(
    folder: Path,
    file: str,
    layout: Any,
    checkpoint: Path | None = None,
    resume: dict[str, Any] | None = None,
) -> MemberSpec:
    """The spec of member ``file`` in ``folder``, shaped by ``layout`` (a plan's
    ``Layout``: compress, keep_folder, json_format, pretty)."""
    return MemberSpec(
        folder=str(folder),
        file=file,
        compression=layout.compress,
        keep_plain=layout.keep_folder,
        json_format=layout.json_format,
        pretty=layout.pretty,
        checkpoint=str(checkpoint) if checkpoint else None,
        resume=resume,
    )


class MemberConversion:
    """One member at a time: raw BSON batches to its files, with its count and escapes.
    The operations of the protocol (see :mod:`.convert_worker`), for the child's loop
    and for :class:`~mongo_backup.backup.convert_thread.ConverterThread`."""

    def __init__(self) -> None:
        self.writer: MemberWriter | None = None
        self.encoder = BatchEncoder()
        self.count = 0
        self.progress_path: Path | None = None

    def open(self, spec: MemberSpec) -> None:
        resume, checkpoint = spec["resume"], spec["checkpoint"]
        self.encoder = BatchEncoder(spec["json_format"], spec["pretty"])
        self.encoder.escaped = resume["escaped"] if resume else 0
        self.count = resume["count"] if resume else 0
        self.progress_path = Path(checkpoint) if checkpoint else None
        self.writer = MemberWriter(
            Path(spec["folder"]),
            spec["file"],
            spec["compression"],
            spec["keep_plain"],
            resume=resume,
        )

    def write(self, batch: bytes) -> None:
        assert self.writer is not None
        text, documents = self.encoder.encode(batch)
        self.writer.write(text)
        self.count += documents

    def checkpoint(self, last_id: str | None) -> None:
        assert self.writer is not None and self.progress_path is not None
        # Only a long collection reaches a checkpoint: its dataclasses are not worth
        # loading in every child.
        from .checkpoint import UnitProgress, save_unit_progress

        state = self.writer.checkpoint()
        progress = UnitProgress(
            last_id=last_id, count=self.count, escaped=self.encoder.escaped, **state
        )
        save_unit_progress(self.progress_path, progress)

    def close(self) -> dict[str, Any]:
        assert self.writer is not None
        writer, self.writer = self.writer, None
        writer.close()
        return {
            "count": self.count,
            "bytes": writer.bytes,
            "sha256": writer.sha256,
            "escaped": self.encoder.escaped,
        }

    def discard(self) -> None:
        if self.writer is not None:
            self.writer.discard()
        self.writer = None

    def abandon(self) -> None:
        """After a failure: the files closed and kept (a process's exit does as much)."""
        if self.writer is not None:
            self.writer.abandon()
        self.writer = None


def error_reply(error: Exception) -> dict[str, Any]:
    """How a failure is reported to the parent (which raises it)."""
    if isinstance(error, OSError):
        return {"error": f"{error.strerror or error}", "os_error": True}
    return {"error": f"{type(error).__name__}: {error}"}


def serve(stdin: IO[bytes], stdout: IO[bytes]) -> None:
    """The child's loop (see the module doc for the protocol)."""
    member = MemberConversion()

    def answer(data: dict[str, Any]) -> None:
        stdout.write(json.dumps(data).encode() + b"\n")
        stdout.flush()

    while True:
        header = stdin.read(_HEADER)
        if len(header) < _HEADER:
            return
        kind, size = header[:1], int.from_bytes(header[1:], "little")
        payload = _read_exact(stdin, size) if size else b""
        try:
            if kind == b"O":
                spec = json.loads(payload)
                member.open(spec)
                if spec.get("resume"):
                    answer({})
            elif kind == b"B":
                member.write(payload)
            elif kind == b"K":
                member.checkpoint(json.loads(payload)["last_id"])
            elif kind == b"C":
                answer(member.close())
            elif kind == b"D":
                member.discard()
                answer({})
        except Exception as error:
            # The files stay: after a full disk the parent keeps them for --resume, and
            # for any other failure it discards them itself.
            answer(error_reply(error))
            return


def main() -> None:
    # Ctrl-C reaches the whole process group; the parent decides what happens, and
    # closing our stdin is how it tells us to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return_big_blocks_to_the_system()
    niceness = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    if niceness > 0:
        with contextlib.suppress(OSError):
            os.nice(niceness)
    serve(sys.stdin.buffer, sys.stdout.buffer)
