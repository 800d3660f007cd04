"""How a run shows its progress: `srft.run.runner.Hooks` for a terminal (a rich display) or a plain log."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from srft.run.runner import Hooks, Node, NodeResult


class RichHooks(Hooks):
    """One rich progress display across all nodes: an overall bar, the running node's own bar, and one line per
    node as it finishes (printed above the bars, so a log of the run remains in the terminal)."""

    def __init__(self, console: Any, total: int):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, \
            TimeElapsedColumn

        self.console = console
        self.bar = Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
                            MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[note]}"),
                            console=console, transient=True)
        self.overall = self.bar.add_task("srft run", total=total, note="")
        self.running: dict[str, Any] = {}  # node key -> its bar (several with run.workers > 1)

    def __enter__(self) -> RichHooks:
        self.bar.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.stop()

    def start(self, node: Node, reason: str) -> None:
        self.running[node.key] = self.bar.add_task(node.key, total=None, note=reason)

    def progress(self, node: Node, completed: float | None, total: float | None, note: str | None) -> None:
        if node.key in self.running:
            self.bar.update(self.running[node.key], completed=completed, total=total,
                            **({"note": note} if note else {}))

    def finish(self, result: NodeResult) -> None:
        if result.key in self.running:
            self.bar.remove_task(self.running.pop(result.key))
        self.bar.advance(self.overall)
        mark, style = {"ran": ("ran ", "green"), "skipped": ("skip", "dim"), "failed": ("FAIL", "red"),
                       "blocked": ("blkd", "yellow")}[result.status]
        detail = result.error or ", ".join(f"{k}={_short(v)}" for k, v in list(result.summary.items())[:6])
        took = f" {result.seconds:.1f}s" if result.status == "ran" else ""
        self.console.print(f"{mark} {result.key:<28}{took}  ({result.reason}) {detail}", style=style,
                           markup=False, highlight=False, soft_wrap=True)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= 60 else text[:57] + "..."


class LineHooks(Hooks):
    """One plain line per finished node, to a callable (e.g. a logger or `print`)."""

    def __init__(self, write: Callable[[str], None]):
        self.write = write

    def finish(self, result: NodeResult) -> None:
        took = f" in {result.seconds:.1f} s" if result.status == "ran" else ""
        self.write(f"{result.key}: {result.status}{took} ({result.error or result.reason})")
