"""The command line's progress bar: draws any domain function's ``on_progress`` callback."""

from __future__ import annotations

import contextlib
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Column

from wsireview.progress import ProgressCallback
from wsireview.text import literal


@contextlib.contextmanager
def progress_bar(console: Console, enabled: bool = True, transient: bool = False) -> Iterator[ProgressCallback]:
    """A bar, percentage, elapsed and remaining time, then what is running (last, so the bar
    stays put while the text changes; cut to one line on a narrow terminal)."""
    columns = (BarColumn(), TaskProgressColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
               TextColumn("{task.description}", table_column=Column(no_wrap=True, overflow="ellipsis")))
    with Progress(*columns, console=console, disable=not enabled, transient=transient) as display:
        tasks: list[TaskID] = []  # the bar appears with the first report: no empty bar when there is no work

        def show(what: str, fraction: float) -> None:
            what = literal(what)  # names from files are text, never markup or terminal escapes
            if not tasks:
                tasks.append(display.add_task(what, total=1.0))
            display.update(tasks[0], description=what, completed=fraction)

        yield show
