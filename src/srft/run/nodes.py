"""The bodies of `srft run`'s nodes: each calls the stage functions of other modules and writes into its folder.

Every function here takes its options (bound by `srft.run.graph.pipeline_nodes`) and a `NodeContext`; it writes
only below `ctx.out_dir` (a temp folder renamed into place on success) and returns a small JSON summary that the
manifest records and the progress display prints. No stage logic lives here: ingest is `srft.formats.ingest`,
labels `srft.critic.annotate`, masks `srft.dataset.build`, training `srft.train`, the lab's data, tokenizer, base
student and rollouts `srft.lab`, statistics `srft.compare.harness`, the page `srft.run.report`.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from srft.io import atomic_write_json, atomic_write_text
from srft.run.runner import NodeContext

if TYPE_CHECKING:
    from srft.lab.config import LabConfig
    from srft.run.recipe import AnnotateSection, CompareSection, IngestSection, LaunchSection, Recipe

log = logging.getLogger("srft.run")
GOLD_LABELS = "oracle_labels.jsonl"  # gold/: the lab teacher's true step labels
OUTCOMES = "outcomes"  # evaluate/<policy>/seed<s>/outcomes/<policy>.seed<s>.json: a SWE-bench run summary


def quiet_hf() -> None:
    """datasets/transformers draw tqdm bars of their own; the run has one display (srft.run.runner.RichHooks)."""
    import datasets
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()


class StageError(RuntimeError):
    """A stage finished but its result is not usable (e.g. ingest skipped files); the message says why."""


# -- read ----------------------------------------------------------------------------------------------------

def _episodes(lab: LabConfig) -> list:
    """The lab teacher's episodes on the training tasks (deterministic: regenerated, never stored twice)."""
    from srft.lab.tasks import make_tasks
    from srft.lab.teacher import teach

    return [teach(t, lab.teacher, seed=lab.seed) for t in make_tasks("train", lab.tasks.train, lab.tasks.mix,
                                                                      seed=lab.seed)]


def generate(lab: LabConfig, ctx: NodeContext) -> dict[str, Any]:
    """The teacher's trajectories as OpenAI chat JSONL: `ingest` reads them like any user's file."""
    from srft.lab.data import write_teacher
    from srft.lab.run import teacher_stats

    episodes = _episodes(lab)
    write_teacher(ctx.out_dir / "trajectories" / "teacher.jsonl", episodes)
    stats = teacher_stats(episodes)
    return {k: stats[k] for k in ("trajectories", "resolved", "steps", "labels")}


def ingest(section: IngestSection, ctx: NodeContext) -> dict[str, Any]:
    from srft.formats.ingest import SUMMARY_KEYS, run_ingest

    paths = [ctx.dep("generate") / "trajectories"] if "generate" in ctx.dep_dirs else section.paths
    result = run_ingest(paths, ctx.out_dir, outcomes=section.outcomes, exclude_instances=section.exclude_instances,
                        outcomes_override=section.outcomes_override, fmt=section.format,
                        on_progress=lambda done, total, _: ctx.progress(done, total, None))
    report = result.report
    if not result.ok(section.skip_bad):
        bad = "; ".join(f"{b['path']}{'' if b['row'] is None else ':' + str(b['row'])}: {b['reason']}"
                        for b in report["bad"][:5])
        raise StageError(f"ingest read {report['trajectories']} trajectories and skipped {report['skipped']} "
                         f"(e.g. {bad or '-'}); fix the inputs or set ingest.skip_bad: true")
    return {k: report[k] for k in SUMMARY_KEYS}


# -- label ---------------------------------------------------------------------------------------------------

def gold(lab: LabConfig, ctx: NodeContext) -> dict[str, Any]:
    """The teacher's true labels keyed by the ids ingest gave its trajectories (checked step by step)."""
    from collections import Counter

    from srft.io import read_trajectories
    from srft.lab.data import oracle_labels
    from srft.labels import write_labels

    labels = oracle_labels(read_trajectories(ctx.dep("ingest")), _episodes(lab))
    write_labels(ctx.out_dir / GOLD_LABELS, labels)
    return {"steps": len(labels), "labels": dict(sorted(Counter(x.label for x in labels).items()))}


def gold_labels(ctx: NodeContext, given: str | None) -> Path:
    return Path(given) if given else ctx.dep("gold") / GOLD_LABELS


def annotate(section: AnnotateSection, ctx: NodeContext) -> dict[str, Any]:
    from srft.critic.annotate import AnnotateConfig, run_annotate

    cfg = AnnotateConfig(**section.model_dump(exclude={"gold"}))
    if cfg.use_cache and cfg.cache is None:
        # Outside the node folder: a re-run (new options, new srft version) reuses every answer already paid for.
        cfg.cache = str(ctx.run_dir / "cache" / "critic_cache.sqlite")
        (ctx.run_dir / "cache").mkdir(parents=True, exist_ok=True)
    report = run_annotate(ctx.dep("ingest"), ctx.out_dir, cfg, console=ctx.console)
    keys = ("trajectories", "labelled_trajectories", "steps", "labels", "calls", "cached", "failed", "cost_usd")
    return {k: report[k] for k in keys}


def critic_eval(given_gold: str | None, ctx: NodeContext) -> dict[str, Any]:
    from srft.critic.eval import EvalConfig, plot_confusion, run_critic_eval

    report = run_critic_eval(gold_labels(ctx, given_gold), [ctx.dep("annotate") / "annotations.jsonl"],
                             ctx.dep("ingest"), EvalConfig())
    entry = report["preds"][0]
    entry["name"] = "critic"
    plot_confusion(report, ctx.out_dir / "confusion.png")
    report["plot"] = "confusion.png"
    atomic_write_json(ctx.out_dir / "critic_eval.json", report)
    return {"matched_steps": entry["matched_steps"], "gold_only_steps": entry["gold_only_steps"],
            "macro_f1": entry["macro_f1"]["value"], "binary_f1": entry["binary_f1"]["value"],
            "kappa": entry["kappa"]["value"]}


# -- the student ---------------------------------------------------------------------------------------------

def lab_tokenizer(lab: LabConfig, ctx: NodeContext) -> dict[str, Any]:
    """The lab's BPE + ChatML tool template, trained on the rendered teacher and pretraining conversations."""
    from srft.lab.run import train_lab_tokenizer

    return train_lab_tokenizer(lab, _episodes(lab), ctx.out_dir / "tokenizer")


def tokenizer_dir(ctx: NodeContext, given: str | None) -> str:
    return str(ctx.dep("tokenizer") / "tokenizer") if "tokenizer" in ctx.dep_dirs else str(given)


def lab_base(lab: LabConfig, ctx: NodeContext) -> dict[str, Any]:
    """The lab's base student (induction warm-up, then every token of instruction episodes: it learns the tools'
    syntax and copying, not how to fix bugs), exactly as `srft lab` trains it."""
    quiet_hf()
    from srft.lab.run import train_base

    report = train_base(lab, ctx.dep("tokenizer") / "tokenizer", ctx.out_dir, callbacks=[_train_progress(ctx)])
    # srft run reads the student from <node>/model; the intermediate init/warm models only served training.
    for name in ("init", "warm"):
        shutil.rmtree(ctx.out_dir / name, ignore_errors=True)
    return {"parameters": report["parameters"], "pretrain_rows": report["pretrain_data"].get("rows"),
            "steps": report["train"]["steps"], "final_loss": report["train"]["final_loss"]}


def init_student(init: Any, tokenizer: str | None, ctx: NodeContext) -> dict[str, Any]:
    quiet_hf()
    from srft.train.models import init_model

    info = init_model(tokenizer_dir(ctx, tokenizer), ctx.out_dir / "model", init)
    return {"parameters": info["parameters"], "vocab_size": info["vocab_size"]}


# -- weigh + build, train ------------------------------------------------------------------------------------

def build(policy: Any, mask: Any, exports: list[str], num_proc: int, tokenizer: str | None, labels: str | None,
          given_gold: str | None, ctx: NodeContext) -> dict[str, Any]:
    quiet_hf()
    from srft.dataset.build import run_build

    annotations = {"critic": lambda: ctx.dep("annotate") / "annotations.parquet",
                   "gold": lambda: gold_labels(ctx, given_gold), None: lambda: None}[labels]()
    report = run_build(ctx.dep("ingest"), ctx.out_dir, tokenizer=tokenizer_dir(ctx, tokenizer), policy=policy,
                       annotations=annotations, mask=mask, exports=exports, num_proc=num_proc,
                       on_progress=lambda done, total, stage: ctx.progress(done, total, stage))
    keys = ("samples", "trajectories_used", "trajectories_dropped", "tokens", "trained_tokens", "masked_step_tokens",
            "truncated_tokens")
    return {k: report[k] for k in keys if k in report}


def train(config: Any, launch: LaunchSection | None, build_key: str, ctx: NodeContext) -> dict[str, Any]:
    """One student. Training writes into the node's resume folder (checkpoints every `save_steps`), so a crash or
    a kill resumes from the last checkpoint on the next `srft run`; the finished model moves into the node."""
    quiet_hf()
    import os

    if "student" in ctx.dep_dirs:
        config = config.model_copy(update={"model": str(ctx.dep("student") / "model")})
    work = ctx.resume_dir() / "model"
    resume = (work.with_name("model.partial") / "checkpoints").is_dir()
    if resume:
        log.info("%s: resuming from the checkpoints in %s", ctx.node.key, work.parent)
    if launch is not None:
        report = _launch_train(config, launch, ctx.dep(build_key), work, resume, ctx)
    else:
        from srft.train.run import run_train

        report = run_train(ctx.dep(build_key), work, config, resume=resume, callbacks=[_train_progress(ctx)])
    os.replace(work, ctx.out_dir / "model")
    # Finished: the checkpoints only served resuming (a 32B run's optimizer states are ~3x the model).
    shutil.rmtree(ctx.out_dir / "model" / "checkpoints", ignore_errors=True)
    shutil.rmtree(ctx.resume_dir().parent, ignore_errors=True)
    keys = ("steps", "first_loss", "final_loss", "trained_tokens", "tokens_seen", "tokens_per_s", "train_seconds",
            "resumed_from")
    return {k: report.get(k) for k in keys}


def _train_progress(ctx: NodeContext):
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                ctx.progress(state.global_step, state.max_steps, f"loss {logs['loss']:.3f}")

    return Progress()


def _launch_train(config: Any, launch: LaunchSection, build_dir: Path, out: Path, resume: bool,
                  ctx: NodeContext) -> dict:
    """`accelerate launch ... -m srft.train` in a subprocess (one process per GPU); its log goes to train.log."""
    cfg_file = out.parent / "train_input.json"
    atomic_write_json(cfg_file, config.model_dump(mode="json"))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", launch.accelerate_config,
           "--num_processes", str(launch.num_processes), *launch.extra_args, "-m", "srft.train", str(build_dir),
           "--config", str(cfg_file), "--out", str(out), "--json", *(["--resume"] if resume else [])]
    with open(out.parent / "train.log", "a", encoding="utf-8") as log_file:
        done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=log_file, text=True, check=False)
    if done.returncode != 0:
        raise StageError(f"`{' '.join(cmd)}` exited {done.returncode}; see {out.parent / 'train.log'}")
    shutil.copy(out.parent / "train.log", ctx.out_dir / "train.log")
    return json.loads((out / "train_report.json").read_text(encoding="utf-8"))


# -- evaluate, compare, report -------------------------------------------------------------------------------

def evaluate_lab(lab: LabConfig, model_key: str, system: str, run: str, ctx: NodeContext) -> dict[str, Any]:
    """The student acts on the lab's held-out tasks (greedy); success per task -> a SWE-bench run summary."""
    quiet_hf()
    from srft.io import write_jsonl
    from srft.lab.data import chat_record
    from srft.lab.rollout import run_episodes
    from srft.lab.tasks import make_tasks

    model_dir = ctx.dep(model_key) / "model"
    model, tokenizer = load_student(model_dir)
    tasks = make_tasks("eval", lab.tasks.eval, lab.tasks.mix, seed=lab.seed)
    episodes = sorted(run_episodes(model, tokenizer, tasks, max_steps=lab.max_steps, batch_size=lab.eval_batch),
                      key=lambda e: e.task.instance_id)
    statuses = {ep.task.instance_id: "resolved" if ep.resolved else "unresolved" for ep in episodes}
    write_run_summary(ctx.out_dir / OUTCOMES / f"{system}.{run}.json", statuses)
    write_jsonl(ctx.out_dir / "episodes.jsonl", (chat_record(ep.task.instance_id, ep.messages, ep.resolved,
                model=f"{system}.{run}", metadata={**ep.summary(), "actions": ep.actions}) for ep in episodes))
    return {"tasks": len(episodes), "resolved": sum(ep.resolved for ep in episodes),
            "invalid_actions": sum(ep.env.invalid for ep in episodes), "actions": sum(ep.env.steps for ep in episodes)}


def load_student(folder: Path):
    """A trained student for inference: a full model folder, or LoRA adapters merged into their base."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if (folder / "adapter_config.json").is_file():
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(str(folder)).merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(str(folder))
    return model, AutoTokenizer.from_pretrained(str(folder))


def evaluate_given(path: str, system: str, run: str, ctx: NodeContext) -> dict[str, Any]:
    """Your harness output for this student, read and re-written as one run summary (so compare sees one
    format whatever the harness wrote)."""
    from srft.formats.outcomes import read_outcomes

    reports = read_outcomes(path)
    if len(reports) != 1:
        raise StageError(f"{path}: expected the harness output of one run, found {len(reports)}")
    statuses = reports[0].statuses()
    write_run_summary(ctx.out_dir / OUTCOMES / f"{system}.{run}.json", statuses, source=path)
    return {"instances": len(statuses), "resolved": sum(s == "resolved" for s in statuses.values()),
            "notes": reports[0].notes}


def write_run_summary(path: Path, statuses: dict[str, str], source: str | None = None) -> None:
    """A SWE-bench run summary (schema_version 2) for instance -> status (resolved/unresolved/error/...)."""
    lists = {f"{s}_ids": sorted(i for i, v in statuses.items() if v == s)
             for s in ("resolved", "unresolved", "error", "empty_patch")}
    done = sorted(i for i, v in statuses.items() if v != "unknown")
    atomic_write_json(path, {"schema_version": 2, "total_instances": len(statuses),
                             "submitted_instances": len(statuses), "completed_instances": len(done),
                             "resolved_instances": len(lists["resolved_ids"]),
                             "unresolved_instances": len(lists["unresolved_ids"]),
                             "error_instances": len(lists["error_ids"]),
                             "empty_patch_instances": len(lists["empty_patch_ids"]),
                             "submitted_ids": sorted(statuses), "completed_ids": done,
                             "incomplete_ids": sorted(i for i, v in statuses.items() if v == "unknown"),
                             **lists, **({"source": source} if source else {})})


def compare(cmp: CompareSection, evaluated: list[str], ctx: NodeContext) -> dict[str, Any]:
    """Systems = policies (and base), runs = their seeds, from the evaluate nodes' run summaries."""
    from srft.compare.harness import CompareConfig, run_compare
    from srft.compare.render import plot_forest, render_markdown

    systems: dict[str, list[str]] = {}
    for key in evaluated:
        for summary in sorted((ctx.dep(key) / OUTCOMES).glob("*.json")):
            systems.setdefault(summary.name.split(".")[0], []).append(str(summary))
    result = run_compare(systems, instances=cmp.instances, **cmp.model_dump(include=set(CompareConfig.model_fields)))
    result["plot"] = plot_forest(result, ctx.out_dir / "forest.png").name
    atomic_write_json(ctx.out_dir / "compare.json", result)
    atomic_write_text(ctx.out_dir / "compare.md", render_markdown(result))
    return {"instances": result["instances"]["n"],
            "rates": {s["name"]: round(s["rate"], 4) for s in result["systems"]},
            "diffs": {f"{c['a']}-{c['b']}": [round(c["diff"], 4), [round(x, 4) for x in c["ci"]]]
                      for c in result["comparisons"]}}


def report(recipe: Recipe, ctx: NodeContext) -> dict[str, Any]:
    from srft.run.report import write_report

    return write_report(recipe, ctx.dep_dirs, ctx.out_dir / "report.html")
