"""How far to trust a critic: step labels compared with gold (human) labels (`srft critic-eval`).

Steps are matched on (trajectory_id, step). Every metric is a function of the 4x4 confusion matrix
(rows = gold label, columns = predicted label, order `LABELS`), so the bootstrap only re-sums per-trajectory
matrices: resampling trajectories (the unit annotators label, and whose steps are correlated) with replacement,
B times, is one (B, T) @ (T, 16) product. Several prediction files share the same resamples, which makes the
differences between critics paired.

Conventions (as scikit-learn with `zero_division=0`): a ratio with a zero denominator is 0; macro-F1 averages
the labels that occur in gold or predictions (sklearn's default label set); micro-F1 equals accuracy for
single-label data; Cohen's kappa is undefined (None) when chance agreement is 1. The binary score treats the
policy's masked labels (`mask_labels`, default `mistake`) as the positive class: "masked vs trained".
The scores themselves are in `srft.critic.metrics`. A prediction file whose labels carry a `confidence` also gets
a calibration report (`srft.critic.calibration`: ECE, reliability, coverage curve), on the same resamples.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from srft.critic.calibration import calibration, plot_calibration
from srft.critic.metrics import SCALARS, bootstrap_weights, metrics_from_confusion  # noqa: F401 (API)
from srft.critic.metrics import interval as _interval
from srft.critic.metrics import num as _num
from srft.critic.metrics import ratio as _ratio
from srft.labels import StepLabel, read_labels
from srft.model import LABELS

K = len(LABELS)
EXAMPLES = 5  # unmatched steps listed by name in the report; the rest are counted


class EvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mask_labels: tuple[str, ...] = Field(("mistake",), description="labels a policy masks: the binary positive class")
    bootstrap: int = Field(1000, ge=0, description="bootstrap resamples over trajectories (0 = no CIs)")
    seed: int = Field(0, description="seed of the bootstrap resampling")
    confidence: float = Field(0.95, gt=0, lt=1, description="coverage of the percentile confidence intervals")

    @field_validator("mask_labels")
    @classmethod
    def _known(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [x for x in value if x not in LABELS]
        if bad or not value:
            raise ValueError(f"mask labels {bad or value!r}: expected a non-empty subset of {', '.join(LABELS)}")
        return tuple(sorted(set(value), key=LABELS.index))


# -- resolving label files that name trajectories by file or instance ------------------------------------

@dataclass
class TrajectoryIndex:
    """What label rows may name a trajectory by: id, instance_id, or source file (+ row for data sets)."""

    steps: dict[str, int] = field(default_factory=dict)  # trajectory id -> number of steps
    by_instance: dict[str, list[str]] = field(default_factory=dict)
    by_file: dict[str, list[tuple[int | None, str]]] = field(default_factory=dict)  # path -> [(row, id)]

    def add(self, tid: str, instance_id: str | None, path: str | None, row: int | None, n_steps: int) -> None:
        self.steps[tid] = n_steps
        if instance_id:
            self.by_instance.setdefault(instance_id, []).append(tid)
        if path:
            self.by_file.setdefault(os.path.normpath(path), []).append((row, tid))

    @classmethod
    def from_store(cls, path: str | os.PathLike) -> TrajectoryIndex:
        """Index an ingest output, reading only the light columns of the Parquet store."""
        path = Path(path)
        file = path / "trajectories.parquet" if path.is_dir() else path
        index = cls()
        if file.suffix == ".parquet":
            import pyarrow.parquet as pq

            cols = ["id", "instance_id", "source.path", "source.row", "steps.list.element.number"]
            for rec in pq.ParquetFile(file).read(columns=cols).to_pylist():
                index.add(rec["id"], rec["instance_id"], rec["source"]["path"], rec["source"]["row"],
                          len(rec["steps"] or []))
        else:
            from srft.io import iter_trajectories

            for t in iter_trajectories(file):
                index.add(t.id, t.instance_id, t.source.path, t.source.row, len(t.steps))
        return index

    def resolve(self, rec: dict[str, Any]) -> str:
        """The trajectory id a label row names by `file` (+ optional `row`) or `instance_id`; ValueError if
        none or several trajectories match."""
        if rec.get("file"):
            return self._resolve_file(str(rec["file"]), rec.get("row"))
        if rec.get("instance_id"):
            ids = self.by_instance.get(str(rec["instance_id"]), [])
            return _one(ids, f"instance_id {rec['instance_id']!r}", "name it by trajectory_id or file")
        raise ValueError("row has no trajectory_id, file or instance_id")

    def _resolve_file(self, name: str, row: Any) -> str:
        want = Path(os.path.normpath(name)).parts
        hits = self.by_file.get(os.path.normpath(name))
        if hits is None:  # a relative or shortened path: match on trailing path components
            hits = [h for p, hs in self.by_file.items() if Path(p).parts[-len(want):] == want for h in hs]
        if row is not None:
            hits = [h for h in hits if h[0] == row]
        where = f"file {name!r}" + (f" row {row}" if row is not None else "")
        return _one(sorted({tid for _, tid in hits}), where, "add the 'row' column or name it by trajectory_id")


def _one(ids: Sequence[str], what: str, hint: str) -> str:
    if not ids:
        raise ValueError(f"{what} matches no trajectory in --data")
    if len(set(ids)) > 1:
        shown = ", ".join(sorted(set(ids))[:3])
        raise ValueError(f"{what} is ambiguous: {len(set(ids))} trajectories match ({shown}, ...); {hint}")
    return ids[0]


def _no_data(rec: dict[str, Any]) -> str:
    key = "file" if rec.get("file") else "instance_id" if rec.get("instance_id") else None
    if key is None:
        raise ValueError("row has no trajectory_id (nor file/instance_id to resolve one)")
    raise ValueError(f"row names its trajectory by {key!r}; pass --data DIR (an ingest output) to resolve it")


def load_labels(path: str | os.PathLike, index: TrajectoryIndex | None = None) -> list[StepLabel]:
    """Read a step-label file; with `index`, resolve file/instance_id keys and check every trajectory and step
    exists. Raises LabelFileError listing every problem."""
    if index is None:
        return read_labels(path, resolve=_no_data)
    return read_labels(path, resolve=index.resolve, step_counts=index.steps)


@dataclass
class Alignment:
    """One prediction file matched to gold: per-trajectory confusion matrices (T, K, K) in `trajectories`
    order, and what only one side has."""

    cms: np.ndarray
    matched: int
    gold_only: list[tuple[str, int]]
    pred_only: list[tuple[str, int]]


def align(gold: Iterable[StepLabel], pred: Iterable[StepLabel], trajectories: Sequence[str]) -> Alignment:
    g = {(x.trajectory_id, x.step): LABELS.index(x.label) for x in gold}
    p = {(x.trajectory_id, x.step): LABELS.index(x.label) for x in pred}
    row = {tid: i for i, tid in enumerate(trajectories)}
    cms = np.zeros((len(trajectories), K, K), dtype=np.int64)
    matched = 0
    for key, gl in g.items():
        if key in p:
            cms[row[key[0]], gl, p[key]] += 1
            matched += 1
    return Alignment(cms, matched, sorted(set(g) - set(p)), sorted(set(p) - set(g)))


def evaluate(gold: Sequence[StepLabel], preds: dict[str, Sequence[StepLabel]], config: EvalConfig) -> dict:
    """The report for each prediction set against gold (pure: labels in, nested dict out)."""
    trajectories = sorted({x.trajectory_id for x in gold})
    weights = bootstrap_weights(len(trajectories), config.bootstrap, config.seed)
    out: list[dict] = []
    first: tuple[dict, dict] | None = None  # (point, bootstrap) scores of the first file: deltas are paired
    for name, pred in preds.items():
        al = align(gold, pred, trajectories)
        cm = al.cms.sum(0)
        point = metrics_from_confusion(cm, config.mask_labels)
        boot = metrics_from_confusion(np.einsum("bt,tkl->bkl", weights, al.cms), config.mask_labels)
        entry = _entry(name, al, cm, point, boot if config.bootstrap else None, config)
        entry["calibration"] = calibration(gold, pred, trajectories, weights, config.mask_labels,
                                           lambda v: _interval(v, config.confidence))
        if first is not None:
            entry["delta_vs_first"] = {
                k: {"value": _diff(point[k], first[0][k]),
                    "ci": _interval(boot[k] - first[1][k], config.confidence) if config.bootstrap else [None, None]}
                for k in ("macro_f1", "binary_f1", "kappa")}
        first = first or (point, boot)
        out.append(entry)
    return {"labels": list(LABELS), "mask_labels": list(config.mask_labels),
            "gold": {"steps": len(gold), "trajectories": len(trajectories)},
            "bootstrap": {"samples": config.bootstrap, "seed": config.seed, "confidence": config.confidence,
                          "unit": "trajectory"},
            "preds": out}


def _diff(a: Any, b: Any) -> float | None:
    return _num(float(a) - float(b))


def _entry(name: str, al: Alignment, cm: np.ndarray, point: dict, boot: dict | None, config: EvalConfig) -> dict:
    ci = (lambda v: _interval(v, config.confidence)) if boot is not None else (lambda v: [None, None])
    per_label = {lab: {"precision": _num(point["precision"][i]), "recall": _num(point["recall"][i]),
                       "f1": _num(point["f1"][i]), "support": int(point["support"][i]),
                       "predicted": int(point["predicted"][i]),
                       "f1_ci": ci(boot["f1"][:, i]) if boot is not None else [None, None]}
                 for i, lab in enumerate(LABELS)}
    scores = {k: {"value": _num(point[k]), "ci": ci(boot[k]) if boot is not None else [None, None]}
              for k in SCALARS}
    return {"name": name, "matched_steps": al.matched, "confusion": cm.astype(int).tolist(),
            "gold_only_steps": len(al.gold_only), "pred_only_steps": len(al.pred_only),
            "gold_only_examples": [f"{t}:{s}" for t, s in al.gold_only[:EXAMPLES]],
            "pred_only_examples": [f"{t}:{s}" for t, s in al.pred_only[:EXAMPLES]],
            "per_label": per_label, **scores}


# -- the stage (I/O at the edges) ---------------------------------------------------------------------------

GENERIC_STEMS = ("annotations", "labels", "gold", "pred", "predictions")  # named after their folder instead


def label_file_names(paths: Sequence[str | os.PathLike]) -> list[str]:
    """Short names for label files: the stem (the folder's name for `srft annotate`'s generic
    `annotations.jsonl`), or the whole path where two names collide."""
    names = [Path(p).parent.name if Path(p).stem in GENERIC_STEMS and Path(p).parent.name else Path(p).stem
             for p in paths]
    return [n if names.count(n) == 1 else str(p) for n, p in zip(names, paths, strict=True)]


def run_critic_eval(gold_path: str | os.PathLike, pred_paths: Sequence[str | os.PathLike],
                    data: str | os.PathLike | None, config: EvalConfig,
                    plot: str | os.PathLike | None = None,
                    calibration_plot: str | os.PathLike | None = None) -> dict:
    """Load the files, evaluate, optionally plot (confusion matrices; reliability and coverage of the files with
    confidences); the report names its inputs."""
    index = TrajectoryIndex.from_store(data) if data is not None else None
    gold = load_labels(gold_path, index)
    names = label_file_names(pred_paths)
    preds = {name: load_labels(p, index) for name, p in zip(names, pred_paths, strict=True)}
    report = evaluate(gold, preds, config)
    report["gold"]["path"] = str(gold_path)
    for entry, p in zip(report["preds"], pred_paths, strict=True):
        entry["path"] = str(p)
    if plot is not None:
        plot_confusion(report, plot)
        report["plot"] = str(plot)
    if calibration_plot is not None:
        plot_calibration(report, calibration_plot)
        report["calibration_plot"] = str(calibration_plot)
    return report


def print_report(report: dict, console) -> None:
    """The tables, then a note per pred on steps left out of its scores, and an error per pred sharing none."""
    from srft.console import say

    for part in report_tables(report):
        console.print(part)
    for e in report["preds"]:
        parts = [f"{e[f'{k}_steps']} {what} (e.g. {', '.join(e[f'{k}_examples'])}), left out of the scores"
                 for k, what in (("gold_only", "gold step(s) without a prediction"),
                                 ("pred_only", "predicted step(s) without gold")) if e[f"{k}_steps"]]
        if parts:
            say(console, f"note: {e['name']}: " + "; ".join(parts))
    for e in report["preds"]:
        if e["matched_steps"] == 0:
            say(console, f"error: {e['name']} shares no (trajectory_id, step) with the gold file; are they keyed "
                "differently? (--data resolves file/instance_id keys)", "red")


def eval_ok(report: dict, strict: bool = False) -> bool:
    """Full success: every pred shares steps with the gold file (and, with strict, every step is in both)."""
    unmatched = any(e["gold_only_steps"] or e["pred_only_steps"] for e in report["preds"])
    return all(e["matched_steps"] for e in report["preds"]) and not (strict and unmatched)


def plot_confusion(report: dict, path: str | os.PathLike) -> None:
    """One heat map per prediction file, rows normalised (colour = share of the gold label), counts written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from srft.io import atomic_path

    preds = report["preds"]
    fig, axes = plt.subplots(1, len(preds), figsize=(4.2 * len(preds), 4.0), squeeze=False)
    for ax, entry in zip(axes[0], preds, strict=True):
        cm = np.array(entry["confusion"], dtype=float)
        share = _ratio(cm, cm.sum(1, keepdims=True))
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for i in range(K):
            for j in range(K):
                ax.text(j, i, int(cm[i, j]), ha="center", va="center",
                        color="white" if share[i, j] > 0.6 else "black", fontsize=9)
        ax.set_xticks(range(K), LABELS, rotation=30, ha="right")
        ax.set_yticks(range(K), LABELS)
        ax.set_xlabel("predicted")
        ax.set_ylabel("gold")
        ax.set_title(f"{entry['name']}\nmacro-F1 {entry['macro_f1']['value']:.3f}", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)


# -- text rendering -------------------------------------------------------------------------------------------

def _cell(score: dict) -> str:
    value, (lo, hi) = score["value"], score["ci"]
    text = "n/a" if value is None else f"{value:.3f}"
    return text if lo is None else f"{text} [{lo:.3f}, {hi:.3f}]"


def report_tables(report: dict) -> list[Any]:
    """Rich tables: the side-by-side comparison, then per file the per-label scores and confusion matrix."""
    from rich.table import Table

    preds, masked = report["preds"], "+".join(report["mask_labels"])
    pct = round(report["bootstrap"]["confidence"] * 100)
    cmp = Table(title=f"critic vs gold ({report['gold']['steps']} gold steps in {report['gold']['trajectories']} "
                      f"trajectories; {pct}% CI over trajectories, {report['bootstrap']['samples']} resamples)")
    cmp.add_column("metric")
    for entry in preds:
        cmp.add_column(entry["name"], justify="right")
    rows = [("macro-F1", "macro_f1"), ("micro-F1 (accuracy)", "micro_f1"), ("Cohen's kappa", "kappa"),
            (f"binary F1 ({masked} = masked)", "binary_f1"), ("binary precision", "binary_precision"),
            ("binary recall", "binary_recall")]
    for title, key in rows:
        cmp.add_row(title, *(_cell(e[key]) for e in preds))
    for lab in report["labels"]:
        cmp.add_row(f"F1 {lab}", *(_cell({"value": e["per_label"][lab]["f1"], "ci": e["per_label"][lab]["f1_ci"]})
                                    for e in preds))
    if len(preds) > 1:
        for key in ("macro_f1", "binary_f1"):
            cmp.add_row(f"Δ {key} vs {preds[0]['name']}",
                        "", *(_cell(e["delta_vs_first"][key]) for e in preds[1:]))
    cmp.add_row("matched steps", *(str(e["matched_steps"]) for e in preds))
    cmp.add_row("gold only / pred only", *(f"{e['gold_only_steps']} / {e['pred_only_steps']}" for e in preds))
    tables = [cmp]
    for entry in preds:
        per = Table(title=f"{entry['name']}: per label")
        for col in ("label", "precision", "recall", "F1", "support", "predicted"):
            per.add_column(col, justify="left" if col == "label" else "right")
        for lab, s in entry["per_label"].items():
            per.add_row(lab, f"{s['precision']:.3f}", f"{s['recall']:.3f}",
                        _cell({"value": s["f1"], "ci": s["f1_ci"]}), str(s["support"]), str(s["predicted"]))
        cm = Table(title=f"{entry['name']}: confusion (rows gold, columns predicted)")
        cm.add_column("gold \\ pred")
        for lab in report["labels"]:
            cm.add_column(lab, justify="right")
        for lab, row in zip(report["labels"], entry["confusion"], strict=True):
            cm.add_row(lab, *map(str, row))
        tables += [per, cm] + ([_calibration_table(entry)] if entry.get("calibration") else [])
    return tables


def _calibration_table(entry: dict) -> Any:
    """ECE and the coverage curve of one prediction file with confidences."""
    from rich.table import Table

    cal = entry["calibration"]
    out = Table(title=f"{entry['name']}: calibration ({cal['steps']} steps with a confidence; ECE "
                      f"{_cell(cal['ece'])}, mean confidence {cal['mean_confidence']:.3f}, accuracy "
                      f"{cal['accuracy']:.3f})")
    for col in ("confidence >=", "steps", "coverage", "accuracy", "macro-F1", "binary F1"):
        out.add_column(col, justify="right")
    for point in cal["coverage"]:
        out.add_row(f"{point['threshold']:.3f}", str(point["steps"]), f"{point['coverage']:.3f}",
                    f"{point['accuracy']:.3f}", _cell(point["macro_f1"]), _cell(point["binary_f1"]))
    return out
