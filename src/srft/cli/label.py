"""Labelling steps: `srft annotate` (a critic), `srft critic-eval` (critic vs gold), `srft view` (the web
labeller) and `srft labels export` (its human labels as a step-label file)."""

from __future__ import annotations

import typer

from srft.cli.common import JSON, csv_list, finish


def annotate(
    data_dir: str = typer.Argument(..., help="Trajectory store: an `srft ingest` output folder (or its .parquet)."),
    out: str = typer.Option(..., "--out", help="Output folder: annotations.parquet/.jsonl + annotate_report.json."),
    critic: str = typer.Option(None, "--critic", help="heuristic (default) | openai | transformers | ensemble | "
                               "a dotted path 'pkg.module:build'."),
    option: list[str] = typer.Option(None, "--option", "-o", help="A field of the critic's own config as "
                                     "KEY=VALUE (repeatable), e.g. -o model=qwen -o base_url=http://h:8000/v1; "
                                     "ensemble: -o MEMBER.KEY=VALUE (docs/critic.md lists every critic's fields)."),
    member: list[str] = typer.Option(None, "--member", help="Ensemble member critic (repeat, most trusted first)."),
    concurrency: int = typer.Option(None, "--concurrency", help="Critic calls in flight (default 8)."),
    only: str = typer.Option(None, "--only", help="unresolved (default, as in the paper) | all."),
    prompt: str = typer.Option(None, "--prompt", help="Jinja prompt template file (default: built-in v2)."),
    show_outcome: bool = typer.Option(None, "--show-outcome/--hide-outcome", help="Tell the critic whether the "
                                      "trajectory was resolved (default: shown)."),
    context_tokens: int = typer.Option(None, "--context-tokens", help="Critic context window (default 32768)."),
    observation_tokens: int = typer.Option(None, "--observation-tokens", help="Per-step observation budget."),
    window_steps: int = typer.Option(None, "--window-steps", help="At most this many steps per call."),
    tokenizer: str = typer.Option(None, "--tokenizer", help="tokenizer.json (or folder) for exact budgets."),
    fallback: str = typer.Option(None, "--fallback", help="Label for steps of critic_failed trajectories: none "
                                 "(default: left unlabelled) | good | unnecessary | mistake | recover."),
    evidence: str = typer.Option(None, "--evidence", help="Hindsight shown to the critic, comma-separated: tests "
                                 "(per-test results), diff (final patch), reference (needs --reference), or none "
                                 "(default: tests,diff where a trajectory has them, + reference when given)."),
    reference: str = typer.Option(None, "--reference", help="Reference fixes: JSONL/Parquet rows with instance_id "
                                  "and patch (+ FAIL_TO_PASS/PASS_TO_PASS), as SWE-bench/SWE-smith/SWE-Gym rows."),
    samples: int = typer.Option(None, "--samples", help="Answers per window (LLM critics; > 1 needs -o "
                                "temperature > 0): the majority label, with votes and confidence."),
    confidence: str = typer.Option(None, "--confidence", help="votes (over --samples, default) | logprobs (label "
                                   "probabilities from the server's token log-probabilities)."),
    cache: str = typer.Option(None, "--cache", help="SQLite response cache (default OUT/critic_cache.sqlite)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Neither read nor write the response cache."),
    price_in: float = typer.Option(None, "--price-in", help="USD per 1M prompt tokens, for the cost report."),
    price_out: float = typer.Option(None, "--price-out", help="USD per 1M completion tokens."),
    config: str = typer.Option(None, "--config", help="YAML file of annotate options; options given win."),
    json_out: bool = JSON,
) -> None:
    """Label every step of the (unresolved) trajectories with a critic: good | unnecessary | mistake | recover."""
    from pathlib import Path

    from srft.config import load_yaml
    from srft.console import console_for
    from srft.critic.annotate import config_from_cli, run_annotate
    from srft.critic.report import json_summary, print_summary

    console = console_for(json_out)
    cfg = config_from_cli(load_yaml(Path(config).read_text(encoding="utf-8")) if config else None, critic=critic,
                          members=member or [], options=option or [],
                          settings={"concurrency": concurrency, "only": only, "fallback": fallback, "cache": cache,
                                    "use_cache": False if no_cache else None, "price_in": price_in,
                                    "price_out": price_out, "samples": samples, "confidence": confidence},
                          prompt={"template": prompt, "show_outcome": show_outcome, "context_tokens": context_tokens,
                                  "observation_tokens": observation_tokens, "max_window_steps": window_steps,
                                  "tokenizer": tokenizer, "reference": reference,
                                  "evidence": None if evidence is None else [] if evidence == "none"
                                  else csv_list(evidence)})
    report = run_annotate(data_dir, out, cfg, console=console)
    print_summary(report, out, console)
    finish(json_out, json_summary(report, out), not report["failed"])


def critic_eval(
    gold: str = typer.Option(..., "--gold", help="Gold (human) step-label file, JSONL or Parquet."),
    pred: list[str] = typer.Option(..., "--pred", help="Predicted step-label file; repeat to compare several "
                                   "side by side."),
    data: str = typer.Option(None, "--data", help="Ingest output: resolves rows keyed by `file`/`instance_id` and "
                             "checks every trajectory and step exists."),
    mask_labels: str = typer.Option("mistake", "--mask-labels", help="Labels the policy masks, comma-separated: "
                                    "the positive class of the binary masked-vs-trained F1."),
    bootstrap: int = typer.Option(1000, "--bootstrap", help="Bootstrap resamples over trajectories (0: no CIs)."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed (same seed, same CIs)."),
    confidence: float = typer.Option(0.95, "--confidence", help="CI coverage."),
    plot: str = typer.Option(None, "--plot", help="Write confusion-matrix heat maps to this PNG."),
    calibration_plot: str = typer.Option(None, "--calibration-plot", help="Write reliability diagrams and coverage "
                                         "curves of the preds with confidences to this PNG."),
    out: str = typer.Option(None, "--out", help="Also write the JSON report to this file."),
    strict: bool = typer.Option(False, "--strict", help="Exit 1 when a step is in only one of gold and a pred."),
    json_out: bool = JSON,
) -> None:
    """Score critics against gold labels: per-label P/R/F1, macro/micro F1, masked-vs-trained F1, kappa,
    confusion matrix, bootstrap CIs over trajectories; calibration (ECE, coverage curve) of labels with confidences."""
    from srft.console import console_for
    from srft.critic import eval as ce
    from srft.io import atomic_write_json

    console = console_for(json_out)
    config = ce.EvalConfig(mask_labels=csv_list(mask_labels), bootstrap=bootstrap, seed=seed, confidence=confidence)
    report = ce.run_critic_eval(gold, pred, data, config, plot=plot, calibration_plot=calibration_plot)
    if out:
        atomic_write_json(out, report)
    ce.print_report(report, console)
    finish(json_out, report, ce.eval_ok(report, strict))


def view(
    data: str = typer.Argument(..., help="Trajectory store: an `srft ingest` output directory."),
    annotations: list[str] = typer.Option(None, "--annotations", help="Step-label file shown beside each step "
                                          "(repeatable; named by file stem)."),
    labels_db: str = typer.Option(None, "--labels-db", help="SQLite file for human labels (default DATA/labels.db)."),
    port: int = typer.Option(8800, "--port", help="TCP port."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; non-loopback exposes labels to others."),
    allow_host: list[str] = typer.Option(None, "--allow-host", help="Extra Host header name to accept (e.g. the "
                                         "machine's name when binding 0.0.0.0); repeatable."),
    annotator: str = typer.Option(None, "--annotator", help="Default annotator name (default: your user name)."),
    tokenizer: str = typer.Option(None, "--tokenizer", help="Tokenizer directory: enables the token-mask view."),
    policy: str = typer.Option("srft", "--policy", help="Default policy of the token-mask view."),
    mask_labels: str = typer.Option("mistake", "--mask-labels", help="Labels counted as masked in the agreement "
                                    "F1, comma-separated."),
) -> None:
    """Serve the local web viewer/labeller (Ctrl-C stops it)."""
    from srft.view.app import ViewConfig, serve

    serve(ViewConfig(data=data, annotations=annotations or [], labels_db=labels_db, host=host, port=port,
                     allow_hosts=allow_host or [], tokenizer=tokenizer, policy=policy,
                     mask_labels=csv_list(mask_labels), **({"annotator": annotator} if annotator else {})))


def labels_export(
    db: str = typer.Argument(..., help="Labels database written by `srft view`."),
    out: str = typer.Option(..., "--out", help="Gold step-label file to write (.jsonl or .parquet)."),
    annotator: list[str] = typer.Option(None, "--annotator", help="Export only this annotator (repeatable)."),
    on_conflict: str = typer.Option("error", "--on-conflict", help="Annotators disagree on a step: 'error' lists "
                                    "them, 'latest' keeps the most recent label."),
    json_out: bool = JSON,
) -> None:
    """Write the human labels as a gold step-label file (source `human:<annotator>`, reason = note)."""
    from srft.console import console_for, say
    from srft.labels import write_labels
    from srft.view.db import LabelsDB, export_labels

    labels, report = export_labels(LabelsDB(db, create=False), annotator or None, on_conflict)
    write_labels(out, labels)
    report["out"] = out
    say(console_for(json_out), f"wrote {report['labels']} labels of {report['trajectories']} trajectories by "
        f"{', '.join(report['annotators']) or 'nobody'} to {out}")
    finish(json_out, report)
