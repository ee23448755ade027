"""Console output shared by every command: one rich console, one progress-bar style."""

from __future__ import annotations

import os
import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True, highlight=False)


def quiet() -> bool:
    return os.environ.get("ALIGNLAB_QUIET") == "1"


class LogProgress(Progress):
    """Without a terminal (a log file, CI, `| tee`): no live bar, which rich cannot draw there, but one plain line per
    task when it starts, every ``interval`` seconds and when it ends, so a long step does not look hung."""

    def __init__(self, *args, interval: float = 30.0, **kwargs):
        super().__init__(*args, **{**kwargs, "disable": True})
        self.interval, self._said = interval, {}

    def _say(self, task_id, force: bool = False) -> None:
        import time

        task = self._tasks[task_id]
        now = time.monotonic()
        if not force and now - self._said.get(task_id, 0.0) < self.interval and not task.finished:
            return
        self._said[task_id] = now
        done = f"{task.completed:g}" + (f"/{task.total:g}" if task.total else "")
        extra = ", ".join(f"{k} {v}" for k, v in task.fields.items() if v not in ("", None, "-"))
        left = f", about {task.time_remaining:.0f} s left" if task.time_remaining else ""
        console.print(f"{task.description}: {done} ({task.elapsed or 0:.0f} s{left}){' ' + extra if extra else ''}",
                      soft_wrap=True)

    def add_task(self, *args, **kwargs):
        task_id = super().add_task(*args, **kwargs)
        self._say(task_id, force=True)
        return task_id

    def update(self, task_id, **kwargs) -> None:
        super().update(task_id, **kwargs)
        self._say(task_id)

    def advance(self, task_id, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._say(task_id)


def progress_bar(*extra_columns) -> Progress:
    """A progress bar with step counter, elapsed and remaining time; extra columns go before the times. Without a
    terminal, :class:`LogProgress`'s plain lines instead."""
    if not sys.stderr.isatty() and not quiet():
        return LogProgress(console=console)
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *extra_columns,
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        disable=quiet(),
        transient=not sys.stderr.isatty(),
    )
