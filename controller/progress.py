"""A progress bar on the terminal (rich, on stderr) for the long commands: benchmarks, replay.

Nothing is drawn where stderr is not a terminal (a log file, CI): the commands print only their tables.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager


@contextmanager
def progress_bar(description: str, total: int, enabled: bool | None = None):
    """Yields advance(n=1). Drawn only on a terminal unless `enabled` says otherwise."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    enabled = sys.stderr.isatty() if enabled is None else enabled
    with Progress(
        TextColumn("{task.description:<40}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
        transient=False,
    ) as bar:
        task = bar.add_task(description, total=max(total, 1))
        yield lambda n=1: bar.advance(task, n)
