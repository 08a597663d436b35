"""A converter process: raw BSON batches in, Extended JSON member files out.

Why a process, and why a lower priority: the backup's reading thread must answer the
server the moment a batch arrives, or the server sits idle until the next getMore.
Converting in the same process holds the GIL for most of the run, and each time data
arrives the reader waits for it (up to the 5 ms switch interval; on the benchmark data a
0.2 ms interval alone took a backup from 25 s to 16-18 s). A child process has its own
GIL, so reading and converting overlap without touching interpreter-wide settings.

And when the backup runs on the database's own machine (common, and always so in our
benchmark), every CPU second of conversion is taken from the server: on the 2-core
benchmark machine a busy process beside it made the server's scan of ``orders`` 1.5-2.5x
as slow; the same process at niceness 19 cost it 10-20%. So the converter runs at
``niceness`` (default 10, option ``--nice``): it takes what the server leaves, and the
server sets the pace.

Protocol on the child's stdin (all integers little-endian): frames of one type byte,
a 4-byte length, and a payload.
- ``O`` open a member: payload is JSON ``{folder, file, compression, keep_plain,
  json_format, pretty, checkpoint, resume}``; ``checkpoint`` is where ``K`` writes the
  unit's progress, ``resume`` a :class:`~mongo_backup.backup.checkpoint.UnitProgress` (as a
  dict) to continue from. With ``resume`` the child answers ``{}`` once the files are
  cut back and their hash rebuilt; otherwise it does not answer.
- ``B`` a batch: payload is concatenated raw BSON documents.
- ``K`` checkpoint: payload is JSON ``{last_id}``, the ``_id`` of the last document of
  the batches sent so far. The child ends the zstd frame, flushes the files to disk and
  writes the unit's progress file. No answer, so the pipeline never stalls on it.
- ``C`` close the member: the child answers one JSON line on stdout,
  ``{"count", "bytes", "sha256", "escaped"}``.
- ``D`` discard the member (the export failed): its files are removed; answers ``{}``.
Any failure in the child is answered as ``{"error": "...", "os_error": bool}`` and the
child exits, leaving the files (a full disk must not cost the work done so far).
End of stdin ends the child.

Contract of :class:`ConverterProcess`: ``open``/``write``/``checkpoint``/``close``/
``discard`` mirror :class:`~mongo_backup.archive.writer.MemberWriter`; ``write`` blocks
while the child is busy (back-pressure: at most one batch waits in the pipe); errors
from the child are raised as :class:`MongoBackupError`, failures to write the output
as :class:`OutputError`. After any error the process is gone: make a new one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

from ..errors import MongoBackupError, OutputError
from .convert_child import PIPE_BYTES, MemberSpec

# The child needs only the converter's few modules (:mod:`.convert_child`). Importing the
# package normally would run its __init__, which pulls in pymongo and the whole library:
# 0.3 s of CPU for nothing. So the child registers the package without running __init__.
_BOOTSTRAP = """
import signal, sys, types
package = types.ModuleType("mongo_backup")
package.__path__ = [sys.argv[1]]
sys.modules["mongo_backup"] = package
from mongo_backup.backup.convert_child import main
main()
"""


class ConverterProcess:
    """The parent's handle on one converter child."""

    def __init__(self, niceness: int = 0) -> None:
        self._niceness = niceness
        self._spawn()

    def _spawn(self) -> None:
        package_dir = str(Path(__file__).resolve().parents[1])  # mongo_backup/
        self._child = subprocess.Popen(
            [sys.executable, "-c", _BOOTSTRAP, package_dir, str(self._niceness)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self._child.stdin is not None and self._child.stdout is not None
        _widen_pipe(self._child.stdin.fileno())
        self._in: IO[bytes] = self._child.stdin
        self._out: IO[bytes] = self._child.stdout

    def _send(self, kind: bytes, payload: bytes) -> None:
        try:
            self._in.write(kind + len(payload).to_bytes(4, "little"))
            self._in.write(payload)
        except BrokenPipeError:
            self._reply()  # raises the child's own error
            raise MongoBackupError("the converter process stopped") from None

    def _reply(self) -> dict[str, Any]:
        with contextlib.suppress(BrokenPipeError):
            self._in.flush()
        line = self._out.readline()
        if not line:
            raise MongoBackupError(
                f"the converter process stopped (exit code {self._child.wait()})"
            )
        try:
            reply = json.loads(line)
        except ValueError:
            raise MongoBackupError(f"the converter process stopped ({line!r:.200})") from None
        if "error" in reply:
            error = OutputError if reply.get("os_error") else MongoBackupError
            raise error(str(reply["error"]))
        return dict(reply)

    def open(self, spec: MemberSpec) -> None:
        self._send(b"O", json.dumps(spec).encode())
        if spec["resume"] is not None:
            self._reply()

    def write(self, batch: bytes) -> None:
        self._send(b"B", batch)

    def checkpoint(self, last_id: str | None) -> None:
        self._send(b"K", json.dumps({"last_id": last_id}).encode())

    def close(self) -> dict[str, Any]:
        self._send(b"C", b"")
        return self._reply()

    def discard(self) -> None:
        try:
            self._send(b"D", b"")
            self._reply()
        except MongoBackupError:
            pass

    def restart(self) -> None:
        """A fresh child in place of this one (after an error, the old one is gone)."""
        self.shutdown()
        self._spawn()

    def shutdown(self) -> None:
        with contextlib.suppress(OSError):
            self._in.close()
        try:
            self._child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._child.kill()
            self._child.wait()
        self._out.close()


def _widen_pipe(fd: int) -> None:
    """Let a whole batch fit in the pipe (Linux; 64 KiB by default): far fewer wake-ups
    and system calls on both sides. Where it cannot be done, the default works too."""
    with contextlib.suppress(OSError, AttributeError, ValueError):
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_BYTES)
