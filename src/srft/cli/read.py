"""`srft ingest`: trajectory files in any supported format -> one sorted store."""

from __future__ import annotations

import typer

from srft.cli.common import JSON, finish


def ingest(
    paths: list[str] = typer.Argument(..., help="Trajectory files or folders (searched recursively)."),
    out: str = typer.Option(..., "--out", help="Output folder: trajectories.parquet + ingest_report.json."),
    outcomes: list[str] = typer.Option(None, "--outcomes", help="SWE-bench harness output (run summary, sb-cli "
                                       "report, report.json folder, OpenHands output.swebench_eval.md); repeatable."),
    exclude_instances: str = typer.Option(None, "--exclude-instances", help="File of instance ids to leave out "
                                          "(one per line or a JSON list), e.g. SWE-bench Verified (leakage guard)."),
    outcomes_override: bool = typer.Option(False, "--outcomes-override", help="Harness reports win over a "
                                           "resolved column in data-set rows (conflicts are reported either way)."),
    fmt: str = typer.Option(None, "--format", help="Force one reader for every trajectory file instead of "
                            "detecting it."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Exit 0 even when files or rows were skipped."),
    json_out: bool = JSON,
) -> None:
    """Read trajectories in any supported format, join harness outcomes, write one sorted store."""
    from srft.console import console_for, progress_bar
    from srft.formats.ingest import json_summary, print_summary, run_ingest

    console = console_for(json_out)
    with progress_bar(console) as bar:
        task = bar.add_task("ingest", total=None)
        result = run_ingest(paths, out, outcomes=outcomes or [], exclude_instances=exclude_instances,
                            outcomes_override=outcomes_override, fmt=fmt,
                            on_progress=lambda done, total, _: bar.update(task, completed=done, total=total))
    print_summary(result.report, out, console)
    finish(json_out, json_summary(result.report, out), result.ok(skip_bad))
