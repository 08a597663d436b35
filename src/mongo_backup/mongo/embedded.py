"""An embedded SecantusDB server, started as its own process.

The demo, the test suite and the benchmark all need a real MongoDB-wire server that a
fresh machine can install from PyPI. SecantusDB (``secantusd-py``) is one; this module
starts it on a free loopback port with a temporary store and stops it again.

Contract: ``EmbeddedServer.start()`` returns only once the server answers ``ping``;
``stop()`` terminates the process and removes the temporary store it created. Use it as
a context manager.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

from ..errors import EmbeddedServerError

SERVER_COMMAND = "secantusd-py"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server_executable() -> str:
    # Prefer the script installed beside this interpreter (the project's venv), so that
    # the server and the client come from the same environment even when PATH differs.
    beside = Path(sys.executable).with_name(SERVER_COMMAND)
    if beside.exists():
        return str(beside)
    found = shutil.which(SERVER_COMMAND)
    if found is None:
        raise EmbeddedServerError(
            f"{SERVER_COMMAND} not found: install the demo extra (pip install 'mongo-backup[demo]')"
        )
    return found


class EmbeddedServer:
    """One ``secantusd-py`` process on a free port with a temporary store."""

    def __init__(
        self,
        *,
        extra_args: list[str] | None = None,
        storage_path: str | None = None,
        port: int | None = None,
        startup_timeout: float = 60.0,
        log_path: str | None = None,
    ) -> None:
        self.extra_args = list(extra_args or [])
        # A temporary home holds the store and the server's log; stop() removes it.
        self._home = tempfile.mkdtemp(prefix="secantus-")
        self.storage_path = storage_path or os.path.join(self._home, "data")
        self.port = port or free_port()
        self.startup_timeout = startup_timeout
        self.log_path = log_path or os.path.join(self._home, "server.log")
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: object | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def start(self) -> EmbeddedServer:
        command = [
            _server_executable(),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--storage-path",
            self.storage_path,
            "--log-level",
            "WARNING",
            *self.extra_args,
        ]
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop() or kill()
        self._log_file = log
        self._process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        self._wait_until_listening()
        return self

    def _wait_until_listening(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        assert self._process is not None
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise EmbeddedServerError(
                    f"{SERVER_COMMAND} exited with code {self._process.returncode}: "
                    f"{self._log_tail()}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise EmbeddedServerError(
            f"{SERVER_COMMAND} did not listen on port {self.port} "
            f"within {self.startup_timeout:.0f} s"
        )

    def _log_tail(self) -> str:
        try:
            with open(self.log_path, "rb") as log:
                lines = log.read().decode("utf-8", "replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return lines[-1] if lines else "(empty log)"

    def kill(self) -> None:
        """SIGKILL the server, as a crash would: the store stays, and ``start()`` runs a
        new process on it (same port). For fault tests and the chaos campaign."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        log, self._log_file = self._log_file, None
        if log is not None:
            log.close()  # type: ignore[attr-defined]

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log = self._log_file
        self._log_file = None
        if log is not None:
            log.close()  # type: ignore[attr-defined]
        shutil.rmtree(self._home, ignore_errors=True)

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
