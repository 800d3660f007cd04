"""Step-label files: one row per step, the contract between critics, humans, the lab and `srft build`.

Row: trajectory_id, step (1-based, as `Step.number`), label in LABELS, optional reason, source
(critic id / "human" / "oracle") and optional prompt_hash (the critic prompt that produced it).
Optional confidence columns (files without them still read): `votes` {label: count} when several samples or
critics voted (the label is the majority), `probs` {label: probability} when a critic gave token
probabilities, and `confidence` in [0, 1], the winning label's share or probability.
Files are JSONL or Parquet; both are written sorted by (trajectory_id, step) so the same labels give the same
bytes. Loading validates everything and reports every bad row at once. This module is the one reader of
step-label files: rows may name their trajectory by `file`/`instance_id` when a `resolve` function is given.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from srft.config import validation_problems
from srft.io import atomic_path, iter_jsonl, write_jsonl
from srft.model import LABELS, Label, Trajectory

MAX_REPORTED = 20  # problems listed in one error message; the count of the rest follows


class StepLabel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    trajectory_id: str
    step: int = Field(ge=1)
    label: Label
    reason: str | None = None
    source: str | None = None
    prompt_hash: str | None = None
    votes: dict[Label, int] | None = Field(None, description="votes per label (samples or ensemble members)")
    probs: dict[Label, float] | None = Field(None, description="probability per label (token log-probabilities)")
    confidence: float | None = Field(None, ge=0.0, le=1.0, description="the label's share of votes or probability")

    @field_validator("votes", "probs", mode="before")
    @classmethod
    def _present(cls, value: Any) -> Any:
        """Parquet holds a field per label; the labels without votes read back as None."""
        return {k: v for k, v in value.items() if v is not None} if isinstance(value, dict) else value

    @model_validator(mode="after")
    def _consistent(self) -> StepLabel:
        if self.votes is not None and (any(n < 0 for n in self.votes.values()) or self.votes.get(self.label, 0) < 1):
            raise ValueError(f"votes {self.votes}: counts must be >= 0 and the label {self.label!r} needs a vote")
        if self.probs is not None and (any(not 0 <= p <= 1 for p in self.probs.values())
                                       or abs(sum(self.probs.values()) - 1) > 1e-3):
            raise ValueError(f"probs {self.probs}: expected probabilities in [0, 1] that sum to 1")
        return self

    def shares(self) -> dict[str, float] | None:
        """Each label's share of the votes (or its probability); None for a plain hard label."""
        if self.votes:
            total = sum(self.votes.values())
            return {lab: n / total for lab, n in self.votes.items() if n}
        return dict(self.probs) if self.probs else None


COLUMNS = tuple(StepLabel.model_fields)
OPTIONAL = ("votes", "probs", "confidence")  # written only when some row has them: older files stay identical


class LabelFileError(ValueError):
    """Invalid rows in a step-label file. `problems` holds one 'file:row: reason' string per bad row."""

    def __init__(self, path: str | os.PathLike, problems: list[str]):
        self.path, self.problems = str(path), problems
        shown = "\n  ".join(problems[:MAX_REPORTED])
        more = f"\n  ... and {len(problems) - MAX_REPORTED} more" if len(problems) > MAX_REPORTED else ""
        super().__init__(f"{path}: {len(problems)} invalid row(s):\n  {shown}{more}")


def _raw_rows(path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    """(row number from 1, dict) for JSONL (line numbers) or Parquet (row order)."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        for i, rec in enumerate(pq.read_table(path).to_pylist(), 1):
            yield i, rec
    else:
        yield from iter_jsonl(path)


def read_labels(path: str | os.PathLike,
                trajectories: Mapping[str, Trajectory] | None = None,
                resolve: Callable[[dict[str, Any]], str] | None = None, *,
                step_counts: Mapping[str, int] | None = None) -> list[StepLabel]:
    """Load and validate a step-label file.

    Checks each row's fields and label; with `trajectories` (id -> Trajectory), or `step_counts` (id -> number
    of steps, when whole trajectories are not loaded), also that the trajectory exists and the step is in range.
    Duplicate (trajectory_id, step) rows are errors. Raises LabelFileError listing every problem with its row
    number. `resolve` maps a row without `trajectory_id` (files made outside srft name it by `file` or
    `instance_id`) to a trajectory id, raising ValueError with the reason when it cannot.
    """
    if trajectories is not None:
        step_counts = {tid: len(t.steps) for tid, t in trajectories.items()}
    path = Path(path)
    problems: list[str] = []
    seen: dict[tuple[str, int], int] = {}
    out: list[StepLabel] = []
    try:
        rows = list(_raw_rows(path))
    except (OSError, ValueError) as exc:
        raise LabelFileError(path, [f"{path}: cannot read: {exc}"]) from exc
    for row, rec in rows:
        where = f"{path.name}:{row}"
        if resolve is not None and not rec.get("trajectory_id"):
            try:
                rec = {**rec, "trajectory_id": resolve(rec)}
            except ValueError as exc:
                problems.append(f"{where}: {exc}")
                continue
        rec = {k: rec[k] for k in COLUMNS if k in rec}  # other columns (e.g. a critic's model) are allowed
        if rec.get("label") not in LABELS:
            problems.append(f"{where}: unknown label {rec.get('label')!r} (expected one of {', '.join(LABELS)})")
            continue
        try:
            item = StepLabel(**rec)
        except ValidationError as exc:  # name the fields
            problems.append(f"{where}: {'; '.join(validation_problems(exc, StepLabel))}")
            continue
        key = (item.trajectory_id, item.step)
        if key in seen:
            problems.append(f"{where}: duplicate step {item.step} of trajectory {item.trajectory_id} "
                            f"(first at row {seen[key]})")
            continue
        seen[key] = row
        if step_counts is not None:
            n_steps = step_counts.get(item.trajectory_id)
            if n_steps is None:
                problems.append(f"{where}: unknown trajectory {item.trajectory_id!r}")
                continue
            if item.step > n_steps:
                problems.append(f"{where}: step {item.step} out of range (trajectory {item.trajectory_id} "
                                f"has {n_steps} steps)")
                continue
        out.append(item)
    if problems:
        raise LabelFileError(path, problems)
    return sort_labels(out)


def sort_labels(labels: Iterable[StepLabel]) -> list[StepLabel]:
    return sorted(labels, key=lambda x: (x.trajectory_id, x.step))


def write_labels(path: str | os.PathLike, labels: Iterable[StepLabel]) -> int:
    """Write labels sorted by (trajectory_id, step) to `.jsonl` or `.parquet` (by suffix), atomically."""
    path = Path(path)
    rows = [lab.model_dump() for lab in sort_labels(labels)]
    unused = [k for k in OPTIONAL if all(r[k] is None for r in rows)]
    for r in rows:
        for k in unused:
            del r[k]
    if path.suffix != ".parquet":
        return write_jsonl(path, rows)
    import pyarrow as pa
    import pyarrow.parquet as pq

    s = pa.string()
    types = {"votes": pa.struct([(lab, pa.int64()) for lab in LABELS]),
             "probs": pa.struct([(lab, pa.float64()) for lab in LABELS]), "confidence": pa.float64()}
    schema = pa.schema([("trajectory_id", s), ("step", pa.int64()), ("label", s), ("reason", s), ("source", s),
                        ("prompt_hash", s), *((k, types[k]) for k in OPTIONAL if k not in unused)])
    with atomic_path(path) as tmp:
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp)
    return len(rows)


def apply_labels(trajectories: Iterable[Trajectory], labels: Iterable[StepLabel]) -> list[Trajectory]:
    """Copies of the trajectories with `label`, `label_reason`, `label_source` and `label_probs` (the vote
    shares, when the labels carry them) set on labelled steps."""
    by_traj: dict[str, dict[int, StepLabel]] = {}
    for lab in labels:
        by_traj.setdefault(lab.trajectory_id, {})[lab.step] = lab
    out = []
    for traj in trajectories:
        mine = by_traj.get(traj.id)
        if not mine:
            out.append(traj)
            continue
        steps = [s.model_copy(update={"label": mine[s.number].label, "label_reason": mine[s.number].reason,
                                      "label_source": mine[s.number].source,
                                      "label_probs": mine[s.number].shares()}) if s.number in mine else s
                 for s in traj.steps]
        out.append(traj.model_copy(update={"steps": steps}))
    return out


def labels_of(trajectories: Iterable[Trajectory]) -> list[StepLabel]:
    """The labels carried on steps, as rows (inverse of apply_labels)."""
    return [StepLabel(trajectory_id=t.id, step=s.number, label=s.label, reason=s.label_reason,
                      source=s.label_source, probs=s.label_probs,
                      confidence=None if s.label_probs is None else s.label_probs.get(s.label, 0.0))
            for t in trajectories for s in t.steps if s.label is not None]
