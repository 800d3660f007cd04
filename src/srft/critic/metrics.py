"""Scores of step labels against gold ones, as pure functions of confusion matrices (shared by `srft critic-eval`,
its calibration report and the viewer's agreement panel).

Conventions (as scikit-learn with `zero_division=0`): a ratio with a zero denominator is 0; macro-F1 averages
the labels that occur in gold or predictions (sklearn's default label set); micro-F1 equals accuracy for
single-label data; Cohen's kappa is undefined (NaN) when chance agreement is 1. The binary score treats the
policy's masked labels (`mask`, default `mistake`) as the positive class: "masked vs trained".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from srft.model import LABELS


def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)


def metrics_from_confusion(cm: np.ndarray, mask: Sequence[str] = ("mistake",)) -> dict[str, np.ndarray]:
    """All scores from confusion matrices of shape (..., K, K); every value has the leading shape (per-label
    ones add a trailing K)."""
    cm = np.asarray(cm, dtype=float)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    support, predicted = cm.sum(-1), cm.sum(-2)
    n = support.sum(-1)
    f1 = ratio(2 * tp, support + predicted)
    present = (support + predicted) > 0
    po = ratio(tp.sum(-1), n)
    pe = ratio((support * predicted).sum(-1), n * n)
    with np.errstate(divide="ignore", invalid="ignore"):
        kappa = np.where(pe < 1, (po - pe) / (1 - pe), np.nan)
    m = np.isin(np.array(LABELS), list(mask))
    btp = cm[..., m, :][..., :, m].sum((-1, -2))
    bsupport, bpredicted = cm[..., m, :].sum((-1, -2)), cm[..., :, m].sum((-1, -2))
    return {
        "precision": ratio(tp, predicted), "recall": ratio(tp, support), "f1": f1,
        "support": support, "predicted": predicted,
        "macro_f1": ratio((f1 * present).sum(-1), present.sum(-1)),
        "micro_f1": po, "kappa": kappa, "steps": n,
        "binary_precision": ratio(btp, bpredicted), "binary_recall": ratio(btp, bsupport),
        "binary_f1": ratio(2 * btp, bsupport + bpredicted), "binary_support": bsupport,
    }


SCALARS = ("macro_f1", "micro_f1", "kappa", "binary_f1", "binary_precision", "binary_recall")


def bootstrap_weights(n_traj: int, samples: int, seed: int) -> np.ndarray:
    """(samples, n_traj) counts: how often each trajectory is drawn in each resample."""
    rng = np.random.default_rng(seed)
    if n_traj == 0 or samples == 0:
        return np.zeros((samples, n_traj), dtype=np.int64)
    return rng.multinomial(n_traj, np.full(n_traj, 1.0 / n_traj), size=samples)


def interval(values: np.ndarray, confidence: float) -> list[float | None]:
    tail = (1 - confidence) / 2 * 100
    values = values[~np.isnan(values)]
    if values.size == 0:
        return [None, None]
    return [num(np.percentile(values, tail)), num(np.percentile(values, 100 - tail))]


def num(x: Any) -> float | None:
    x = float(x)
    return None if np.isnan(x) else round(x, 6)
