"""Logging for the CLI: stderr only, text or JSON, every line scrubbed of secrets.

Only the CLI configures logging (the library adds no handlers). The scrubbing formatter
is the last line of defence: whatever a driver exception or traceback contains, the
known secrets and any ``user:password@`` in a URI are replaced before a byte is written.
"""

from __future__ import annotations

import json
import logging
import sys

from ..redact import scrub_text


class ScrubbingFormatter(logging.Formatter):
    def __init__(self, secrets: list[str], as_json: bool, show_tracebacks: bool) -> None:
        super().__init__("%(asctime)s %(levelname)s %(message)s")
        self.secrets = secrets
        self.as_json = as_json
        self.show_tracebacks = show_tracebacks

    def format(self, record: logging.LogRecord) -> str:
        message = scrub_text(record.getMessage(), self.secrets)
        trace = ""
        if record.exc_info and self.show_tracebacks:
            trace = scrub_text(self.formatException(record.exc_info), self.secrets)
        if self.as_json:
            data = {
                "time": self.formatTime(record),
                "level": record.levelname.lower(),
                "logger": record.name,
                "message": message,
            }
            if trace:
                data["traceback"] = trace
            return json.dumps(data, ensure_ascii=False)
        line = f"{self.formatTime(record)} {record.levelname} {message}"
        return f"{line}\n{trace}" if trace else line


class CurrentStderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time of the record.

    While progress bars are drawn, rich replaces ``sys.stderr`` so that log lines appear
    above the bars instead of tearing through them; a handler that kept the stream it
    was created with would bypass that.
    """

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def configure_logging(verbosity: int, log_format: str, secrets: list[str]) -> ScrubbingFormatter:
    """verbosity: -1 quiet (warnings), 0 INFO, 1+ DEBUG with tracebacks."""
    level = logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO
    handler = CurrentStderrHandler()
    # Collection failures are logged with their traceback, as the seed script does;
    # tracebacks of fatal errors show only with -v.
    formatter = ScrubbingFormatter(secrets, log_format == "json", show_tracebacks=True)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("mongo_backup").setLevel(level)
    return formatter
