"""Calibration in `srft critic-eval`: ECE, the reliability bins and the coverage curve, checked against an
independent computation (numpy and scikit-learn written here), bootstrap CIs over trajectories, the plot."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from srft.critic.eval import EvalConfig, evaluate, run_critic_eval
from srft.labels import StepLabel, write_labels
from srft.model import LABELS


def critic_with_confidence(informative: bool, seed: int = 0) -> tuple[list[StepLabel], list[StepLabel]]:
    """Gold labels and a critic whose confidence is (or is not) the chance its label is right."""
    rng = np.random.default_rng(seed)
    gold, pred = [], []
    for t in range(40):
        for s in range(1, 9):
            g = str(rng.choice(LABELS, p=[0.6, 0.15, 0.2, 0.05]))
            conf = float(rng.choice([1 / 3, 2 / 3, 1.0]))
            right = rng.random() < (conf if informative else 0.7)
            p = g if right else str(rng.choice([x for x in LABELS if x != g]))
            gold.append(StepLabel(trajectory_id=f"t{t:02d}", step=s, label=g))
            pred.append(StepLabel(trajectory_id=f"t{t:02d}", step=s, label=p, confidence=conf))
    return gold, pred


def test_ece_reliability_and_coverage_match_an_independent_computation():
    gold, pred = critic_with_confidence(informative=True)
    hard = [p.model_copy(update={"confidence": None}) for p in pred]
    report = evaluate(gold, {"sure": pred, "hard": hard}, EvalConfig(bootstrap=300, seed=1))
    cal = report["preds"][0]["calibration"]
    assert report["preds"][1]["calibration"] is None  # no confidences, no calibration

    g = np.array([x.label for x in gold])
    p = np.array([x.label for x in pred])
    c = np.array([x.confidence for x in pred])
    right = g == p
    bins = np.minimum((c * 10).astype(int), 9)
    ece = sum((bins == b).mean() * abs(right[bins == b].mean() - c[bins == b].mean()) for b in np.unique(bins))
    assert cal["ece"]["value"] == pytest.approx(ece, abs=1e-6)
    lo, hi = cal["ece"]["ci"]
    assert lo < cal["ece"]["value"] < hi
    assert [b["steps"] for b in cal["reliability"] if b["steps"]] == [int((bins == b).sum()) for b in np.unique(bins)]
    assert cal["steps"] == len(pred) and cal["accuracy"] == pytest.approx(right.mean(), abs=1e-6)

    assert [pt["threshold"] for pt in cal["coverage"]] == pytest.approx([1 / 3, 2 / 3, 1.0], abs=1e-6)
    for point in cal["coverage"]:
        keep = c >= point["threshold"] - 1e-6
        present = sorted(set(g[keep]) | set(p[keep]))
        assert point["coverage"] == pytest.approx(keep.mean(), abs=1e-6)
        assert point["macro_f1"]["value"] == pytest.approx(
            f1_score(g[keep], p[keep], labels=present, average="macro", zero_division=0), abs=1e-6)
        assert point["macro_f1"]["ci"][0] <= point["macro_f1"]["value"] <= point["macro_f1"]["ci"][1]
    f1s = [pt["macro_f1"]["value"] for pt in cal["coverage"]]
    assert f1s == sorted(f1s)  # informative confidence: the surer steps are labelled better


def test_uninformative_confidence_is_visible(tmp_path):
    gold, pred = critic_with_confidence(informative=False)
    cal = evaluate(gold, {"flat": pred}, EvalConfig(bootstrap=200))["preds"][0]["calibration"]
    first, last = cal["coverage"][0], cal["coverage"][-1]
    assert abs(last["accuracy"] - first["accuracy"]) < 0.1  # being sure buys nothing
    sure_then_wrong = [b for b in cal["reliability"] if b["steps"] and b["confidence"] > 0.9]
    assert sure_then_wrong[0]["accuracy"] < 0.85 and cal["ece"]["value"] > 0.15

    write_labels(tmp_path / "gold.jsonl", gold)
    write_labels(tmp_path / "flat.parquet", pred)
    plot = tmp_path / "calibration.png"
    report = run_critic_eval(tmp_path / "gold.jsonl", [tmp_path / "flat.parquet"], None, EvalConfig(bootstrap=50),
                             calibration_plot=plot)
    assert report["calibration_plot"] == str(plot) and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["preds"][0]["calibration"]["steps"] == len(pred)
    write_labels(tmp_path / "hard.jsonl", [x.model_copy(update={"confidence": None}) for x in pred])
    with pytest.raises(ValueError, match="no prediction file has confidences"):
        run_critic_eval(tmp_path / "gold.jsonl", [tmp_path / "hard.jsonl"], None, EvalConfig(bootstrap=0),
                        calibration_plot=tmp_path / "none.png")


def test_critic_eval_cli_reports_calibration_and_plots_it(tmp_path):
    import json

    from typer.testing import CliRunner

    from srft.cli import app

    gold, pred = critic_with_confidence(informative=True, seed=3)
    write_labels(tmp_path / "gold.jsonl", gold)
    write_labels(tmp_path / "pred.jsonl", pred)
    plot = tmp_path / "cal.png"
    result = CliRunner().invoke(app, ["critic-eval", "--gold", str(tmp_path / "gold.jsonl"), "--pred",
                                      str(tmp_path / "pred.jsonl"), "--bootstrap", "100", "--calibration-plot",
                                      str(plot), "--json"])
    assert result.exit_code == 0, result.output
    cal = json.loads(result.stdout)["preds"][0]["calibration"]
    assert cal["steps"] == len(pred) and cal["ece"]["ci"][0] is not None and len(cal["coverage"]) == 3
    assert plot.stat().st_size > 10_000
