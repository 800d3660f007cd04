"""The whole pipeline: `srft run RECIPE` and `srft lab` (the CPU-sized environment with known step labels)."""

from __future__ import annotations

import typer

from srft.cli.common import JSON, finish


def run(
    recipe: str = typer.Argument(..., help="Recipe YAML (see recipes/ and docs/pipeline.md)."),
    overrides: list[str] = typer.Argument(None, help="KEY=VALUE overrides (values parse as YAML), e.g. "
                                          "train.max_steps=20 build.policies.srft.label_on_resolved=true."),
    out: str = typer.Option(None, "--out", help="Run directory (default: the recipe's run.out, or runs/<name>)."),
    from_stage: str = typer.Option(None, "--from", help="Re-run this stage (or node, e.g. train/srft) and "
                                   "everything downstream, even when up to date."),
    until: str = typer.Option(None, "--until", help="Stop after this stage (e.g. train, before your harness "
                              "evaluates the students)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate and print the plan; run nothing."),
    json_out: bool = JSON,
) -> None:
    """Run a recipe end to end (ingest, annotate, build, train, evaluate, compare, report); cached."""
    from srft.console import console_for
    from srft.run.graph import load_recipe, print_result, run_dir_for, run_pipeline

    console = console_for(json_out)
    spec, _ = load_recipe(recipe, overrides or [])
    result = run_pipeline(spec, run_dir_for(spec, out), force_from=from_stage, until=until, dry_run=dry_run,
                          console=console)
    print_result(result, console)
    finish(json_out, result, dry_run or result["ok"])


def lab(
    preset: str = typer.Option("tiny", "--preset", help="tiny (pipeline check, minutes) | small (the measured "
                               "comparison, ~42 min on 2 cores) | paper (more tasks, seeds, a bigger student)."),
    out: str = typer.Option(None, "--out", help="Run directory (default runs/lab-PRESET); re-running resumes it."),
    seeds: str = typer.Option(None, "--seeds", help="Training seeds per arm, comma-separated (overrides the preset)."),
    set_: list[str] = typer.Option(None, "--set", help="Override a config field, KEY=VALUE (YAML value), e.g. "
                                   "finetune.max_steps=200 or tasks.eval=50; repeatable."),
    json_out: bool = JSON,
) -> None:
    """The lab: a CPU-sized bug-fixing environment with known step labels; sft/rft/srft students compared."""
    from srft.console import console_for
    from srft.lab.config import apply_sets, preset_config
    from srft.lab.report import json_summary, print_summary
    from srft.run.experiment import run_lab

    console = console_for(json_out)
    config = apply_sets(preset_config(preset), [*([f"seeds=[{seeds}]"] if seeds else []), *(set_ or [])])
    out_dir = out or f"runs/lab-{preset}"
    report = run_lab(config, out_dir, console=console)
    print_summary(report, config, out_dir, console)
    finish(json_out, json_summary(report, preset, out_dir))
