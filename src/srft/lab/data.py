"""The lab's files, in the formats users' own data arrives in: what the real pipeline stages read.

- Teacher (and student) trajectories: generic OpenAI chat rows (`messages`, `tools`, `instance_id`,
  `resolved`, `model`, `metadata`), one JSON object per line; `srft ingest` reads them like any user's file.
- Oracle step labels: a `srft.labels` file (source `oracle`), keyed by the trajectory ids `srft ingest`
  derived from the content, matched back to the teacher's episodes by instance id.
- Noisy oracle labels for the critic-noise sweep (`flip_labels`), the same with simulated votes whose confidence
  is or is not informative (`vote_labels`), and per-instance 0/1 outcome tables that `srft compare` reads (one
  column per policy and training seed).
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from srft.dataset.masks import IGNORE_INDEX
from srft.io import atomic_write_text, write_jsonl
from srft.labels import StepLabel
from srft.lab.config import LabConfig
from srft.lab.env import TOOLS
from srft.lab.tasks import make_tasks
from srft.lab.teacher import TEACHER_MODEL, TeacherEpisode, teach
from srft.model import Message, Trajectory

ORACLE = "oracle"


class LabDataError(ValueError):
    """Ingested trajectories that do not match the episodes the lab wrote (names every mismatch)."""


def teacher_episodes(config: LabConfig) -> list[TeacherEpisode]:
    """The teacher's episodes on the training tasks (deterministic: regenerated where needed, never stored twice)."""
    tasks = make_tasks("train", config.tasks.train, config.tasks.mix, seed=config.seed)
    return [teach(t, config.teacher, seed=config.seed) for t in tasks]


def chat_record(instance_id: str, messages: list[Message], resolved: bool, *, model: str,
                metadata: dict[str, Any]) -> dict[str, Any]:
    """One generic OpenAI chat row, as `srft.formats.openai_chat` reads it."""
    return {"instance_id": instance_id, "messages": [m.to_openai() for m in messages], "tools": TOOLS,
            "resolved": resolved, "model": model, "metadata": metadata}


def teacher_record(ep: TeacherEpisode) -> dict[str, Any]:
    return chat_record(ep.task.instance_id, ep.messages, ep.resolved, model=TEACHER_MODEL, metadata={
        "exit_status": ep.exit_status, "submission": ep.submission, "api_calls": len(ep.steps),
        "difficulty": ep.task.difficulty, "hint_misleading": ep.task.hint_misleading})


def write_teacher(path: str | os.PathLike, episodes: Iterable[TeacherEpisode]) -> int:
    """Teacher trajectories as OpenAI chat JSONL, sorted by instance id (same episodes, same bytes)."""
    return write_jsonl(path, (teacher_record(ep) for ep in sorted(episodes, key=lambda e: e.task.instance_id)))


def oracle_labels(trajectories: Iterable[Trajectory], episodes: Iterable[TeacherEpisode]) -> list[StepLabel]:
    """The teacher's true labels keyed by ingested trajectory id (one row per step of every trajectory).

    Matching is by instance id (one teacher run per task); the step count and each step's tool name must
    agree with what the teacher did, else LabDataError lists every mismatch."""
    by_instance = {ep.task.instance_id: ep for ep in episodes}
    rows, problems, matched = [], [], set()
    for traj in trajectories:
        ep = by_instance.get(traj.instance_id or "")
        if ep is None:
            problems.append(f"trajectory {traj.id}: instance {traj.instance_id!r} was not run by the teacher")
            continue
        matched.add(ep.task.instance_id)
        names = [traj.messages[s.message_index].tool_calls[0].function.name
                 if traj.messages[s.message_index].tool_calls else None for s in traj.steps]
        if names != [s.name for s in ep.steps]:
            problems.append(f"trajectory {traj.id} ({traj.instance_id}): steps {names} differ from the "
                            f"teacher's {[s.name for s in ep.steps]}")
            continue
        rows += [StepLabel(trajectory_id=traj.id, step=n, label=s.label, reason=s.reason, source=ORACLE)
                 for n, s in enumerate(ep.steps, 1)]
    missing = sorted(set(by_instance) - matched)
    if missing:
        problems.append(f"{len(missing)} teacher episode(s) not found after ingest, e.g. {missing[:3]}")
    if problems:
        raise LabDataError("oracle labels do not line up with the ingested store:\n  " + "\n  ".join(problems))
    return rows


def _uniform(*keys: object) -> float:
    """A deterministic uniform in [0, 1) from the keys (order-independent of how labels are iterated)."""
    digest = hashlib.sha256(":".join(map(str, keys)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def flip_labels(labels: Iterable[StepLabel], q: float, seed: int = 0) -> list[StepLabel]:
    """A critic that is wrong on a fraction q of steps, on the axis SRFT uses (mask or train).

    Each step independently, with probability q: a `mistake` becomes `good` (a missed mistake, trained on)
    and any other label becomes `mistake` (a false alarm, masked). q=0 is the oracle; q=0.5 makes the labels
    independent of the truth (a coin); q=1 inverts them."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"flip rate q must be in [0, 1], got {q}")
    out = []
    for lab in labels:
        if _uniform("flip", seed, q, lab.trajectory_id, lab.step) < q:
            new = "good" if lab.label == "mistake" else "mistake"
            lab = lab.model_copy(update={"label": new, "source": f"{ORACLE}-flip-{q:g}",
                                         "reason": f"flipped from {lab.label} (q={q:g})"})
        else:
            lab = lab.model_copy(update={"source": f"{ORACLE}-flip-{q:g}"})
        out.append(lab)
    return out


def vote_labels(gold: Iterable[StepLabel], q: float, seed: int = 0, informative: bool = True) -> list[StepLabel]:
    """A critic of error rate q that also says how sure it is: the labels of `flip_labels(gold, q, seed)` (the same
    labels, so the same error rate as the hard arm) with 3 simulated votes each. A low-confidence step has 2 of 3
    votes, the third on the other side of the mask decision (the truth, where the label is wrong); a sure one 3.

    informative:   every wrong label is unsure, and so is a share q of the right ones: errors live where the
                   critic is unsure (P(wrong | sure) = 0, P(wrong | unsure) = 1 / (2 - q));
    uninformative: a share q + q(1 - q) of steps is unsure (the same as above on average), drawn independently
                   of the errors: confidence says nothing about correctness."""
    gold = list(gold)
    tag = "informative" if informative else "uninformative"
    out = []
    for truth, lab in zip(gold, flip_labels(gold, q, seed), strict=True):
        wrong = (truth.label == "mistake") != (lab.label == "mistake")
        draw = _uniform("confidence", tag, seed, q, lab.trajectory_id, lab.step)
        unsure = (wrong or draw < q) if informative else draw < q + q * (1 - q)
        other = truth.label if wrong else ("good" if lab.label == "mistake" else "mistake")
        votes = {lab.label: 2, other: 1} if unsure else {lab.label: 3}
        out.append(lab.model_copy(update={"votes": votes, "confidence": max(votes.values()) / 3,
                                          "source": f"{ORACLE}-votes-{tag}-{q:g}"}))
    return out


def write_outcome_table(path: str | os.PathLike, columns: Mapping[str, Mapping[str, bool]]) -> int:
    """A per-instance 0/1 table: `instance_id` then one column per run (sorted), rows sorted by id."""
    names = sorted(columns)
    ids = sorted({iid for col in columns.values() for iid in col})
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["instance_id", *names])
    for iid in ids:
        writer.writerow([iid, *("" if iid not in columns[n] else int(columns[n][iid]) for n in names)])
    atomic_write_text(path, buf.getvalue())
    return len(ids)


def read_outcome_table(path: str | os.PathLike) -> dict[str, dict[str, bool]]:
    """Inverse of write_outcome_table (blank cells are left out)."""
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    cols: dict[str, dict[str, bool]] = {}
    for row in rows:
        for name, cell in row.items():
            if name != "instance_id" and cell != "":
                cols.setdefault(name, {})[row["instance_id"]] = cell == "1"
    return cols


def write_pretrain_dataset(rows: list[dict[str, list[int]]], out_dir: str | os.PathLike) -> dict[str, int]:
    """A pretraining set (`input_ids`, `labels`; IGNORE_INDEX = not trained) saved where `srft.train.run_train`
    looks for a build (`OUT/dataset/`)."""
    import datasets

    from srft.io import atomic_path

    ds = datasets.Dataset.from_dict({"input_ids": [r["input_ids"] for r in rows],
                                     "labels": [r["labels"] for r in rows]})
    out = Path(out_dir) / "dataset"
    with atomic_path(out, directory=True) as tmp:
        ds.save_to_disk(str(tmp))
    return {"rows": len(rows), "tokens": sum(len(r["input_ids"]) for r in rows),
            "trained_tokens": sum(sum(t != IGNORE_INDEX for t in r["labels"]) for r in rows)}
