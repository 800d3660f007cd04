"""The CLI output convention, shared by every command.

With `--json`, stdout carries exactly one JSON object and everything else (progress, tables, logs) goes to
stderr; without it, tables and logs go to stdout. Exit status is 0 only on full success.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.text import Text


def console_for(json_mode: bool) -> Console:
    """Where human-readable output goes: stderr when stdout is reserved for the JSON object."""
    return Console(stderr=json_mode, highlight=False)


def emit_json(obj: dict[str, Any]) -> None:
    """Print the command's single JSON object on stdout."""
    sys.stdout.write(json.dumps(obj, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


class RateColumn(ProgressColumn):
    """Items per second (blank until rich has a speed estimate)."""

    def render(self, task) -> Text:
        return Text(f"{task.speed:.1f}/s" if task.speed else "", style="progress.data.speed")


def progress_bar(console: Console, *, transient: bool = True) -> Progress:
    """A progress bar with rate and ETA, drawn on the given console (stderr in JSON mode)."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    RateColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=console, transient=transient)
