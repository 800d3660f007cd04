"""`srft compare`: paired statistics over harness outputs."""

from __future__ import annotations

import typer

from srft.cli.common import JSON, finish


def compare(
    inputs: list[str] = typer.Argument(None, help="Outcome files/dirs; each run in them becomes a system named after "
                                       "it (a table: each column)."),
    system: list[str] = typer.Option(None, "--system", "-s", help="NAME=PATH[,PATH...]: several paths = several "
                                     "runs. PATH may be TABLE.csv:COLUMN (an fnmatch pattern picks several)."),
    instances: str = typer.Option(None, "--instances", help="Denominator: file of instance ids (one per line, or a "
                                  "JSON list); ids a run lacks count as unresolved."),
    common: bool = typer.Option(False, "--common", help="Compare on the instances every run reports."),
    only: list[str] = typer.Option(None, "--only", help="Keep instances whose id or repository matches this fnmatch "
                                   "pattern, e.g. 'django__*' or django/django (repeatable)."),
    only_instances: str = typer.Option(None, "--only-instances", help="Keep only the instance ids listed in this "
                                       "file (same formats as --instances)."),
    baseline: str = typer.Option(None, "--baseline", help="Compare every system against this one (default: all "
                                 "pairs)."),
    two_level: bool = typer.Option(False, "--two-level", help="Also resample runs (seeds) in the bootstrap."),
    cluster: str = typer.Option("none", "--cluster", help="'repo': cluster bootstrap by repository."),
    cluster_ci: str = typer.Option("bootstrap", "--cluster-ci", help="With --cluster repo: 'bootstrap' "
                                   "(percentile), 'wild' (wild cluster bootstrap-t, for few clusters) or 'cr2'."),
    n_boot: int = typer.Option(10_000, "--n-boot", help="Bootstrap resamples."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed (same seed, same result)."),
    confidence: float = typer.Option(0.95, "--confidence", help="CI coverage."),
    markdown: bool = typer.Option(False, "--markdown", help="Print markdown tables instead of the rich table."),
    plot: str = typer.Option(None, "--plot", help="Write a forest plot PNG here."),
    out: str = typer.Option(None, "--out", help="Also write the JSON result to this file."),
    json_out: bool = JSON,
) -> None:
    """Paired statistics: resolve rates, paired CIs, p-values that match the design, MDE."""
    from srft.compare import harness, render
    from srft.console import console_for
    from srft.io import atomic_write_json

    result = harness.run_compare(harness.parse_systems(system or []), inputs=inputs or [], instances=instances,
                                 common=common, only_instances=only_instances, only=only or [],
                                 baseline=baseline, two_level=two_level, cluster=cluster, cluster_ci=cluster_ci,
                                 n_boot=n_boot, seed=seed, confidence=confidence)
    if plot:
        result["plot"] = str(render.plot_forest(result, plot))
    if out:
        atomic_write_json(out, result)
    render.show(result, console_for(json_out), markdown=markdown, json_mode=json_out)
    finish(json_out, result)
