"""Weigh + tokenize: `srft build` (policy, masks, exports) and `srft audit` (re-check every mask)."""

from __future__ import annotations

import typer

from srft.cli.common import JSON, finish


def build(
    data_dir: str = typer.Argument(..., help="Trajectory store: an `srft ingest` output directory."),
    tokenizer: str = typer.Option(..., "--tokenizer", help="Student tokenizer: a directory with a chat template, "
                                  "or a .gguf file."),
    out: str = typer.Option(..., "--out", help="Output directory (dataset/, build_report.json, exports/)."),
    policy: str = typer.Option("srft", "--policy", help="sft | rft | srft | prefix | random, or module:function."),
    annotations: str = typer.Option(None, "--annotations", help="Step-label file (JSONL or Parquet)."),
    render: str = typer.Option("full", "--render", help="full: one render per trajectory; per-step: one sample "
                               "per trained step (exact for templates that are not prefix-preserving, e.g. Qwen3)."),
    max_length: int = typer.Option(None, "--max-length", help="Longest sample in tokens."),
    truncation: str = typer.Option("drop", "--truncation", help="Over --max-length: drop | keep-start | windows "
                                   "(cuts only at step boundaries)."),
    export: list[str] = typer.Option(None, "--export", help="Also write: trl | axolotl | verl | torchtune | "
                                     "llamafactory (repeatable)."),
    mask_label: list[str] = typer.Option(None, "--mask-label", help="Label whose steps get no loss (repeatable; "
                                         "default: mistake)."),
    label_weight: list[str] = typer.Option(None, "--label-weight", help="LABEL=W soft weight, e.g. "
                                           "unnecessary=0.5 (repeatable)."),
    label_on_resolved: bool = typer.Option(False, "--label-on-resolved", help="Apply labels to resolved "
                                           "trajectories too."),
    confidence_weights: bool = typer.Option(False, "--confidence-weights", help="Weigh each step by its label's "
                                            "votes/probabilities (share not masked; e.g. 1 of 3 votes mistake "
                                            "-> 0.67), as loss_weights."),
    unlabelled: str = typer.Option("train", "--unlabelled", help="Steps without a label: train | mask."),
    unknown_outcome: str = typer.Option("unresolved", "--unknown-outcome", help="Trajectories without an outcome: "
                                        "unresolved | resolved | drop."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random control policy."),
    template_kwarg: list[str] = typer.Option(None, "--template-kwarg", help="KEY=VALUE chat template variable, "
                                             "e.g. enable_thinking=false (repeatable)."),
    num_proc: int = typer.Option(1, "--num-proc", help="Tokenizer worker processes."),
    json_out: bool = JSON,
) -> None:
    """Weigh steps with a policy and build exactly-masked token samples (+ exports)."""
    from srft.config import parse_overrides
    from srft.console import console_for
    from srft.dataset.build import BuildConfig, build_ok, json_summary, print_summary, run_build

    console = console_for(json_out)
    config = BuildConfig(
        tokenizer=tokenizer, exports=export or [], num_proc=num_proc,
        policy={"name": policy, "mask_labels": mask_label or ["mistake"], "seed": seed,
                "label_weights": parse_overrides(label_weight, "--label-weight"),
                "label_on_resolved": label_on_resolved, "unlabelled": unlabelled, "unknown_outcome": unknown_outcome,
                "confidence_weights": confidence_weights},
        masks={"render": render, "max_length": max_length, "truncation": truncation,
               "chat_template_kwargs": parse_overrides(template_kwarg, "--template-kwarg")})
    report = run_build(data_dir, out, config, annotations=annotations)
    print_summary(report, console)
    finish(json_out, json_summary(report, out), build_ok(report))


def audit(
    build_dir: str = typer.Argument(..., help="`srft build` output directory (or its dataset/)."),
    sample: int = typer.Option(0, "--sample", help="Index of the sample to show."),
    html: str = typer.Option(None, "--html", help="Also write the sample as a self-contained HTML page here."),
    tokenizer: str = typer.Option(None, "--tokenizer", help="Tokenizer to decode with (default: the build's)."),
    json_out: bool = JSON,
) -> None:
    """Check every mask in a built dataset and show one sample, trained tokens coloured per step label."""
    from srft.console import console_for
    from srft.dataset.audit import audit as run_audit
    from srft.dataset.audit import html_page, json_summary, print_summary
    from srft.io import atomic_write_text

    console = console_for(json_out)
    report = run_audit(build_dir, sample, tokenizer)
    if html:
        atomic_write_text(html, html_page(report))
    print_summary(report, console)
    finish(json_out, json_summary(report, html), not report["rows_with_problems"])
