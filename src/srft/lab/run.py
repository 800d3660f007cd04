"""`srft lab`: the experiment, read top to bottom, through the real stages.

    generate   teacher episodes on training tasks -> teacher/trajectories.jsonl (OpenAI chat rows)
    ingest     srft.formats.ingest.run_ingest -> ingest/trajectories.parquet
    labels     the teacher's true labels keyed by the ingested ids -> labels/oracle.jsonl (+ flipped copies)
    annotate   srft.critic.annotate.run_annotate with the heuristic critic -> annotate/annotations.jsonl
    tokenizer  BPE on the lab's own text + the ChatML tool template -> tokenizer/
    base       srft.train.models.init_model + srft.train.run_train: induction warm-up, instruction episodes -> base/model
    per arm    srft.dataset.build.run_build (policy + labels) -> build/<arm>; per seed srft.train.run_train from the base
               -> train/<arm>/seed<k>; greedy episodes on held-out tasks -> eval/<arm>/seed<k>
    compare    outcomes.csv (one 0/1 column per arm and seed) -> srft.compare.harness.run_compare vs rft
    report     results.md, noise.png, lab_report.json (srft.lab.report)

Every stage writes into its own folder and records a fingerprint of what it was run with (`stage.json`,
written last): re-running `srft lab` with the same config skips finished stages, so an interrupted run resumes.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import srft
from srft.io import atomic_write_json, read_trajectories, write_jsonl
from srft.lab.config import Arm, LabConfig, arms
from srft.lab.data import (ORACLE, chat_record, flip_labels, oracle_labels, write_outcomes, write_pretrain_dataset,
                           write_teacher)
from srft.lab.tasks import make_tasks
from srft.lab.teacher import Episode, teach
from srft.labels import write_labels

STAGE_FILE = "stage.json"


class LabError(RuntimeError):
    """A stage failed or a pipeline module is missing; the message names the stage and what to do."""


def _require(stage: str, module: str, issue: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise LabError(f"stage {stage!r} needs {module} ({issue}), which cannot be imported: {exc}") from exc


@dataclass
class _Run:
    config: LabConfig
    out: Path
    log: Callable[[str], None]
    timings: dict[str, float] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    _episodes: list[Episode] | None = None

    def stage(self, name: str, key: Any, fn: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
        """Run `fn(folder)` unless the folder records a finished run with the same fingerprint."""
        folder = self.out / name
        fingerprint = hashlib.sha256(json.dumps([srft.__version__, name, key], sort_keys=True, default=str)
                                     .encode()).hexdigest()[:16]
        marker = folder / STAGE_FILE
        if marker.is_file():
            saved = json.loads(marker.read_text())
            if saved.get("fingerprint") == fingerprint:
                self.log(f"{name}: done earlier ({saved['seconds']:.1f} s), reused")
                self.timings[name] = 0.0
                self.results[name] = saved["result"]
                return saved["result"]
        folder.mkdir(parents=True, exist_ok=True)
        self.log(f"{name}: running")
        start = time.perf_counter()
        result = fn(folder)
        seconds = time.perf_counter() - start
        atomic_write_json(marker, {"fingerprint": fingerprint, "seconds": round(seconds, 3), "result": result})
        self.timings[name] = round(seconds, 3)
        self.results[name] = result
        self.log(f"{name}: {seconds:.1f} s")
        return result

    def absorb(self, job: dict[str, Any], what: str) -> None:
        """Take in the results and timings of a job run in another process."""
        self.results.update(job["results"])
        self.timings.update(job["timings"])
        self.log(f"{what}: trained and evaluated ({sum(job['timings'].values()):.1f} s)")

    @property
    def episodes(self) -> list[Episode]:
        """The teacher's episodes (deterministic: regenerated rather than stored twice)."""
        if self._episodes is None:
            c = self.config
            self._episodes = [teach(t, c.teacher, seed=c.seed) for t in make_tasks("train", c.tasks.train,
                                                                                   c.tasks.mix, seed=c.seed)]
        return self._episodes


# -- data stages --------------------------------------------------------------------------------------------

def teacher_stats(episodes: list[Episode]) -> dict[str, Any]:
    """Resolve rate (overall, by difficulty), label counts, the mistake share of failed trajectories' steps."""
    by_diff: dict[str, list[bool]] = {}
    labels, failed_labels = Counter(), Counter()
    for ep in episodes:
        by_diff.setdefault(ep.task.difficulty, []).append(ep.resolved)
        for step in ep.steps:
            labels[step.label] += 1
            if not ep.resolved:
                failed_labels[step.label] += 1
    n_failed = sum(failed_labels.values())
    return {"trajectories": len(episodes), "resolved": sum(ep.resolved for ep in episodes),
            "resolve_rate": sum(ep.resolved for ep in episodes) / len(episodes),
            "resolve_rate_by_difficulty": {d: sum(v) / len(v) for d, v in sorted(by_diff.items())},
            "steps": sum(labels.values()), "labels": dict(sorted(labels.items())),
            "labels_in_unresolved": dict(sorted(failed_labels.items())),
            "mistake_share_of_unresolved_steps": failed_labels["mistake"] / n_failed if n_failed else None,
            "exit_status": dict(sorted(Counter(ep.exit_status for ep in episodes).items()))}


def _generate(run: _Run, d: Path) -> dict[str, Any]:
    write_teacher(d / "trajectories.jsonl", run.episodes)
    return teacher_stats(run.episodes)


def _ingest(run: _Run, d: Path) -> dict[str, Any]:
    ingest = _require("ingest", "srft.formats.ingest", "issue 2")
    result = ingest.run_ingest([run.out / "generate" / "trajectories.jsonl"], d)
    if not result.ok():
        raise LabError(f"ingest of the teacher's trajectories failed: {result.report.get('bad')}")
    return {k: result.report[k] for k in ingest.SUMMARY_KEYS}


def _labels(run: _Run, d: Path) -> dict[str, Any]:
    trajectories = read_trajectories(run.out / "ingest")
    oracle = oracle_labels(trajectories, run.episodes)
    write_labels(d / f"{ORACLE}.jsonl", oracle)
    unresolved = {t.id for t in trajectories if not t.resolved}
    # Gold for scoring critics: the critic labels unresolved trajectories only (as SRFT uses it).
    write_labels(d / f"{ORACLE}-unresolved.jsonl", [lab for lab in oracle if lab.trajectory_id in unresolved])
    for q in run.config.noise:
        write_labels(d / f"flip-q{q:g}.jsonl", flip_labels(oracle, q, seed=run.config.seed))
    return {"oracle_rows": len(oracle), "unresolved_rows": sum(lab.trajectory_id in unresolved for lab in oracle),
            "flips": [f"flip-q{q:g}.jsonl" for q in run.config.noise]}


def _annotate(run: _Run, d: Path) -> dict[str, Any]:
    annotate = _require("annotate", "srft.critic.annotate", "issue 4")
    critic_eval = _require("annotate", "srft.critic.eval", "issue 5")
    report = annotate.run_annotate(run.out / "ingest", d, {"critic": {"name": "heuristic"}, "only": "unresolved"})
    labels = run.out / "labels"
    preds = [d / "annotations.jsonl", *(labels / f"flip-q{q:g}.jsonl" for q in run.config.noise)]
    scores = critic_eval.run_critic_eval(labels / f"{ORACLE}-unresolved.jsonl", preds, run.out / "ingest",
                                         critic_eval.EvalConfig(mask_labels=("mistake",), seed=run.config.seed))
    atomic_write_json(d / "critic_eval.json", scores)
    keys = ("trajectories", "steps", "labels", "failed")
    return {**{k: report.get(k) for k in keys}, "vs_oracle": [_score(e) for e in scores["preds"]]}


def _score(entry: dict[str, Any]) -> dict[str, Any]:
    """A critic's agreement with the oracle on unresolved steps, and its error rate on the mask decision."""
    from srft.model import LABELS

    cm, m = entry["confusion"], LABELS.index("mistake")
    wrong = sum(cm[m][j] for j in range(len(LABELS)) if j != m) + sum(cm[i][m] for i in range(len(LABELS)) if i != m)
    return {"name": entry["name"], "steps": entry["matched_steps"],
            "mask_error": wrong / max(entry["matched_steps"], 1),
            "binary_f1": entry["binary_f1"]["value"], "macro_f1": entry["macro_f1"]["value"],
            "kappa": entry["kappa"]["value"], "mistake": entry["per_label"]["mistake"]}


def annotations_for(run: _Run, arm: Arm) -> Path | None:
    """The step-label file an arm's build reads."""
    if arm.labels == "flip":
        return run.out / "labels" / f"flip-q{arm.q:g}.jsonl"
    return {"none": None, "oracle": run.out / "labels" / f"{ORACLE}.jsonl",
            "critic": run.out / "annotate" / "annotations.jsonl"}[arm.labels]


# -- the student --------------------------------------------------------------------------------------------

def render_texts(conversations: list[list], tokenizer_template: str) -> list[str]:
    from transformers.utils.chat_template_utils import render_jinja_template

    from srft.lab.env import TOOLS

    return render_jinja_template(conversations=[[m.to_openai() for m in c] for c in conversations], tools=TOOLS,
                                 chat_template=tokenizer_template)[0]


def pretrain_conversations(config: LabConfig) -> list[list]:
    """The base model's instruction episodes on the pretraining tasks (see srft.lab.base)."""
    from srft.lab.base import instruction_episode

    tasks = make_tasks("pretrain", config.tasks.pretrain, config.tasks.mix, seed=config.seed)
    return [instruction_episode(t, seed=config.seed, max_steps=config.max_steps) for t in tasks]


def _pretrain_rows(config: LabConfig, tokenizer) -> list[dict[str, list[int]]]:
    """The base model's corpus: instruction episodes rendered with the chat template, every token trained."""
    from srft.lab.tokenizer import CHAT_TEMPLATE

    texts = render_texts(pretrain_conversations(config), CHAT_TEMPLATE)
    return [{"input_ids": ids, "labels": list(ids)}
            for ids in (tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts)]


def train_lab_tokenizer(config: LabConfig, episodes: list[Episode], out_dir: Path) -> dict[str, Any]:
    """BPE on the lab's own text (teacher + pretraining conversations) with the ChatML tool template."""
    from srft.lab.tokenizer import CHAT_TEMPLATE, train_tokenizer

    texts = render_texts([ep.messages for ep in episodes] + pretrain_conversations(config), CHAT_TEMPLATE)
    tok = train_tokenizer(texts, out_dir, vocab_size=config.student.vocab_size)
    return {"vocab_size": len(tok), "texts": len(texts)}


def _tokenizer(run: _Run, d: Path) -> dict[str, Any]:
    return train_lab_tokenizer(run.config, run.episodes, d / "tokenizer")


def _train_config(model: Path, schedule, seed: int, max_length: int):
    from srft.train.config import TrainConfig

    return TrainConfig(model=str(model), method="full", max_steps=schedule.max_steps, batch_size=schedule.batch_size,
                       lr=schedule.lr, lr_scheduler=schedule.scheduler, warmup_ratio=schedule.warmup_ratio, seed=seed,
                       max_length=max_length)


def _train_summary(report: dict[str, Any]) -> dict[str, Any]:
    keys = ("steps", "epochs", "tokens_seen", "trained_tokens", "train_seconds", "tokens_per_s", "first_loss",
            "final_loss", "peak_rss_mb")
    return {k: report.get(k) for k in keys}


def train_base(config: LabConfig, tok_dir: Path, d: Path, callbacks: list | None = None) -> dict[str, Any]:
    """Random init -> induction warm-up -> pretraining on instruction episodes (see srft.lab.base); the base
    student ends in `d/model`. Shared by `srft lab` and `srft run`'s lab recipes."""
    models = _require("base", "srft.train.models", "issue 6")
    train = _require("base", "srft.train.run", "issue 6")
    from srft.lab.base import induction_rows
    from srft.lab.tokenizer import load_tokenizer

    c = config
    tokenizer = load_tokenizer(tok_dir)
    init = models.InitConfig(arch=c.student.arch, preset=c.student.preset, overrides=c.student.overrides,
                             max_position_embeddings=max(2048, c.max_length), seed=c.seed)
    info = models.init_model(tok_dir, d / "init", init)
    special = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)
    vocab = [i for i in range(len(tokenizer)) if i not in special]
    warm_rows = induction_rows(vocab, c.induction.max_steps * c.induction.batch_size, seed=c.seed)
    warm_data = write_pretrain_dataset(warm_rows, d / "induction")
    warm = train.run_train(d / "induction", d / "warm", _train_config(d / "init", c.induction, c.seed, c.max_length),
                           callbacks=callbacks or ())
    data = write_pretrain_dataset(_pretrain_rows(c, tokenizer), d / "pretrain")
    report = train.run_train(d / "pretrain", d / "model", _train_config(d / "warm", c.pretrain, c.seed, c.max_length),
                             callbacks=callbacks or ())
    return {"parameters": info["parameters"], "induction_data": warm_data, "induction": _train_summary(warm),
            "pretrain_data": data, "train": _train_summary(report)}


def _base(run: _Run, d: Path) -> dict[str, Any]:
    return train_base(run.config, run.out / "tokenizer" / "tokenizer", d)


def _build(run: _Run, arm: Arm, d: Path) -> dict[str, Any]:
    build = _require(f"build/{arm.name}", "srft.dataset.build", "issue 3")
    from srft.dataset.masks import MaskConfig

    cfg = build.BuildConfig(tokenizer=str(run.out / "tokenizer" / "tokenizer"), policy=arm.policy,
                            masks=MaskConfig(max_length=run.config.max_length, truncation="drop"))
    report = build.run_build(run.out / "ingest", d, cfg, annotations=annotations_for(run, arm))
    keys = ("samples", "trajectories_used", "trajectories_dropped", "tokens", "trained_tokens", "masked_step_tokens",
            "truncated_tokens")
    return {k: report.get(k) for k in keys} | {"policy": report.get("policy")}


def _train(run: _Run, arm: Arm, seed: int, d: Path) -> dict[str, Any]:
    train = _require(f"train/{arm.name}", "srft.train.run", "issue 6")
    c = run.config
    report = train.run_train(run.out / "build" / arm.name, d / "model",
                             _train_config(run.out / "base" / "model", c.finetune, seed, c.max_length))
    return _train_summary(report)


def _evaluate(run: _Run, model_dir: Path, d: Path) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from srft.lab.rollout import run_episodes

    c = run.config
    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    tasks = make_tasks("eval", c.tasks.eval, c.tasks.mix, seed=c.seed)
    episodes = run_episodes(model, tokenizer, tasks, max_steps=c.max_steps, batch_size=c.eval_batch)
    write_jsonl(d / "episodes.jsonl", (chat_record(ep.task.instance_id, ep.messages, ep.resolved,
                                                   model=str(model_dir), metadata={**ep.summary(),
                                                                                   "actions": ep.actions})
                                       for ep in sorted(episodes, key=lambda e: e.task.instance_id)))
    by_diff: dict[str, list[bool]] = {}
    for ep in episodes:
        by_diff.setdefault(ep.task.difficulty, []).append(ep.resolved)
    return {"resolved": {ep.task.instance_id: ep.resolved for ep in episodes},
            "success": sum(ep.resolved for ep in episodes) / len(episodes),
            "success_by_difficulty": {k: sum(v) / len(v) for k, v in sorted(by_diff.items())},
            "invalid_actions": sum(ep.env.invalid for ep in episodes),
            "actions": sum(ep.env.steps for ep in episodes),
            "exit_status": dict(sorted(Counter(ep.exit_status for ep in episodes).items()))}


# -- the experiment -----------------------------------------------------------------------------------------

def _keys(c: LabConfig) -> dict[str, Any]:
    """Stage fingerprints: each holds exactly what the stage's output depends on."""
    data = {"seed": c.seed, "tasks": c.tasks.model_dump(), "teacher": c.teacher.model_dump()}
    student = [data, c.student.model_dump(), c.max_steps]
    return {"data": data, "student": student,
            "base": [student, c.induction.model_dump(), c.pretrain.model_dump(), c.max_length]}


def _build_key(c: LabConfig, arm: Arm) -> list:
    return [_keys(c)["student"], arm.model_dump(), c.max_length, c.noise if arm.labels == "flip" else None]


def _arm_seed(config_json: str, out_dir: str, arm_name: str, seed: int) -> dict[str, Any]:
    """Fine-tune one arm with one seed from the base and evaluate it (a process-pool job: arguments are plain)."""
    import torch

    c = LabConfig.model_validate_json(config_json)
    torch.set_num_threads(c.threads)
    arm = next(a for a in arms(c) if a.name == arm_name)
    run = _Run(c, Path(out_dir), lambda _: None)
    train_key = [_keys(c)["base"], _build_key(c, arm), c.finetune.model_dump(), seed]
    run.stage(f"train/{arm.name}/seed{seed}", train_key, lambda d: _train(run, arm, seed, d))
    model = run.out / "train" / arm.name / f"seed{seed}" / "model"
    run.stage(f"eval/{arm.name}/seed{seed}", [train_key, c.tasks.eval], lambda d: _evaluate(run, model, d))
    return {"results": run.results, "timings": run.timings}


def _fine_tune_all(run: _Run) -> None:
    """Every (arm, seed) job, `workers` at a time in spawned processes (one torch thread each)."""
    import concurrent.futures as cf
    import multiprocessing

    c = run.config
    jobs = [(arm.name, seed) for arm in arms(c) for seed in c.seeds]
    args = (c.model_dump_json(), str(run.out))
    if c.workers == 1:
        done = (_arm_seed(*args, name, seed) for name, seed in jobs)
        for (name, seed), res in zip(jobs, done):
            run.absorb(res, f"{name}/seed{seed}")
        return
    with cf.ProcessPoolExecutor(c.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_arm_seed, *args, name, seed): (name, seed) for name, seed in jobs}
        for future in cf.as_completed(futures):
            name, seed = futures[future]
            run.absorb(future.result(), f"{name}/seed{seed}")


def run_lab(config: LabConfig, out_dir: str | Path, *, log: Callable[[str], None] = lambda _: None) -> dict:
    """Run (or resume) the whole experiment into `out_dir`; return lab_report.json's content."""
    import datasets
    import torch

    from srft.lab import report as lab_report

    datasets.disable_progress_bars()
    torch.set_num_threads(config.threads)
    start = time.perf_counter()
    run, c = _Run(config, Path(out_dir), log), config
    keys = _keys(c)
    run.stage("generate", keys["data"], lambda d: _generate(run, d))
    run.stage("ingest", keys["data"], lambda d: _ingest(run, d))
    run.stage("labels", [keys["data"], c.noise], lambda d: _labels(run, d))
    run.stage("annotate", keys["data"], lambda d: _annotate(run, d))
    run.stage("tokenizer", keys["student"], lambda d: _tokenizer(run, d))
    run.stage("base", keys["base"], lambda d: _base(run, d))
    run.stage("eval/base", [keys["base"], c.tasks.eval], lambda d: _evaluate(run, run.out / "base" / "model", d))
    for arm in arms(c):
        run.stage(f"build/{arm.name}", _build_key(c, arm), lambda d, arm=arm: _build(run, arm, d))
    _fine_tune_all(run)
    columns = {"base": run.results["eval/base"]["resolved"]}
    columns |= {f"{arm.name}.s{seed}": run.results[f"eval/{arm.name}/seed{seed}"]["resolved"]
                for arm in arms(c) for seed in c.seeds}
    write_outcomes(run.out / "outcomes.csv", columns)
    comparison = lab_report.compare(run.out, c, arms(c))
    return lab_report.write_report(run.out, c, arms(c), comparison, run.results, run.timings,
                                   wall_s=time.perf_counter() - start)
