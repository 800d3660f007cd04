"""The build dataset as the trainer sees it: validation, loss coefficients, batch plans, the collator.

Shapes (one row of `BUILD_DIR/dataset/`, see DEVELOPERS.md "Build dataset"):
  input_ids     [T] int       the whole rendered trajectory, masked steps included (they stay in context)
  labels        [T] int       = input_ids where trained, IGNORE (-100) elsewhere; unshifted (the model shifts)
  loss_weights  [T] float     optional soft weights (0 wherever labels is IGNORE)
  step_spans    [{step, start, end, weight}]  token range of each step's trained text

Loss coefficients. Position p (p >= 1, labels[p] != IGNORE) is predicted from positions < p and gets
coefficient c[p]; the micro-batch contributes sum_p c[p] * CE_p, and the optimizer step divides the sum over all
its micro-batches (and processes) by the number of *units* in the global batch:
  token     c = w            units = trained tokens        (plain token-mean; what TRL and HF compute)
  sequence  c = w / n_seq    units = sequences             (every trajectory counts equally)
  step      c = w / n_step   units = trained steps         (every trained step counts equally)
where w is the token's soft weight (1 without loss_weights) and n_seq / n_step count the trained tokens of its
sequence / step. Weights scale a token's share; they are not renormalised away (a batch of 0.5-weight tokens
trains at half strength). Trained tokens outside every step span form one extra unit per row in `step` mode.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

IGNORE = -100
REQUIRED = ("input_ids", "labels")
OPTIONAL = ("loss_weights", "step_spans")


class DatasetError(ValueError):
    """The build dataset cannot be trained on; the message names the path/column and what was expected."""


def dataset_path(build_dir: str | Path) -> Path:
    """`BUILD_DIR/dataset/` (or BUILD_DIR itself when it is the saved dataset)."""
    build_dir = Path(build_dir)
    for candidate in (build_dir / "dataset", build_dir):
        if (candidate / "dataset_info.json").is_file() or (candidate / "state.json").is_file():
            return candidate
    raise DatasetError(f"{build_dir}: no saved dataset (expected {build_dir / 'dataset'}/ written by `srft build`)")


def load_dataset(build_dir: str | Path, loss_norm: str):
    """Load the dataset, keep only the columns training reads, and check the columns the config needs."""
    import datasets

    path = dataset_path(build_dir)
    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds:
            raise DatasetError(f"{path}: a DatasetDict without a 'train' split (has {sorted(ds)})")
        ds = ds["train"]
    missing = [c for c in REQUIRED if c not in ds.column_names]
    if missing:
        raise DatasetError(f"{path}: missing column(s) {missing}; have {ds.column_names}")
    if loss_norm == "step" and "step_spans" not in ds.column_names:
        raise DatasetError(f"{path}: loss_norm=step needs a 'step_spans' column; use loss_norm=token or sequence")
    keep = [c for c in (*REQUIRED, *OPTIONAL) if c in ds.column_names]
    if loss_norm != "step":
        keep = [c for c in keep if c != "step_spans"]
    return ds.select_columns(keep), path


@dataclass
class RowCheck:
    """What validation learned about the dataset: rows kept, their lengths and counts, drops by reason."""

    kept: list[int] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    trained: list[int] = field(default_factory=list)
    drops: Counter = field(default_factory=Counter)
    examples: dict[str, list[int]] = field(default_factory=dict)
    truncated: int = 0

    def drop(self, row: int, reason: str) -> None:
        self.drops[reason] += 1
        self.examples.setdefault(reason, [])
        if len(self.examples[reason]) < 5:
            self.examples[reason].append(row)


def _row_problem(ids: np.ndarray, labels: np.ndarray, weights: np.ndarray | None,
                 spans: list[dict] | None) -> str | None:
    """Why a row cannot be trained on (a drop reason), or None."""
    if ids.ndim != 1 or len(ids) == 0:
        return "empty"
    if len(labels) != len(ids):
        return "labels_length_mismatch"
    trained = labels != IGNORE
    # Labels are unshifted: a trained position must hold its own input id. Anything else is usually labels that
    # were shifted upstream, which would silently train every token on its successor.
    if np.any(labels[trained] != ids[trained]):
        return "label_not_input_id"
    if weights is not None:
        if len(weights) != len(ids):
            return "weights_length_mismatch"
        if not np.all(np.isfinite(weights)) or np.any(weights < 0):
            return "bad_weight"
    if spans is not None:
        for span in spans:
            start, end = span.get("start"), span.get("end")
            if not (isinstance(start, int) and isinstance(end, int) and 0 <= start <= end <= len(ids)):
                return "bad_step_span"
    return None


def check_rows(ds, max_length: int | None) -> RowCheck:
    """Validate every row (one bad row never sinks the run: it is dropped and counted by reason)."""
    check = RowCheck()
    has_w, has_s = "loss_weights" in ds.column_names, "step_spans" in ds.column_names
    for i, row in enumerate(ds):
        ids, labels = np.asarray(row["input_ids"]), np.asarray(row["labels"])
        weights = np.asarray(row["loss_weights"], dtype=np.float64) if has_w and row["loss_weights"] is not None \
            else None
        problem = _row_problem(ids, labels, weights, row["step_spans"] if has_s else None)
        if problem:
            check.drop(i, problem)
            continue
        n = len(ids)
        if max_length is not None and n > max_length:
            n, check.truncated = max_length, check.truncated + 1
        n_trained = int(np.count_nonzero(labels[1:n] != IGNORE))
        if n_trained == 0:
            check.drop(i, "no_trained_tokens")
            continue
        check.kept.append(i)
        check.lengths.append(n)
        check.trained.append(n_trained)
    return check


def row_coefficients(labels: np.ndarray, weights: np.ndarray | None, spans: Sequence[dict] | None,
                     loss_norm: str) -> tuple[np.ndarray, int]:
    """Per-position loss coefficients c[T] and the number of units this row adds (see the module docstring)."""
    trained = labels != IGNORE
    trained[0] = False  # position 0 has no prefix to predict it from
    w = np.where(trained, 1.0 if weights is None else weights, 0.0).astype(np.float64)
    n = int(trained.sum())
    if loss_norm == "token":
        return w, n
    if loss_norm == "sequence":
        return (w / n if n else w), int(n > 0)
    units = np.full(len(labels), -1)
    for k, span in enumerate(sorted(spans or [], key=lambda s: (s["start"], s["end"]))):
        sl = slice(span["start"], span["end"])
        units[sl] = np.where(units[sl] < 0, k, units[sl])  # overlapping spans: the earlier one owns the token
    units[trained & (units < 0)] = len(spans or [])  # trained but outside every span: one residual unit
    coef, n_units = np.zeros_like(w), 0
    for u in np.unique(units[trained]):
        members = trained & (units == u)
        coef[members] = w[members] / members.sum()
        n_units += 1
    return coef, n_units


class Collator:
    """Rows -> padded tensors: input_ids, attention_mask, labels, loss_coef [B, T]; n_units/n_trained/n_input."""

    def __init__(self, pad_id: int, loss_norm: str, max_length: int | None = None):
        self.pad_id, self.loss_norm, self.max_length = pad_id, loss_norm, max_length

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        cut = self.max_length
        ids = [np.asarray(r["input_ids"], dtype=np.int64)[:cut] for r in rows]
        width = max(len(x) for x in ids)
        batch_ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        batch_labels = np.full((len(rows), width), IGNORE, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        coef = np.zeros((len(rows), width), dtype=np.float32)
        n_units = 0
        for b, (row, x) in enumerate(zip(rows, ids, strict=True)):
            n = len(x)
            labels = np.asarray(row["labels"], dtype=np.int64)[:n]
            weights = row.get("loss_weights")
            weights = None if weights is None else np.asarray(weights, dtype=np.float64)[:n]
            spans = row.get("step_spans")
            if spans is not None and cut is not None:
                spans = [{**s, "start": min(s["start"], n), "end": min(s["end"], n)} for s in spans]
            c, u = row_coefficients(labels, weights, spans, self.loss_norm)
            batch_ids[b, :n], batch_labels[b, :n], mask[b, :n], coef[b, :n] = x, labels, 1, c
            n_units += u
        return {"input_ids": torch.from_numpy(batch_ids), "attention_mask": torch.from_numpy(mask),
                "labels": torch.from_numpy(batch_labels), "loss_coef": torch.from_numpy(coef),
                "n_units": torch.tensor(float(n_units)),
                "n_trained": torch.tensor(int((batch_labels[:, 1:] != IGNORE).sum())),
                "n_input": torch.tensor(int(mask.sum()))}


class BatchPlan:
    """Deterministic micro-batches of dataset indices (a DataLoader batch_sampler).

    batch_size mode: a fresh seeded permutation per epoch, cut into batch_size rows.
    batch_tokens mode: rows sorted by length (seeded tie-break) and packed greedily while
    rows x longest <= batch_tokens (a longer row is a batch alone); the composition is fixed, so every epoch
    has the same number of batches (the Trainer sizes its schedule from that), and only the order is reshuffled.
    """

    def __init__(self, lengths: Sequence[int], *, batch_size: int = 1, batch_tokens: int | None = None,
                 seed: int = 0):
        self.lengths, self.batch_size, self.batch_tokens, self.seed = list(lengths), batch_size, batch_tokens, seed
        self.epoch = 0
        self._fixed = self._pack() if batch_tokens is not None else None

    def _pack(self) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, 1 << 20])
        order = sorted(range(len(self.lengths)), key=lambda i: (self.lengths[i], rng.random()))
        batches, current, longest = [], [], 0
        for i in order:
            grown = max(longest, self.lengths[i])
            if current and grown * (len(current) + 1) > self.batch_tokens:
                batches.append(current)
                current, grown = [], self.lengths[i]
            current.append(i)
            longest = grown
        if current:
            batches.append(current)
        return batches

    def batches(self, epoch: int) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, epoch])
        if self._fixed is not None:
            return [self._fixed[j] for j in rng.permutation(len(self._fixed))]
        perm = rng.permutation(len(self.lengths)).tolist()
        return [perm[k:k + self.batch_size] for k in range(0, len(perm), self.batch_size)]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches(self.epoch))

    def __len__(self) -> int:
        return len(self._fixed) if self._fixed is not None else -(-len(self.lengths) // self.batch_size)


def steps_for_budget(plan: BatchPlan, tokens: Sequence[int], budget: int, batches_per_step: int,
                     max_epochs: int = 100_000) -> tuple[int, int]:
    """Optimizer steps until the cumulative `tokens` (per dataset row) first reach `budget`, walking the plan's
    epochs in order; returns (steps, tokens those steps consume). Exact because the plan is deterministic."""
    total, steps = 0, 0
    for epoch in range(max_epochs):
        batches = plan.batches(epoch)
        for k in range(0, len(batches), batches_per_step):
            total += sum(tokens[i] for b in batches[k:k + batches_per_step] for i in b)
            steps += 1
            if total >= budget:
                return steps, total
    raise DatasetError(f"budget of {budget} tokens not reached in {max_epochs} epochs")
