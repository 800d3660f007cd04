"""The lab in the pipeline: its nodes, through the graph's one extension point (`srft.run.nodes.Inputs`).

The lab stands in for everything a recipe otherwise names as files:

    generate            its teacher's trajectories (OpenAI chat JSONL), which ingest reads like yours
    gold                the teacher's true step labels, keyed by the ids ingest gave the trajectories
    tokenizer, student  a BPE on its own text, and a base student pretrained on instruction episodes
    evaluate/...        each student acts on the held-out tasks (greedy); success per task -> a run summary
    results             (lab.results) outcome tables, per-difficulty comparisons, results.md, noise.png,
                        lab_report.json

`srft lab` itself (the preset as a recipe, run like any other) is `srft.run.experiment.run_lab`.
"""

from __future__ import annotations

import json
import shutil
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from srft.io import atomic_write_json, write_jsonl
from srft.lab.config import LabConfig, arms
from srft.run import layout
from srft.run.nodes import Inputs, load_student, quiet_hf, train_progress, write_run_summary
from srft.run.runner import Node, NodeContext, read_manifest

if TYPE_CHECKING:
    from srft.run.recipe import Recipe

TEACHER_STATS = "teacher_stats.json"  # generate/
BASE_REPORT = "base_report.json"  # student/: the warm-up and pretraining reports


def lab_inputs(recipe: Recipe) -> Inputs:
    """The lab's nodes for a recipe with a `lab:` section; each node's options are what its output depends on."""
    lab = recipe.lab.config()
    data = {"seed": lab.seed, "train": lab.tasks.train, "mix": lab.tasks.mix, "teacher": lab.teacher.model_dump()}
    pretrain = {"seed": lab.seed, "mix": lab.tasks.mix, "pretrain_tasks": lab.tasks.pretrain,
                "max_steps": lab.max_steps}
    student = {**pretrain, "student": lab.student.model_dump(), "induction": lab.induction.model_dump(),
               "pretrain": lab.pretrain.model_dump(), "max_length": lab.max_length}
    rollouts = recipe.evaluate is not None and recipe.evaluate.lab
    return Inputs(
        trajectories=[Node("generate", "generate", data, partial(generate, lab))],
        gold=Node("gold", "gold", data, partial(gold, lab), deps=["ingest"]),
        tokenizer=Node("tokenizer", "tokenizer", {**data, **pretrain, "vocab_size": lab.student.vocab_size},
                       partial(tokenizer, lab)),
        student=Node("student", "student", student, partial(base_student, lab), deps=["tokenizer"]),
        evaluate=partial(_evaluation, lab) if rollouts else None,
        finish=partial(_results, recipe, lab) if recipe.lab.results else None)


def _evaluation(lab: LabConfig, name: str, seed: int | None, model_key: str | None) -> Node | None:
    """evaluate/<name>/seed<s> (or evaluate/base): rollouts of the student in `model_key` on the held-out tasks."""
    if model_key is None:
        return None
    key, run = ("evaluate/base", "pretrained") if seed is None else (f"evaluate/{name}/seed{seed}", f"seed{seed}")
    opts = {"tasks": lab.tasks.eval, "mix": lab.tasks.mix, "seed": lab.seed, "max_steps": lab.max_steps,
            "batch": lab.eval_batch}
    return Node(key, "evaluate", opts, partial(evaluate, lab, model_key, name, run), deps=[model_key])


def _results(recipe: Recipe, lab: LabConfig, upstream: list[str], evaluated: list[str]) -> list[Node]:
    if "compare" not in upstream:
        return []
    return [Node("results", "results", {"config": lab.model_dump(mode="json")},
                 partial(results, recipe, lab, evaluated), deps=upstream)]


# -- node bodies ---------------------------------------------------------------------------------------------

def generate(lab: LabConfig, ctx: NodeContext) -> dict[str, Any]:
    """The teacher's trajectories as OpenAI chat JSONL: `ingest` reads them like any user's file."""
    from srft.lab.data import teacher_episodes, write_teacher
    from srft.lab.teacher import teacher_stats

    episodes = teacher_episodes(lab)
    write_teacher(ctx.out_dir / layout.TRAJECTORIES / "teacher.jsonl", episodes)
    stats = teacher_stats(episodes)
    atomic_write_json(ctx.out_dir / TEACHER_STATS, stats)
    return {k: stats[k] for k in ("trajectories", "resolved", "steps", "labels")}


def gold(lab: LabConfig, ctx: NodeContext) -> dict[str, Any]:
    """The teacher's true labels keyed by the ids ingest gave its trajectories (checked step by step)."""
    from collections import Counter

    from srft.io import read_trajectories
    from srft.lab.data import oracle_labels, teacher_episodes
    from srft.labels import write_labels

    labels = oracle_labels(read_trajectories(ctx.dep("ingest")), teacher_episodes(lab))
    write_labels(ctx.out_dir / layout.GOLD_LABELS, labels)
    return {"steps": len(labels), "labels": dict(sorted(Counter(x.label for x in labels).items()))}


def tokenizer(lab: LabConfig, ctx: NodeContext) -> dict[str, Any]:
    """The lab's BPE + ChatML tool template, trained on the rendered teacher and pretraining conversations."""
    from srft.lab.base import train_lab_tokenizer
    from srft.lab.data import teacher_episodes

    return train_lab_tokenizer(lab, teacher_episodes(lab), ctx.out_dir / layout.TOKENIZER)


def base_student(lab: LabConfig, ctx: NodeContext) -> dict[str, Any]:
    """The base student (induction warm-up, then every token of instruction episodes: it learns the tools'
    syntax and copying, not how to fix bugs; srft.lab.base)."""
    quiet_hf()
    from srft.lab.base import train_base

    report = train_base(lab, ctx.dep("tokenizer") / layout.TOKENIZER, ctx.out_dir, callbacks=[train_progress(ctx)])
    atomic_write_json(ctx.out_dir / BASE_REPORT, report)
    # The run reads the student from <node>/model; the intermediate init/warm models only served training.
    for name in ("init", "warm"):
        shutil.rmtree(ctx.out_dir / name, ignore_errors=True)
    return {"parameters": report["parameters"], "pretrain_rows": report["pretrain_data"].get("rows"),
            "steps": report["train"]["steps"], "final_loss": report["train"]["final_loss"]}


def evaluate(lab: LabConfig, model_key: str, system: str, run: str, ctx: NodeContext) -> dict[str, Any]:
    """The student acts on the lab's held-out tasks (greedy); success per task -> a SWE-bench run summary."""
    quiet_hf()
    from srft.lab.data import chat_record
    from srft.lab.rollout import episode_stats, run_episodes
    from srft.lab.tasks import make_tasks

    model, tok = load_student(ctx.dep(model_key) / layout.MODEL)
    tasks = make_tasks("eval", lab.tasks.eval, lab.tasks.mix, seed=lab.seed)
    episodes = sorted(run_episodes(model, tok, tasks, max_steps=lab.max_steps, batch_size=lab.eval_batch),
                      key=lambda e: e.task.instance_id)
    statuses = {ep.task.instance_id: "resolved" if ep.resolved else "unresolved" for ep in episodes}
    write_run_summary(layout.run_summary(ctx.out_dir, system, run), statuses)
    write_jsonl(ctx.out_dir / layout.EPISODES, (chat_record(ep.task.instance_id, ep.messages, ep.resolved,
                model=f"{system}.{run}", metadata={**ep.summary(), "actions": ep.actions}) for ep in episodes))
    return episode_stats(episodes)


def results(recipe: Recipe, lab: LabConfig, evaluated: list[str], ctx: NodeContext) -> dict[str, Any]:
    """Outcome tables (one 0/1 column per arm and seed), comparisons per difficulty, results.md, noise.png,
    lab_report.json: the lab's tables over what the other nodes measured."""
    from srft.compare.harness import CompareConfig
    from srft.lab.report import compare_by_difficulty, write_results
    from srft.lab.data import write_outcome_table
    from srft.lab.tasks import make_tasks

    columns = outcome_columns({key: ctx.dep(key) for key in evaluated})
    write_outcome_table(ctx.out_dir / "outcomes.csv", columns)
    difficulty = {t.instance_id: t.difficulty for t in make_tasks("eval", lab.tasks.eval, lab.tasks.mix,
                                                                    seed=lab.seed)}
    options = recipe.compare.model_dump(include=set(CompareConfig.model_fields))
    by_difficulty = compare_by_difficulty(ctx.out_dir, columns, difficulty, options)
    cmp = json.loads((ctx.dep("compare") / layout.COMPARE).read_text(encoding="utf-8"))
    summaries = {key: (read_manifest(folder) or {}).get("summary") for key, folder in ctx.dep_dirs.items()}
    report = write_results(ctx.out_dir, lab, arm_info(recipe, lab, summaries), cmp, by_difficulty,
                           _parts(ctx.dep_dirs, summaries))
    return {"systems": len(report["results"]), "eval_tasks": report["eval_tasks"], "noise_points": len(report["noise"])}


def outcome_columns(folders: dict[str, Path]) -> dict[str, dict[str, bool]]:
    """evaluate node key -> folder  =>  `base` / `<policy>.s<seed>` -> instance -> resolved."""
    columns = {}
    for key, folder in folders.items():
        for system, path in layout.run_summaries(folder).items():
            summary = json.loads(path.read_text(encoding="utf-8"))
            column = "base" if key == "evaluate/base" else f"{system}.s{key.rsplit('seed', 1)[1]}"
            resolved = set(summary["resolved_ids"])
            columns[column] = {i: i in resolved for i in summary["submitted_ids"]}
    return columns


def arm_info(recipe: Recipe, lab: LabConfig, summaries: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per policy: its role in the lab, label source, policy, and its build/train/evaluate node summaries."""
    roles = {a.name: a.role for a in arms(lab)}
    out = {}
    for name, section in recipe.build.policies.items():
        source = recipe.label_source(name)
        labels = "none" if source is None else "critic" if source == "critic" else \
            "votes" if section.flip_confidence else "flip" if section.flip is not None else "oracle"

        def per_seed(stage: str) -> dict[str, Any]:
            prefix = f"{stage}/{name}/"
            return {k.removeprefix(prefix): v for k, v in summaries.items() if k.startswith(prefix)}

        out[name] = {"role": roles.get(name, ""), "labels": labels, "q": section.flip,
                     "policy": recipe.policy_config(name).model_dump(mode="json"),
                     "build": summaries.get(f"build/{name}"), "train": per_seed("train"), "eval": per_seed("evaluate")}
    return out


def _parts(dep_dirs: dict[str, Path], summaries: dict[str, Any]) -> dict[str, Any]:
    def read(key: str, name: str) -> Any:
        path = dep_dirs[key] / name if key in dep_dirs else None
        return json.loads(path.read_text(encoding="utf-8")) if path is not None and path.is_file() else None

    critic = {"labels": summaries["annotate"], "vs_gold": summaries.get("critic_eval")} \
        if "annotate" in summaries else None
    return {"teacher": read("generate", TEACHER_STATS), "ingest": summaries.get("ingest"), "critic": critic,
            "base": read("student", BASE_REPORT)}
