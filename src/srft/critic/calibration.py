"""Does a critic's confidence mean anything? Calibration of step labels that carry a `confidence`.

A label is correct when it equals the gold label. Over the matched steps that have a confidence:
  ECE        expected calibration error, sum over equal-width confidence bins of (share of steps in the bin) x
             |accuracy in the bin - mean confidence in the bin|; 0 = perfectly calibrated
  reliability per bin: steps, mean confidence, accuracy (the reliability diagram)
  coverage   for each threshold t (the distinct confidences, at most `MAX_THRESHOLDS` quantiles): the share of
             steps with confidence >= t and the macro-F1 / masked-vs-trained F1 on just those steps. An
             informative confidence makes F1 rise as the threshold rises (the critic is right where it is sure).
Everything is summed per trajectory first, so the bootstrap over trajectories (the same resamples as the rest of
`srft critic-eval`) only re-weighs those sums: CIs for ECE and for every point of the coverage curve.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from srft.critic.metrics import metrics_from_confusion, num
from srft.labels import StepLabel
from srft.model import LABELS

BINS = 10
MAX_THRESHOLDS = 12
K = len(LABELS)


def _matched(gold: Sequence[StepLabel], pred: Sequence[StepLabel], row: dict[str, int]
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(trajectory row, gold index, pred index, confidence) of every matched step with a confidence."""
    g = {(x.trajectory_id, x.step): LABELS.index(x.label) for x in gold}
    items = [(row[p.trajectory_id], g[(p.trajectory_id, p.step)], LABELS.index(p.label), p.confidence)
             for p in pred if p.confidence is not None and (p.trajectory_id, p.step) in g]
    if not items:
        return (np.zeros(0, int),) * 3 + (np.zeros(0),)
    t, gi, pi, c = map(np.array, zip(*items, strict=True))
    return t.astype(int), gi.astype(int), pi.astype(int), c.astype(float)


def _bin_sums(t: np.ndarray, correct: np.ndarray, conf: np.ndarray, n_traj: int) -> np.ndarray:
    """(T, BINS, 3): per trajectory and bin, the steps, the summed confidence and the correct steps."""
    bins = np.minimum((conf * BINS).astype(int), BINS - 1)
    out = np.zeros((n_traj, BINS, 3))
    np.add.at(out, (t, bins, 0), 1.0)
    np.add.at(out, (t, bins, 1), conf)
    np.add.at(out, (t, bins, 2), correct)
    return out


def _ece(sums: np.ndarray) -> np.ndarray:
    """ECE from bin sums of shape (..., BINS, 3)."""
    n, conf, right = sums[..., 0], sums[..., 1], sums[..., 2]
    total = n.sum(-1)
    gap = np.abs(right - conf)  # = n_b * |accuracy_b - confidence_b|
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, gap.sum(-1) / total, np.nan)


def thresholds(conf: np.ndarray) -> list[float]:
    """The distinct confidences, thinned to at most MAX_THRESHOLDS quantiles."""
    distinct = np.unique(np.round(conf, 6))
    if len(distinct) > MAX_THRESHOLDS:
        distinct = np.unique(np.round(np.quantile(conf, np.linspace(0, 1, MAX_THRESHOLDS)), 6))
    return [float(x) for x in distinct]


def calibration(gold: Sequence[StepLabel], pred: Sequence[StepLabel], trajectories: Sequence[str],
                weights: np.ndarray, mask: Sequence[str], interval: Any) -> dict[str, Any] | None:
    """The calibration report of one prediction file, or None when none of its matched steps has a confidence.
    `weights` (S, T) are the bootstrap resamples over `trajectories`; `interval(values)` gives a CI."""
    row = {tid: i for i, tid in enumerate(trajectories)}
    t, gi, pi, conf = _matched(gold, pred, row)
    if len(conf) == 0:
        return None
    correct = (gi == pi).astype(float)
    sums = _bin_sums(t, correct, conf, len(trajectories))
    total = sums.sum(0)
    reliability = [{"bin": [b / BINS, (b + 1) / BINS], "steps": int(total[b, 0]),
                    "confidence": num(total[b, 1] / total[b, 0]) if total[b, 0] else None,
                    "accuracy": num(total[b, 2] / total[b, 0]) if total[b, 0] else None} for b in range(BINS)]
    boot = _ece(np.einsum("st,tbk->sbk", weights, sums)) if weights.size else np.zeros(0)
    coverage = []
    for th in thresholds(conf):
        keep = conf >= th - 1e-6  # thresholds are rounded to 6 digits
        cms = np.zeros((len(trajectories), K, K))
        np.add.at(cms, (t[keep], gi[keep], pi[keep]), 1.0)
        point = metrics_from_confusion(cms.sum(0), mask)
        resampled = metrics_from_confusion(np.einsum("st,tkl->skl", weights, cms), mask) if weights.size else None
        coverage.append({
            "threshold": th, "steps": int(keep.sum()), "coverage": num(keep.mean()),
            "accuracy": num(correct[keep].mean()),
            **{k: {"value": num(point[k]), "ci": interval(resampled[k]) if resampled else [None, None]}
               for k in ("macro_f1", "binary_f1")}})
    return {"steps": len(conf), "bins": BINS, "mean_confidence": num(conf.mean()), "accuracy": num(correct.mean()),
            "ece": {"value": num(_ece(total)), "ci": interval(boot) if weights.size else [None, None]},
            "reliability": reliability, "coverage": coverage}


def plot_calibration(report: dict[str, Any], path: Any) -> None:
    """Per prediction file with confidences: the reliability diagram and the coverage curve (F1 with its CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from srft.io import atomic_path

    entries = [e for e in report["preds"] if e.get("calibration")]
    if not entries:
        raise ValueError("no prediction file has confidences (votes, probs or confidence columns): nothing to plot")
    fig, axes = plt.subplots(len(entries), 2, figsize=(9.0, 3.8 * len(entries)), squeeze=False)
    for (rel, cov), entry in zip(axes, entries, strict=True):
        cal = entry["calibration"]
        bins = [b for b in cal["reliability"] if b["steps"]]
        rel.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
        rel.bar([b["bin"][0] + 0.05 for b in cal["reliability"]],
                [b["accuracy"] or 0 for b in cal["reliability"]], width=0.09, color="#9ecae1", label="accuracy")
        rel.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o-", color="#08519c",
                 label="per bin")
        rel.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy (label = gold)",
                title=f"{entry['name']}: ECE {cal['ece']['value']:.3f} ({cal['steps']} steps)")
        rel.legend(loc="upper left", fontsize=8)
        xs = [c["coverage"] for c in cal["coverage"]]
        for key, colour in (("macro_f1", "#08519c"), ("binary_f1", "#a50f15")):
            ys = [c[key]["value"] for c in cal["coverage"]]
            cov.plot(xs, ys, "o-", color=colour, label=key.replace("_", "-"))
            lo = [c[key]["ci"][0] for c in cal["coverage"]]
            if all(v is not None for v in lo):
                cov.fill_between(xs, lo, [c[key]["ci"][1] for c in cal["coverage"]], color=colour, alpha=0.15)
        cov.set(xlim=(0, 1.02), ylim=(0, 1), xlabel="coverage (share of steps at or above a confidence threshold)",
                ylabel="F1 on those steps", title="coverage curve")
        cov.invert_xaxis()
        cov.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
