"""Progress bars on a TTY (rich, on stderr); nothing at all otherwise."""

from __future__ import annotations

import sys
from typing import Any

from ..backup.run import NoProgress


class RichProgress:
    """One bar per collection: documents, documents/s, ETA from the estimated count."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TaskProgressColumn,
            TextColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichBar

        self._bar = RichBar(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TaskProgressColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> RichProgress:
        self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()

    def start(self, name: str, total: int) -> None:
        self._tasks[name] = self._bar.add_task(name[:40], total=max(total, 1), rate="")

    def advance(self, name: str, documents: int) -> None:
        task_id = self._tasks[name]
        self._bar.advance(task_id, documents)
        speed = self._bar.tasks[task_id].speed or 0
        self._bar.update(task_id, rate=f"{speed:,.0f} docs/s")

    def finish(self, name: str) -> None:
        task_id = self._tasks[name]
        task = self._bar.tasks[task_id]
        self._bar.update(task_id, total=max(task.completed, 1), completed=max(task.completed, 1))


class _Silent(NoProgress):
    def __enter__(self) -> _Silent:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def progress_for(quiet: bool) -> RichProgress | _Silent:
    """A context manager that is also a :class:`Progress`: bars only on a TTY."""
    if quiet or not sys.stderr.isatty():
        return _Silent()
    return RichProgress()
