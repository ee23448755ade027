"""Console output shared by every command: one rich console, one progress-bar style."""

from __future__ import annotations

import os
import sys
import threading
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class _Console(Console):
    """rich's console, with three habits of the project's lines. Without a terminal (a log, CI, `| tee`) a line is
    not wrapped: rich wrapped at 80 columns there and split the commands a line tells the user to paste. A line
    that starts with the "[alignlab]" prefix keeps it (rich read it as a style tag and dropped it). And a line that
    starts with "interrupted" (each command's own after Ctrl-C: what was kept, how to go on) is remembered, so the
    entry point adds no bare "interrupted" after it."""

    said_interrupted = False

    def print(self, *objects, **kwargs) -> None:
        first = objects[0] if objects and isinstance(objects[0], str) else ""
        if first.startswith(("[yellow]interrupted[/]", "interrupted")):
            self.said_interrupted = True
        if first.startswith("[alignlab]") and kwargs.get("markup", self._markup) is not False:
            objects = ("\\" + first, *objects[1:])
        if not self.is_terminal and kwargs.get("soft_wrap") is None and all(isinstance(o, str) for o in objects):
            kwargs["soft_wrap"] = True  # tables and other renderables keep their layout
        super().print(*objects, **kwargs)


console = _Console(stderr=True, highlight=False)


def quiet() -> bool:
    return os.environ.get("ALIGNLAB_QUIET") == "1"


class Terminated(KeyboardInterrupt):
    """SIGTERM (kill, a timeout, a scheduler's preemption) raised where a command stops cleanly on Ctrl-C (training
    marks its run, synth writes its pairs); the entry point then exits 143, as a process SIGTERM ends does."""


_terminated = threading.Event()


def terminated() -> bool:
    """Whether a SIGTERM stopped this command (:func:`sigterm_as_ctrl_c`)."""
    return _terminated.is_set()


def new_command() -> None:
    """Forget the last command's stop (no line said, no SIGTERM): main() runs many commands in one process in tests."""
    console.said_interrupted = False
    _terminated.clear()


@contextmanager
def sigterm_as_ctrl_c():
    """Within it, SIGTERM raises :class:`Terminated` (a KeyboardInterrupt), so the Ctrl-C path cleans up; left to
    its default it ended the process at once, a synth's kept pairs unwritten and a run left 'running'."""
    import signal

    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return

    def stop(signum, frame):
        _terminated.set()
        raise Terminated

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class LogProgress(Progress):
    """Without a terminal (a log file, CI, `| tee`): no live bar, which rich cannot draw there, but one plain line per
    task when it starts, every ``interval`` seconds and when it ends, so a long step does not look hung. Once
    started, a beat says each unfinished task every ``interval`` even when it does not advance (one batch of a
    scorecard's answers: minutes on a CPU)."""

    def __init__(self, *args, interval: float = 30.0, **kwargs):
        super().__init__(*args, **{**kwargs, "disable": True})
        self.interval, self._said, self._beat = interval, {}, None

    def _say(self, task_id, force: bool = False) -> None:
        import time

        with self._lock:  # the beat's thread and the command's
            task = self._tasks.get(task_id)
            now = time.monotonic()
            if task is None or not force and now - self._said.get(task_id, 0.0) < self.interval and not task.finished:
                return
            self._said[task_id] = now
        head = task.description
        if task.total or task.completed:  # a step with no count (working()) says its time alone
            head += f": {task.completed:g}" + (f"/{task.total:g}" if task.total else "")
        extra = ", ".join(f"{k} {v}" for k, v in task.fields.items() if v not in ("", None, "-"))
        left = f", about {task.time_remaining:.0f} s left" if task.time_remaining else ""
        console.print(f"{head} ({task.elapsed or 0:.0f} s{left}){' ' + extra if extra else ''}", soft_wrap=True)

    def start(self) -> None:
        super().start()
        if self._beat is None and self.interval > 0:  # an interval of 0 says every change already
            import weakref

            stopped = threading.Event()
            # by a weak reference: a bar its owner never stopped (training that raised) goes quiet once collected
            thread = threading.Thread(target=LogProgress._beats, args=(weakref.ref(self), stopped), daemon=True,
                                      name="alignlab-progress")
            self._beat = (stopped, thread)
            thread.start()

    def stop(self) -> None:
        if self._beat is not None:
            stopped, thread = self._beat
            self._beat = None
            stopped.set()
            thread.join(timeout=1.0)  # no line of a stopped bar after the command's next one
        super().stop()

    @staticmethod
    def _beats(ref, stopped: threading.Event) -> None:
        while (bar := ref()) is not None:
            period = min(bar.interval, 1.0)
            del bar  # not held while waiting
            if stopped.wait(period) or (bar := ref()) is None:
                return
            with bar._lock:  # noqa: SLF001 - its own class's
                waiting = [task_id for task_id, task in bar._tasks.items() if not task.finished]  # noqa: SLF001
            for task_id in waiting:
                if not stopped.is_set():
                    bar._say(task_id)  # noqa: SLF001
            del bar

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


def progress_bar(*extra_columns, counted: bool = True) -> Progress:
    """A progress bar with step counter, elapsed and remaining time; extra columns go before the times. Without a
    terminal, :class:`LogProgress`'s plain lines instead. ``counted=False``: a step with no count (:func:`working`),
    the bar and the elapsed time alone ("0/? ... eta" said nothing)."""
    if not sys.stderr.isatty() and not quiet():
        return LogProgress(console=console)
    counts = (MofNCompleteColumn(), *extra_columns) if counted else ()
    remaining = (TextColumn("eta"), TimeRemainingColumn()) if counted else ()
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        *counts,
        TimeElapsedColumn(),
        *remaining,
        console=console,
        disable=quiet(),
        transient=not sys.stderr.isatty(),
    )


@contextmanager
def working(label: str, doing: str):
    """A long step that reports no progress of its own (a scorecard answers every prompt in one batch): on a terminal
    a pulsing bar with the elapsed time, in a log a line every 30 s, so it does not look hung. Shown as "label:
    doing"; yields ``note(text)``, which says what it does now instead."""
    with progress_bar(counted=False) as bar:
        task = bar.add_task(f"{label}: {doing}", total=None)
        try:
            yield lambda text: bar.update(task, description=f"{label}: {text}")
        finally:
            bar.remove_task(task)  # the command's own result line follows; a finished pulse would stay on screen
