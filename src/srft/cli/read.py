"""`srft ingest`: trajectory files in any supported format -> one sorted store."""

from __future__ import annotations

import typer

from srft.cli.common import JSON


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
    import os

    from srft.console import console_for, emit_json, progress_bar, say, table
    from srft.formats.ingest import SUMMARY_KEYS, run_ingest

    console = console_for(json_out)
    with progress_bar(console) as bar:
        task = bar.add_task("ingest", total=None)
        result = run_ingest(paths, out, outcomes=outcomes or [], exclude_instances=exclude_instances,
                            outcomes_override=outcomes_override, fmt=fmt,
                            on_progress=lambda done, total, _: bar.update(task, completed=done, total=total))
    report = result.report
    columns = ("trajectories", "resolved", "unresolved", "unknown", "steps", "skipped")
    rows = [[name, *(row[c] for c in columns)] for name, row in report["by_format"].items()]
    total = ["total", *(report[c] for c in columns)]
    console.print(table(f"srft ingest -> {out}", ("format", *columns), rows, total=total))
    for bad in report["bad"][:20]:
        where = bad["path"] + ("" if bad["row"] is None else f":{bad['row']}")
        say(console, f"skipped {where}: {bad['reason']}", "yellow")
    if len(report["bad"]) > 20:
        say(console, f"... and {len(report['bad']) - 20} more skipped (see ingest_report.json)")
    if report["trajectories"] == 0:
        say(console, "no trajectories were ingested", "red")
    companions = ", ".join(f"{v['count']} {k}" for k, v in report["companions"].items())
    say(console, f"excluded {report['excluded']}, duplicates {report['duplicates']}, outcome conflicts "
        f"{report['outcomes']['conflicts']}, outcome sources {len(report['outcome_sources'])}"
        + (f", companions: {companions}" if companions else ""))
    if json_out:
        emit_json({**{k: report[k] for k in SUMMARY_KEYS}, "by_format": report["by_format"], "bad": report["bad"],
                   "conflicts": report["outcomes"]["conflicts"], "out": out,
                   "report": os.path.join(out, "ingest_report.json")})
    if not result.ok(skip_bad):
        raise typer.Exit(1)
