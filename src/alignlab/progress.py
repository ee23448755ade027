"""Console output shared by every command: one rich console, one progress-bar style."""

from __future__ import annotations

import os
import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True, highlight=False)


def quiet() -> bool:
    return os.environ.get("ALIGNLAB_QUIET") == "1"


def progress_bar(*extra_columns) -> Progress:
    """A progress bar with step counter, elapsed and remaining time; extra columns go before the times."""
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
