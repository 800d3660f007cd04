"""The base student: pretrained to use the tools on request, never shown a bug report.

The paper fine-tunes a pretrained model (Qwen2.5-Coder-32B, 7% before training), which already knows how to call
tools; the teacher's trajectories teach it the task. A CPU-sized student trained from scratch on a few hundred
teacher trajectories never gets that far: it has to learn the tool-call syntax and in-context copying (a name
from the report into a search, a path and line from a search hit into an edit) from the same data, and in our
measurements it learned neither (0% success on every arm, tool arguments copied correctly < 10% of the time).

So every arm starts from one shared base, pretrained with `srft train` on every token of *instruction episodes* on
separate tasks: the user lists concrete changes (`{"var": "beta", "value": 12}`), sometimes naming a file, and a
scripted assistant does exactly that (read the file if named, search, edit, submit). The base learns the syntax, what
each tool returns and how to copy names, paths, lines and values into calls; it never sees a bug report, a failing
test, a misleading hint, a mistake or a recovery, so how to fix bugs (and which of the teacher's habits to copy) is
left to the fine-tuning the arms differ in. It succeeds on few bug-fixing tasks: the `base` row of the results.
Before that, a short warm-up on random token sequences shown twice forms the induction heads copying rests on:
a dense copying signal the episodes alone give too sparsely (measured: with the warm-up a search hit's path is
copied into the next edit 87% of the time after 400 pretraining steps, without it 5%). The tokenizer's fused
JSON-key tokens (srft.lab.tokenizer) make those copies one-token inductions.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from srft.lab.config import LabConfig, Schedule
from srft.lab.env import LabEnv
from srft.lab.tasks import VALUE_RANGE, Task, make_tasks
from srft.lab.teacher import TeacherEpisode, TeacherStep, episode_messages
from srft.lab.tokenizer import render_texts
from srft.dataset.masks import IGNORE_INDEX
from srft.model import Message


def instruction_episode(task: Task, seed: int = 0, max_steps: int = 16) -> list[Message]:
    """One instruction episode on `task`'s repository: a requested change done by a scripted assistant,
    sometimes after reading the file the request names."""
    rng = random.Random(f"lab-instruction:{task.instance_id}:{seed}")
    names = [ln.split(" = ")[0] for lines in task.files.values() for ln in lines]
    # One change per episode: every value to copy is then the most recent one under its key (a one-token
    # induction); with several, a later call's own arguments would be the most recent and the wrong source.
    chosen = rng.sample(names, 1)
    values = {n: rng.randint(*VALUE_RANGE) for n in chosen}
    by_read = rng.random() < 0.3
    lines = ["Requested changes:", *(json.dumps({"var": n, "value": values[n]}) for n in chosen)]
    env, steps = LabEnv(task, max_steps=max_steps), []
    if by_read:  # the request names the file of its last change, which the assistant reads first
        path = task.location(chosen[-1])[0]
        lines.append(f"It is in {json.dumps({'path': path})}")
        steps.append(_step(env, "read", {"path": path}))
    for name in reversed(chosen):
        path, line = task.location(name)
        steps.append(_step(env, "search", {"var": name}))
        steps.append(_step(env, "edit", {"path": path, "line": line, "value": values[name]}))
    steps.append(_step(env, "submit", {}))
    task = task.model_copy(update={"statement": "\n".join(lines)})
    return episode_messages(task, steps)


def _step(env: LabEnv, tool: str, args: dict) -> TeacherStep:
    return TeacherStep(tool, args, env.step(tool, args).observation, "good", "instruction")


def induction_rows(vocab: list[int], n: int, length: int = 40, seed: int = 0) -> list[dict[str, list[int]]]:
    """Random token sequences shown twice, only the repeat trained: the warm-up that forms induction heads
    (find the previous occurrence of this token, copy what followed) in about a hundred steps, before the
    instruction episodes teach where to copy from. Rows in the build-dataset shape `srft train` reads."""
    rng = random.Random(f"lab-induction:{seed}")
    rows = []
    for _ in range(n):
        block = [rng.choice(vocab) for _ in range(length)]
        rows.append({"input_ids": block + block, "labels": [IGNORE_INDEX] * length + block})
    return rows


# -- the student: tokenizer, then the base model --------------------------------------------------------------

def pretrain_conversations(config: LabConfig) -> list[list[Message]]:
    """The base model's instruction episodes on the pretraining tasks."""
    tasks = make_tasks("pretrain", config.tasks.pretrain, config.tasks.mix, seed=config.seed)
    return [instruction_episode(t, seed=config.seed, max_steps=config.max_steps) for t in tasks]


def train_lab_tokenizer(config: LabConfig, episodes: list[TeacherEpisode], out_dir: Path) -> dict[str, Any]:
    """BPE on the lab's own text (teacher + pretraining conversations) with the ChatML tool template."""
    from srft.lab.tokenizer import train_tokenizer

    texts = render_texts([ep.messages for ep in episodes] + pretrain_conversations(config))
    tok = train_tokenizer(texts, out_dir, vocab_size=config.student.vocab_size)
    return {"vocab_size": len(tok), "texts": len(texts)}


def train_base(config: LabConfig, tok_dir: Path, out: Path, callbacks: list | None = None) -> dict[str, Any]:
    """Random init -> induction warm-up -> pretraining on every token of instruction episodes; the base student
    ends in `out/model` (`out/init`, `out/warm` and the two data sets are intermediate)."""
    from transformers import AutoTokenizer

    from srft.lab.data import write_pretrain_dataset
    from srft.train.models import InitConfig, init_model
    from srft.train.run import run_train

    c = config
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    init = InitConfig(arch=c.student.arch, preset=c.student.preset, overrides=c.student.overrides,
                      max_position_embeddings=max(2048, c.max_length), seed=c.seed)
    info = init_model(tok_dir, out / "init", init)
    special = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)
    vocab = [i for i in range(len(tokenizer)) if i not in special]
    warm_rows = induction_rows(vocab, c.induction.max_steps * c.induction.batch_size, seed=c.seed)
    warm_data = write_pretrain_dataset(warm_rows, out / "induction")
    warm = run_train(out / "induction", out / "warm", _train_config(out / "init", c.induction, c.seed, c.max_length),
                     callbacks=callbacks or ())
    texts = render_texts(pretrain_conversations(c))
    rows = [{"input_ids": ids, "labels": list(ids)}  # every token trained
            for ids in (tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts)]
    data = write_pretrain_dataset(rows, out / "pretrain")
    report = run_train(out / "pretrain", out / "model", _train_config(out / "warm", c.pretrain, c.seed, c.max_length),
                       callbacks=callbacks or ())
    return {"parameters": info["parameters"], "induction_data": warm_data, "induction": train_summary(warm),
            "pretrain_data": data, "train": train_summary(report)}


def _train_config(model: Path, schedule: Schedule, seed: int, max_length: int):
    from srft.train.config import TrainConfig

    return TrainConfig(model=str(model), method="full", max_steps=schedule.max_steps, batch_size=schedule.batch_size,
                       lr=schedule.lr, lr_scheduler=schedule.scheduler, warmup_ratio=schedule.warmup_ratio, seed=seed,
                       max_length=max_length)


def train_summary(report: dict[str, Any]) -> dict[str, Any]:
    keys = ("steps", "epochs", "tokens_seen", "trained_tokens", "train_seconds", "tokens_per_s", "first_loss",
            "final_loss", "peak_rss_mb")
    return {k: report.get(k) for k in keys}
