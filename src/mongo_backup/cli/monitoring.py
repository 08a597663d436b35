"""Backups someone can watch: ``--metrics-file`` and ``--on-success`` / ``--on-failure``.

The metrics file is in the Prometheus textfile-collector format (node_exporter's
``--collector.textfile.directory``), replaced atomically after every backup, failed ones
included, so a scrape never sees half a file. The time of the last success survives a
failure (it is read back from the previous file): the alert every backup needs is
``time() - mongo_backup_last_success_timestamp_seconds > 26 * 3600``.

A hook command runs through the shell with a JSON report on stdin (``event``,
``command``, ``database``, and the ``result`` or the ``error``), with
``MONGO_URI`` and ``MONGO_PASSWORD`` taken out of its environment: no credentials reach
it. A failing or slow hook (more than ``HOOK_TIMEOUT`` seconds) is a warning; it does not
change the backup's exit code.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..files import write_atomic
from ..redact import scrub_text

if TYPE_CHECKING:
    from ..backup.options import BackupResult
    from ..backup.watch import Cycle

logger = logging.getLogger(__name__)

HOOK_TIMEOUT = 60.0
PREFIX = "mongo_backup_"
_KEPT = ("last_success_timestamp_seconds", "last_failure_timestamp_seconds")
_HELP = {
    "last_success_timestamp_seconds": "Unix time the last successful backup finished.",
    "last_failure_timestamp_seconds": "Unix time the last failed backup ended (0: none yet).",
    "last_run_success": "1 if the last backup succeeded, 0 if it failed.",
    "last_duration_seconds": "Wall time of the last backup.",
    "last_documents": "Documents (or change events) in the last successful backup.",
    "last_bytes": "Uncompressed bytes of the members of the last successful backup.",
    "last_collection_documents": "Documents per collection in the last successful backup.",
    "chain_length": "Backups in the chain the last backup ends (1: a full backup).",
    "watch_lag_seconds": "Seconds between the end of the last closed increment's window "
    "and its closing (the recovery point of watch).",
}


def add_monitoring_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "monitoring", "so that someone notices when backups stop (see README: Monitoring)"
    )
    group.add_argument(
        "--metrics-file",
        type=Path,
        metavar="PATH",
        help="write Prometheus textfile-collector metrics there after every backup "
        "(last success and failure time, duration, documents, bytes, chain length)",
    )
    group.add_argument(
        "--on-success",
        metavar="CMD",
        help="run this shell command after a successful backup, the result as JSON on stdin",
    )
    group.add_argument(
        "--on-failure",
        metavar="CMD",
        help="run this shell command after a failed backup, the error as JSON on stdin",
    )


class Monitor:
    """Reports each backup of one command to the metrics file and the hooks."""

    def __init__(
        self,
        command: str,
        database: str,
        *,
        metrics_file: Path | None = None,
        on_success: str | None = None,
        on_failure: str | None = None,
        secrets: list[str] | None = None,
    ) -> None:
        self.command, self.database = command, database
        self.metrics_file, self.on_success, self.on_failure = metrics_file, on_success, on_failure
        self.secrets = secrets if secrets is not None else []
        self.started = time.time()

    @classmethod
    def from_args(cls, args: argparse.Namespace, command: str, database: str) -> Monitor:
        """The monitor the flags ask for; a metrics file that cannot be written is refused
        before any backup (ConfigError), not found out after one."""
        path = getattr(args, "metrics_file", None)
        if path is not None:
            folder = Path(path).parent
            if Path(path).is_dir() or not folder.is_dir() or not os.access(folder, os.W_OK):
                raise ConfigError(
                    f"--metrics-file {path}: not a file in a folder this user can write"
                )
        return cls(
            command,
            database,
            metrics_file=getattr(args, "metrics_file", None),
            on_success=getattr(args, "on_success", None),
            on_failure=getattr(args, "on_failure", None),
            secrets=getattr(args, "secrets", None),
        )

    def backup_done(
        self, result: BackupResult, chain_length: int | None = None, lag: float | None = None
    ) -> None:
        now = time.time()
        if not result.complete:
            self._failure(now, result.duration, {"result": result.to_json()})
            return
        manifest = result.manifest
        data = [e for e in manifest.collections if e.file is not None]
        values: dict[str, Any] = {
            "last_success_timestamp_seconds": now,
            "last_run_success": 1,
            "last_duration_seconds": result.duration,
            "last_documents": sum(e.count for e in data),
            "last_bytes": sum(e.bytes for e in data),
            "last_collection_documents": [({"collection": e.name}, e.count) for e in data],
            "chain_length": chain_length or (1 if manifest.kind == "full" else None),
            "watch_lag_seconds": lag,
        }
        self._write(values)
        self._hook(self.on_success, {"event": "success", "result": result.to_json()})

    def failed(self, error: BaseException, duration: float | None = None) -> None:
        said = str(error).strip()
        text = scrub_text(said.splitlines()[0] if said else "", self.secrets)
        took = time.time() - self.started if duration is None else duration
        self._failure(time.time(), took, {"error": text or type(error).__name__})

    def cycle(self, cycle: Cycle) -> None:
        """One backup of ``watch``."""
        if cycle.result is not None:
            self.backup_done(cycle.result, cycle.chain_length, cycle.lag)
        else:
            self._failure(time.time(), cycle.duration, {"error": cycle.error or "failed"})

    # -- the two outputs -------------------------------------------------------------------

    def _failure(self, now: float, duration: float, report: dict[str, Any]) -> None:
        self._write(
            {"last_failure_timestamp_seconds": now, "last_run_success": 0,
             "last_duration_seconds": duration}
        )  # fmt: skip
        self._hook(self.on_failure, {"event": "failure", **report})

    def _write(self, values: dict[str, Any]) -> None:
        if self.metrics_file is None:
            return
        previous = _read_kept(self.metrics_file)
        merged = {name: previous.get(name, 0) for name in _KEPT} | values
        try:
            # Readable by the collector (0644): the file holds no secret.
            text = render(merged, {"database": self.database})
            write_atomic(self.metrics_file, text.encode("utf-8"), mode=0o644)
        except OSError as error:
            logger.warning("cannot write the metrics file %s: %s", self.metrics_file, error)

    def _hook(self, command: str | None, report: dict[str, Any]) -> None:
        if not command:
            return
        payload = {"command": self.command, "database": self.database, **report}
        text = scrub_text(json.dumps(payload, ensure_ascii=False, default=str), self.secrets)
        environment = {
            k: v for k, v in os.environ.items() if k not in ("MONGO_URI", "MONGO_PASSWORD")
        }
        try:
            done = subprocess.run(
                command, shell=True, input=text.encode(), env=environment,
                timeout=HOOK_TIMEOUT, capture_output=True, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            logger.warning("the %s hook ran past %g s: stopped", report["event"], HOOK_TIMEOUT)
            return
        except OSError as error:
            logger.warning("cannot run the %s hook: %s", report["event"], error)
            return
        if done.returncode:
            said = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
            logger.warning(
                "the %s hook exited with %d %s",
                report["event"],
                done.returncode,
                scrub_text(said[0][:200], self.secrets),
            )


def render(values: dict[str, Any], labels: dict[str, str]) -> str:
    """The metrics in the text exposition format; a None value is left out."""
    lines: list[str] = []
    for name, value in values.items():
        if value is None:
            continue
        metric = PREFIX + name
        lines += [f"# HELP {metric} {_HELP[name]}", f"# TYPE {metric} gauge"]
        samples = value if isinstance(value, list) else [({}, value)]
        for extra, number in samples:
            pairs = ",".join(f'{k}="{_escape(v)}"' for k, v in (labels | extra).items())
            lines.append(f"{metric}{{{pairs}}} {float(number)!r}")
    return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


_SAMPLE = re.compile(r"^" + PREFIX + r"(\w+)\{[^}]*\} (\S+)$")


def _read_kept(path: Path) -> dict[str, float]:
    """The times the previous file held (a failure keeps the last success's)."""
    kept: dict[str, float] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return kept
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match and match.group(1) in _KEPT:
            try:
                kept[match.group(1)] = float(match.group(2))
            except ValueError:
                continue
    return kept
