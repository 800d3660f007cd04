"""The bodies of `srft run`'s nodes: each calls the stage functions of other modules and writes into its folder.

Every function here takes its options (bound by `srft.run.graph.pipeline_nodes`) and a `NodeContext`; it writes
only below `ctx.out_dir` (a temp folder renamed into place on success) and returns a small JSON summary that the
manifest records and the progress display prints. No stage logic lives here: ingest is `srft.formats.ingest`,
labels `srft.critic.annotate`, masks `srft.dataset.build`, training `srft.train`, statistics
`srft.compare.harness`, the page `srft.run.report`. Where each output sits in its folder: `srft.run.layout`. The
lab's own nodes (its teacher, gold labels, student and rollouts) are in `srft.run.lab`.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from srft.io import atomic_write_json, atomic_write_text
from srft.run import layout
from srft.run.runner import Node, NodeContext

if TYPE_CHECKING:
    from srft.run.recipe import AnnotateSection, CompareSection, IngestSection, LaunchSection, Recipe

log = logging.getLogger("srft.run")


def quiet_hf() -> None:
    """datasets/transformers draw tqdm bars of their own; the run has one display (srft.run.display.RichHooks)."""
    import datasets
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()


class StageError(RuntimeError):
    """A stage finished but its result is not usable (e.g. ingest skipped files); the message says why."""


@dataclass
class Inputs:
    """Nodes that stand in for what a recipe otherwise names as files: the graph's one extension point.

    Your own data needs none of them (`Inputs()`: ingest.paths, annotate.gold, build.tokenizer / train.model or
    train.init, evaluate.outcomes); the lab (`srft.run.lab.lab_inputs`) provides every one."""

    trajectories: list[Node] = field(default_factory=list)  # each writes <key>/trajectories/; ingest reads them
    gold: Node | None = None  # writes <key>/oracle_labels.jsonl, the gold step labels
    tokenizer: Node | None = None  # writes <key>/tokenizer/
    student: Node | None = None  # writes <key>/model/, the student to fine-tune (unless train.model/init is set)
    # (system, seed or None for the untrained student, key of the node holding model/ or None) -> a node that
    # scores it, or None when it cannot be scored; None here: the harness outputs given in evaluate.outcomes.
    evaluate: Callable[[str, int | None, str | None], Node | None] | None = None
    # (keys of every node so far, keys of the evaluate nodes) -> nodes that run after compare, before the report.
    finish: Callable[[list[str], list[str]], list[Node]] | None = None


# -- read ----------------------------------------------------------------------------------------------------

def ingest(section: IngestSection, ctx: NodeContext) -> dict[str, Any]:
    from srft.formats.ingest import SUMMARY_KEYS, run_ingest

    # A node that writes trajectories (the lab's teacher) stands in for the recipe's files.
    paths = [d / layout.TRAJECTORIES for d in ctx.dep_dirs.values()] or section.paths
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

def gold_labels(ctx: NodeContext, given: str | None) -> Path:
    """The gold step-label file: yours (`annotate.gold`), or the one a `gold` node wrote."""
    return Path(given) if given else ctx.dep("gold") / layout.GOLD_LABELS


def noisy(q: float, seed: int, given_gold: str | None, ctx: NodeContext, votes: str | None = None) -> dict[str, Any]:
    """Gold labels whose mask decision flips on a share q of steps: a critic of known noise (with `votes`, also
    simulated votes whose confidence is informative or not: srft.lab.data.vote_labels)."""
    from srft.critic.eval import TrajectoryIndex, load_labels
    from srft.lab.data import flip_labels, vote_labels
    from srft.labels import write_labels

    gold = load_labels(gold_labels(ctx, given_gold), TrajectoryIndex.from_store(ctx.dep("ingest")))
    flipped = (vote_labels(gold, q, seed, informative=votes == "informative") if votes
               else flip_labels(gold, q, seed=seed))
    write_labels(ctx.out_dir / layout.NOISY_LABELS, flipped)
    changed = sum((a.label == "mistake") != (b.label == "mistake") for a, b in zip(gold, flipped, strict=True))
    return {"q": q, "steps": len(flipped), "flipped": changed}


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

    report = run_critic_eval(gold_labels(ctx, given_gold), [ctx.dep("annotate") / layout.ANNOTATIONS],
                             ctx.dep("ingest"), EvalConfig())
    entry = report["preds"][0]
    entry["name"] = "critic"
    plot_confusion(report, ctx.out_dir / layout.CONFUSION_PNG)
    report["plot"] = layout.CONFUSION_PNG
    atomic_write_json(ctx.out_dir / layout.CRITIC_EVAL, report)
    return {"matched_steps": entry["matched_steps"], "gold_only_steps": entry["gold_only_steps"],
            "macro_f1": entry["macro_f1"]["value"], "binary_f1": entry["binary_f1"]["value"],
            "kappa": entry["kappa"]["value"], "mask_error": mask_error(entry["confusion"]),
            "mistake": entry["per_label"]["mistake"]}


def mask_error(confusion: list[list[int]]) -> float | None:
    """Share of matched steps whose mask decision (mistake or not) differs from gold's (rows gold, columns pred)."""
    from srft.model import LABELS

    m, n = LABELS.index("mistake"), sum(map(sum, confusion))
    wrong = sum(confusion[m][j] + confusion[j][m] for j in range(len(LABELS)) if j != m)
    return wrong / n if n else None


# -- the student ---------------------------------------------------------------------------------------------

def tokenizer_dir(ctx: NodeContext, given: str | None) -> str:
    """Your tokenizer folder, or the one a `tokenizer` node trained."""
    return str(ctx.dep("tokenizer") / layout.TOKENIZER) if "tokenizer" in ctx.dep_dirs else str(given)


def init_student(init: Any, tokenizer: str | None, ctx: NodeContext) -> dict[str, Any]:
    quiet_hf()
    from srft.train.models import init_model

    info = init_model(tokenizer_dir(ctx, tokenizer), ctx.out_dir / layout.MODEL, init)
    return {"parameters": info["parameters"], "vocab_size": info["vocab_size"]}


# -- weigh + build, train ------------------------------------------------------------------------------------

def build(policy: Any, mask: Any, exports: list[str], num_proc: int, tokenizer: str | None, labels: str | None,
          given_gold: str | None, ctx: NodeContext) -> dict[str, Any]:
    """One policy's dataset; `labels` is the key of the node whose step labels it reads (annotate, gold,
    noisy/<policy>), "gold" with your gold file, or None."""
    quiet_hf()
    from srft.dataset.build import run_build

    if labels is None:
        annotations = None
    elif labels == "annotate":
        annotations = ctx.dep("annotate") / layout.ANNOTATIONS
    elif labels.startswith("noisy/"):
        annotations = ctx.dep(labels) / layout.NOISY_LABELS
    else:
        annotations = gold_labels(ctx, given_gold)
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
        config = config.model_copy(update={"model": str(ctx.dep("student") / layout.MODEL)})
    from srft.train.run import last_checkpoint

    work = ctx.resume_dir() / layout.MODEL
    # A kill before the first checkpoint was complete leaves nothing to continue: that attempt starts over.
    resume = last_checkpoint(work.with_name("model.partial") / "checkpoints") is not None
    if resume:
        log.info("%s: resuming from the checkpoints in %s", ctx.node.key, work.parent)
    if launch is not None:
        report = _launch_train(config, launch, ctx.dep(build_key), work, resume, ctx)
    else:
        from srft.train.run import run_train

        report = run_train(ctx.dep(build_key), work, config, resume=resume, callbacks=[train_progress(ctx)])
    os.replace(work, ctx.out_dir / layout.MODEL)
    # Finished: the checkpoints only served resuming (a 32B run's optimizer states are ~3x the model).
    shutil.rmtree(ctx.out_dir / layout.MODEL / "checkpoints", ignore_errors=True)
    shutil.rmtree(ctx.resume_dir().parent, ignore_errors=True)
    keys = ("steps", "first_loss", "final_loss", "trained_tokens", "tokens_seen", "tokens_per_s", "train_seconds",
            "resumed_from")
    return {k: report.get(k) for k in keys}


def train_progress(ctx: NodeContext):
    """A transformers callback that reports each logged loss as the node's progress."""
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                ctx.progress(state.global_step, state.max_steps, f"loss {logs['loss']:.3f}")

    return Progress()


def _launch_train(config: Any, launch: LaunchSection, build_dir: Path, out: Path, resume: bool,
                  ctx: NodeContext) -> dict:
    """`accelerate launch ... -m srft train` in a subprocess (one process per GPU); its log goes to train.log."""
    from srft.train.launch import free_port, launch_config_problems

    problems = launch_config_problems(launch.accelerate_config, launch.num_processes)
    if problems:
        raise StageError(problems[0])
    cfg_file = out.parent / "train_input.json"
    atomic_write_json(cfg_file, config.model_dump(mode="json"))
    port = [] if "--main_process_port" in launch.extra_args else ["--main_process_port", str(free_port())]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", launch.accelerate_config,
           "--num_processes", str(launch.num_processes), *port, *launch.extra_args, "-m", "srft", "train",
           str(build_dir), "--config", str(cfg_file), "--out", str(out), "--json", *(["--resume"] if resume else [])]
    with open(out.parent / "train.log", "a", encoding="utf-8") as log_file:
        done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=log_file, text=True, check=False)
    if done.returncode != 0:
        raise StageError(f"`{' '.join(cmd)}` exited {done.returncode}; see {out.parent / 'train.log'}")
    shutil.copy(out.parent / "train.log", ctx.out_dir / "train.log")
    return json.loads((out / "train_report.json").read_text(encoding="utf-8"))


# -- evaluate, compare, report -------------------------------------------------------------------------------

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
    write_run_summary(layout.run_summary(ctx.out_dir, system, run), statuses, source=path)
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
        for system, summary in layout.run_summaries(ctx.dep(key)).items():
            systems.setdefault(system, []).append(str(summary))
    result = run_compare(systems, instances=cmp.instances, **cmp.model_dump(include=set(CompareConfig.model_fields)))
    result["plot"] = plot_forest(result, ctx.out_dir / layout.FOREST_PNG).name
    atomic_write_json(ctx.out_dir / layout.COMPARE, result)
    atomic_write_text(ctx.out_dir / "compare.md", render_markdown(result))
    return {"instances": result["instances"]["n"],
            "rates": {s["name"]: round(s["rate"], 4) for s in result["systems"]},
            "diffs": {f"{c['a']}-{c['b']}": [round(c["diff"], 4), [round(x, 4) for x in c["ci"]]]
                      for c in result["comparisons"]}}


def report(recipe: Recipe, ctx: NodeContext) -> dict[str, Any]:
    from srft.run.report import write_report

    return write_report(recipe, ctx.dep_dirs, ctx.out_dir / layout.REPORT)
