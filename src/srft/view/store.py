"""What the viewer shows: trajectory summaries, whole trajectories on demand, annotation sources, agreement.

A store of 100k trajectories is too big to hold whole, so the list reads only light columns once (ids,
outcome, provenance, step counts, stored labels) and a trajectory page reads its one row by id (the store is
sorted by id, so Parquet row-group statistics skip the rest).
Annotation files are small (one row per step) and held in memory.
"""

from __future__ import annotations

import os
import threading
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from srft.critic.eval import TrajectoryIndex, label_file_names, load_labels, metrics_from_confusion
from srft.labels import StepLabel
from srft.model import LABELS, Trajectory
from srft.view.db import HumanLabel

CACHED = 16  # whole trajectories kept in memory (one page view reads one)
STORE_SOURCE = "store"  # name of the labels carried on the steps of the store itself


@dataclass(frozen=True)
class Summary:
    id: str
    instance_id: str | None
    repo: str | None
    resolved: bool | None
    status: str
    format: str
    path: str
    row: int | None
    model: str | None
    n_steps: int


@dataclass
class Annotations:
    """Label sources by name (file stem, or `store`): (trajectory_id, step) -> StepLabel."""

    sources: dict[str, dict[tuple[str, int], StepLabel]] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)
    counts: dict[str, dict[str, Counter]] = field(default_factory=dict)  # trajectory -> source -> label counts
    confidences: dict[str, list[float]] = field(default_factory=dict)  # trajectory -> every label's confidence
    _split: Counter | None = field(default=None, repr=False)  # trajectory -> steps the sources disagree on

    def add(self, name: str, path: str, labels: Sequence[StepLabel]) -> None:
        self.sources[name] = {(x.trajectory_id, x.step): x for x in labels}
        self.paths[name] = path
        self._split = None
        for x in labels:
            self.counts.setdefault(x.trajectory_id, {}).setdefault(name, Counter())[x.label] += 1
            if x.confidence is not None:
                self.confidences.setdefault(x.trajectory_id, []).append(x.confidence)

    def of(self, trajectory_id: str, step: int) -> dict[str, StepLabel]:
        return {name: labs[(trajectory_id, step)] for name, labs in self.sources.items()
                if (trajectory_id, step) in labs}

    def mean_confidence(self, trajectory_id: str) -> float | None:
        """The mean confidence of the critics' labels on this trajectory (None: no label carries one)."""
        values = self.confidences.get(trajectory_id)
        return sum(values) / len(values) if values else None

    def disagreement(self, trajectory_id: str) -> int:
        """Steps of this trajectory that two annotation sources label differently."""
        if self._split is None:
            steps: dict[tuple[str, int], set[str]] = {}
            for labs in self.sources.values():
                for key, lab in labs.items():
                    steps.setdefault(key, set()).add(lab.label)
            self._split = Counter(tid for (tid, _), seen in steps.items() if len(seen) > 1)
        return self._split[trajectory_id]


class Store:
    def __init__(self, path: str | os.PathLike):
        path = Path(path)
        self.file = path / "trajectories.parquet" if path.is_dir() else path
        if not self.file.exists():
            raise FileNotFoundError(f"{path}: no trajectory store (expected an `srft ingest` output directory "
                                    f"holding trajectories.parquet, or a .parquet/.jsonl store file)")
        self._cache: OrderedDict[str, Trajectory] = OrderedDict()
        self._lock = threading.Lock()
        self._all: dict[str, Trajectory] | None = None  # JSONL stores are read whole
        self.summaries: list[Summary] = []
        self.store_labels: list[StepLabel] = []
        self._load_summaries()
        self.by_id = {s.id: s for s in self.summaries}
        self.order = {s.id: i for i, s in enumerate(self.summaries)}

    def _load_summaries(self) -> None:
        if self.file.suffix == ".parquet":
            import pyarrow.parquet as pq

            cols = ["id", "instance_id", "repo", "source.format", "source.path", "source.row", "outcome.resolved",
                    "outcome.status", "metadata.model", "steps.list.element.number",
                    "steps.list.element.label", "steps.list.element.label_reason",
                    "steps.list.element.label_source"]
            records = pq.ParquetFile(self.file).read(columns=cols).to_pylist()
        else:
            from srft.io import iter_trajectories

            self._all = {t.id: t for t in iter_trajectories(self.file)}
            records = [t.to_record() for t in self._all.values()]
        for rec in records:
            steps = rec["steps"] or []
            self.summaries.append(Summary(
                id=rec["id"], instance_id=rec["instance_id"], repo=rec["repo"],
                resolved=rec["outcome"]["resolved"], status=rec["outcome"]["status"] or "unknown",
                format=rec["source"]["format"] or "", path=rec["source"]["path"] or "", row=rec["source"]["row"],
                model=rec["metadata"]["model"], n_steps=len(steps)))
            self.store_labels += [StepLabel(trajectory_id=rec["id"], step=s["number"], label=s["label"],
                                            reason=s["label_reason"], source=s["label_source"])
                                  for s in steps if s["label"] in LABELS]
        self.summaries.sort(key=lambda s: s.id)

    def index(self) -> TrajectoryIndex:
        index = TrajectoryIndex()
        for s in self.summaries:
            index.add(s.id, s.instance_id, s.path, s.row, s.n_steps)
        return index

    def get(self, trajectory_id: str) -> Trajectory | None:
        if trajectory_id not in self.by_id:
            return None
        if self._all is not None:
            return self._all[trajectory_id]
        with self._lock:  # requests are served from a thread pool
            if trajectory_id in self._cache:
                self._cache.move_to_end(trajectory_id)
                return self._cache[trajectory_id]
        import pyarrow.parquet as pq

        rows = pq.read_table(self.file, filters=[("id", "==", trajectory_id)]).to_pylist()
        traj = Trajectory.from_record(rows[0])
        with self._lock:
            self._cache[trajectory_id] = traj
            while len(self._cache) > CACHED:
                self._cache.popitem(last=False)
        return traj


def load_annotations(store: Store, paths: Sequence[str | os.PathLike]) -> Annotations:
    """The store's own step labels (if any) plus each annotation file, validated against the store."""
    ann = Annotations()
    if store.store_labels:
        ann.add(STORE_SOURCE, str(store.file), store.store_labels)
    index = store.index()
    for name, path in zip(label_file_names(paths), paths, strict=True):
        ann.add(name if name != STORE_SOURCE else str(path), str(path), load_labels(path, index))
    return ann


def agreement(human: Sequence[HumanLabel], ann: Annotations, mask: Sequence[str] = ("mistake",)) -> dict[str, dict]:
    """Per source: how its labels agree with the given human labels on the steps both labelled.
    Values: steps, accuracy, Cohen's kappa (None when undefined), masked-vs-trained F1, macro-F1."""
    out = {}
    for name, labs in ann.sources.items():
        cm = np.zeros((len(LABELS), len(LABELS)), dtype=np.int64)
        for h in human:
            other = labs.get((h.trajectory_id, h.step))
            if other is not None:
                cm[LABELS.index(h.label), LABELS.index(other.label)] += 1
        m = metrics_from_confusion(cm, mask)
        kappa = float(m["kappa"])
        out[name] = {"steps": int(m["steps"]), "accuracy": round(float(m["micro_f1"]), 4),
                     "kappa": None if np.isnan(kappa) else round(kappa, 4),
                     "binary_f1": round(float(m["binary_f1"]), 4), "macro_f1": round(float(m["macro_f1"]), 4)}
    return out
