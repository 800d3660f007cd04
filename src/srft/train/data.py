"""The build dataset as the trainer sees it: validation, loss coefficients, batch plans, the collator.

Shapes (one row of `BUILD_DIR/dataset/`, see DEVELOPERS.md "Build dataset"):
  input_ids     [T] int       the whole rendered trajectory, masked steps included (they stay in context)
  labels        [T] int       = input_ids where trained, IGNORE_INDEX (-100, srft.dataset.masks) elsewhere;
                              unshifted (the model shifts)
  loss_weights  [T] float     optional soft weights (0 wherever labels is IGNORE_INDEX)
  step_spans    [{step, start, end, weight}]  token range of each step's trained text

Loss coefficients. Position p (p >= 1, labels[p] != IGNORE_INDEX) is predicted from positions < p and gets
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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from srft.dataset.masks import IGNORE_INDEX

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
    trained = labels != IGNORE_INDEX
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
        n_trained = int(np.count_nonzero(labels[1:n] != IGNORE_INDEX))
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
    trained = labels != IGNORE_INDEX
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
    """Rows -> the tensors of one micro-batch, plus its counts: n_units (loss denominators), n_trained (trained
    tokens), n_input (real tokens), n_positions (tensor positions, padding included), n_rows.

    padded (default): input_ids, attention_mask, labels, loss_coef [B, T], T = the longest row.
    packed: the rows concatenated into one sequence: input_ids, position_ids (restarting at 0 in every row),
    labels, loss_coef [1, sum of lengths] and no attention_mask, from which transformers keeps attention inside
    each row (a block-diagonal causal mask for SDPA/eager, variable-length kernels for flash-attention). A row's
    first position never carries loss, so no row is trained on the row before it.
    A filler micro-batch (`[None]`, see plan.py) is two padding tokens with no loss.
    """

    def __init__(self, pad_id: int, loss_norm: str, max_length: int | None = None, packing: bool = False):
        self.pad_id, self.loss_norm, self.max_length, self.packing = pad_id, loss_norm, max_length, packing

    def _row(self, row: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """One row cut to max_length -> (ids, labels, coefficients, units)."""
        ids = np.asarray(row["input_ids"], dtype=np.int64)[:self.max_length]
        n = len(ids)
        labels = np.asarray(row["labels"], dtype=np.int64)[:n]
        weights = row.get("loss_weights")
        weights = None if weights is None else np.asarray(weights, dtype=np.float64)[:n]
        spans = row.get("step_spans")
        if spans is not None and self.max_length is not None:
            spans = [{**s, "start": min(s["start"], n), "end": min(s["end"], n)} for s in spans]
        coef, units = row_coefficients(labels, weights, spans, self.loss_norm)
        return ids, labels, coef.astype(np.float32), units

    def __call__(self, rows: list[dict[str, Any] | None]) -> dict[str, Any]:
        import torch

        if all(r is None for r in rows):
            return self.filler()
        parts = [self._row(r) for r in rows]
        counts = {"n_units": torch.tensor(float(sum(p[3] for p in parts))),
                  "n_trained": torch.tensor(sum(int(np.count_nonzero(p[1][1:] != IGNORE_INDEX)) for p in parts)),
                  "n_input": torch.tensor(sum(len(p[0]) for p in parts)), "n_rows": torch.tensor(len(parts))}
        if self.packing:
            cat = [torch.from_numpy(np.concatenate([p[k] for p in parts]))[None] for k in range(3)]
            positions = torch.from_numpy(np.concatenate([np.arange(len(p[0])) for p in parts]))[None]
            return {"input_ids": cat[0], "position_ids": positions, "labels": cat[1], "loss_coef": cat[2],
                    **counts, "n_positions": torch.tensor(cat[0].shape[1])}
        width = max(len(p[0]) for p in parts)
        batch_ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        batch_labels = np.full((len(rows), width), IGNORE_INDEX, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        coef = np.zeros((len(rows), width), dtype=np.float32)
        for b, (ids, labels, c, _) in enumerate(parts):
            batch_ids[b, :len(ids)], batch_labels[b, :len(ids)], mask[b, :len(ids)], coef[b, :len(ids)] = \
                ids, labels, 1, c
        return {"input_ids": torch.from_numpy(batch_ids), "attention_mask": torch.from_numpy(mask),
                "labels": torch.from_numpy(batch_labels), "loss_coef": torch.from_numpy(coef), **counts,
                "n_positions": torch.tensor(batch_ids.size)}

    def filler(self) -> dict[str, Any]:
        import torch

        zero = torch.tensor(0)
        return {"input_ids": torch.full((1, 2), self.pad_id), "attention_mask": torch.ones(1, 2, dtype=torch.long),
                "labels": torch.full((1, 2), IGNORE_INDEX), "loss_coef": torch.zeros(1, 2),
                "n_units": torch.tensor(0.0), "n_trained": zero, "n_input": zero, "n_rows": zero,
                "n_positions": zero}


class PlanRows:
    """The kept rows as the DataLoader reads them: a plan's micro-batch of indices -> rows (FILLER -> None)."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> dict[str, Any] | None:
        return None if i < 0 else self.ds[int(i)]

    def __getitems__(self, keys: list[int]) -> list[dict[str, Any] | None]:
        if any(k < 0 for k in keys):
            return [self[k] for k in keys]
        return self.ds.__getitems__(keys)
