"""The CLI output convention, shared by every command.

With `--json`, stdout carries exactly one JSON object and everything else (progress, tables, logs) goes to
stderr; without it, tables and logs go to stdout. Errors always go to stderr (`print_error`). Exit status is 0
only on full success.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TextIO

from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text


def console_for(json_mode: bool) -> Console:
    """Where human-readable output goes: stderr when stdout is reserved for the JSON object."""
    return Console(stderr=json_mode, highlight=False)


_json_stream: TextIO | None = None  # the real stdout while `reserve_stdout` diverts everything else


def emit_json(obj: dict[str, Any]) -> None:
    """Print the command's single JSON object on stdout."""
    stream = _json_stream or sys.stdout
    stream.write(json.dumps(obj, sort_keys=True, default=str) + "\n")
    stream.flush()


@contextlib.contextmanager
def reserve_stdout() -> Iterator[None]:
    """Keep stdout for the one JSON object: while a `--json` command runs, anything else written to stdout (a
    library's log line, e.g. an accelerator notice printed at import) goes to stderr."""
    global _json_stream
    _json_stream, sys.stdout = sys.stdout, sys.stderr
    try:
        yield
    finally:
        sys.stdout, _json_stream = _json_stream, None


def say(console: Console, text: str, style: str | None = None) -> None:
    """One plain line (no rich markup or highlighting: paths and ids print as they are)."""
    console.print(text, style=style, markup=False, highlight=False, soft_wrap=True)


def print_error(message: str) -> None:
    """The one `error: ...` line of a failed command, always on stderr."""
    say(Console(stderr=True, highlight=False), f"error: {message}", style="red")


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]],
          total: Sequence[Any] | None = None) -> Table:
    """A plain summary table: the first column left-aligned, the others right-aligned; `total` in bold."""
    out = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False, collapse_padding=True,
                show_header=bool(columns[0]))
    for i, name in enumerate(columns):
        out.add_column(name, justify="left" if i == 0 else "right", no_wrap=True, min_width=len(name))
    for row in rows:
        out.add_row(*(str(x) for x in row))
    if total is not None:
        out.add_row(*(str(x) for x in total), style="bold")
    return out


class RateColumn(ProgressColumn):
    """Items per second (blank until rich has a speed estimate)."""

    def render(self, task) -> Text:
        return Text(f"{task.speed:.1f}/s" if task.speed else "", style="progress.data.speed")


def progress_bar(console: Console, *, transient: bool = True) -> Progress:
    """A progress bar with rate and ETA, drawn on the given console (stderr in JSON mode)."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    RateColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=console, transient=transient)
