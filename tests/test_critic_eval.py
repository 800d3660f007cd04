"""`srft critic-eval`: metrics against scikit-learn, bootstrap over trajectories, key resolution, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score, confusion_matrix, f1_score, precision_recall_fscore_support
from typer.testing import CliRunner

from srft.cli import app
from srft.critic.eval import (EvalConfig, TrajectoryIndex, bootstrap_weights, evaluate, label_file_names,
                              load_labels, metrics_from_confusion)
from srft.io import write_jsonl, write_trajectories
from srft.labels import LabelFileError, StepLabel, write_labels
from srft.model import LABELS, FunctionCall, Message, Outcome, Source, ToolCall, Trajectory, steps_from_messages


def random_labels(seed: int, n_traj: int = 30, max_steps: int = 12, agree: float = 0.6,
                  probs=(0.55, 0.15, 0.2, 0.1)) -> tuple[list[StepLabel], list[StepLabel]]:
    """Gold labels and a noisy prediction of them, over n_traj trajectories of random length."""
    rng = np.random.default_rng(seed)
    gold, pred = [], []
    for t in range(n_traj):
        for step in range(1, rng.integers(1, max_steps + 1) + 1):
            g = int(rng.choice(4, p=probs))
            p = g if rng.random() < agree else int(rng.integers(4))
            gold.append(StepLabel(trajectory_id=f"t{t:03d}", step=step, label=LABELS[g]))
            pred.append(StepLabel(trajectory_id=f"t{t:03d}", step=step, label=LABELS[p]))
    return gold, pred


def as_arrays(gold, pred):
    p = {(x.trajectory_id, x.step): x.label for x in pred}
    pairs = [(x.label, p[(x.trajectory_id, x.step)]) for x in gold if (x.trajectory_id, x.step) in p]
    return [a for a, _ in pairs], [b for _, b in pairs]


@pytest.mark.parametrize("seed,probs", [(0, (0.55, 0.15, 0.2, 0.1)), (1, (0.4, 0.3, 0.3, 0.0)),
                                        (2, (0.7, 0.0, 0.3, 0.0)), (3, (0.25, 0.25, 0.25, 0.25))])
@pytest.mark.parametrize("mask", [("mistake",), ("unnecessary", "mistake")])
def test_metrics_match_sklearn(seed, probs, mask):
    gold, pred = random_labels(seed, probs=probs)
    y, yhat = as_arrays(gold, pred)
    cm = confusion_matrix(y, yhat, labels=list(LABELS))
    m = metrics_from_confusion(cm, mask)
    p, r, f, s = precision_recall_fscore_support(y, yhat, labels=list(LABELS), zero_division=0)
    np.testing.assert_allclose(m["precision"], p)
    np.testing.assert_allclose(m["recall"], r)
    np.testing.assert_allclose(m["f1"], f)
    np.testing.assert_array_equal(m["support"], s)
    assert m["macro_f1"] == pytest.approx(f1_score(y, yhat, average="macro", zero_division=0))
    assert m["micro_f1"] == pytest.approx(f1_score(y, yhat, average="micro", zero_division=0))
    assert m["kappa"] == pytest.approx(cohen_kappa_score(y, yhat))
    yb, ybhat = [v in mask for v in y], [v in mask for v in yhat]
    assert m["binary_f1"] == pytest.approx(f1_score(yb, ybhat, zero_division=0))
    pb, rb, _, _ = precision_recall_fscore_support(yb, ybhat, average="binary", zero_division=0)
    assert (m["binary_precision"], m["binary_recall"]) == pytest.approx((pb, rb))
    # the pure report carries the same numbers (rounded to 6 places) and the sklearn confusion matrix
    report = evaluate(gold, {"p": pred}, EvalConfig(mask_labels=mask, bootstrap=0))["preds"][0]
    assert report["confusion"] == cm.tolist()
    assert report["macro_f1"]["value"] == pytest.approx(m["macro_f1"], abs=1e-6)
    assert report["per_label"]["mistake"]["support"] == int(s[2])


def test_metrics_vectorise_over_leading_axes():
    gold, pred = random_labels(5)
    y, yhat = as_arrays(gold, pred)
    cm = confusion_matrix(y, yhat, labels=list(LABELS))
    stacked = metrics_from_confusion(np.stack([cm, cm.T, np.eye(4, dtype=int)]))
    assert stacked["macro_f1"].shape == (3,)
    assert stacked["kappa"][1] == pytest.approx(cohen_kappa_score(yhat, y))
    assert stacked["macro_f1"][2] == 1.0 and stacked["kappa"][2] == 1.0
    assert np.isnan(metrics_from_confusion(np.diag([5, 0, 0, 0]))["kappa"])  # chance agreement 1: undefined


def test_unmatched_steps_are_counted_and_excluded():
    gold, pred = random_labels(7)
    pred = pred[10:] + [StepLabel(trajectory_id="extra", step=1, label="good")]
    rep = evaluate(gold, {"p": pred}, EvalConfig(bootstrap=0))["preds"][0]
    assert (rep["matched_steps"], rep["gold_only_steps"], rep["pred_only_steps"]) == (len(gold) - 10, 10, 1)
    assert rep["pred_only_examples"] == ["extra:1"]
    assert rep["gold_only_examples"][0] == f"{gold[0].trajectory_id}:{gold[0].step}"
    y, yhat = as_arrays(gold, pred)
    assert rep["macro_f1"]["value"] == pytest.approx(f1_score(y, yhat, average="macro"), abs=1e-6)


def naive_bootstrap_macro(gold, pred, weights, trajectories):
    """Resample by repeating each trajectory's matched pairs `count` times; score with sklearn."""
    out = []
    for row in weights:
        y, yhat = [], []
        for tid, count in zip(trajectories, row, strict=True):
            g = [x for x in gold if x.trajectory_id == tid]
            a, b = as_arrays(g, pred)
            y += a * count
            yhat += b * count
        out.append(f1_score(y, yhat, average="macro", zero_division=0))
    return np.array(out)


def test_bootstrap_resamples_whole_trajectories():
    gold, pred = random_labels(11, n_traj=12)
    config = EvalConfig(bootstrap=40, seed=3)
    rep = evaluate(gold, {"p": pred}, config)["preds"][0]
    trajectories = sorted({x.trajectory_id for x in gold})
    weights = bootstrap_weights(len(trajectories), 40, 3)
    assert (weights.sum(1) == len(trajectories)).all()  # each resample draws T trajectories
    naive = naive_bootstrap_macro(gold, pred, weights, trajectories)
    assert rep["macro_f1"]["ci"] == pytest.approx(list(np.percentile(naive, [2.5, 97.5])), abs=1e-6)
    again = evaluate(gold, {"p": pred}, config)["preds"][0]
    assert again["macro_f1"]["ci"] == rep["macro_f1"]["ci"]  # seeded
    other = evaluate(gold, {"p": pred}, EvalConfig(bootstrap=40, seed=4))["preds"][0]
    assert other["macro_f1"]["ci"] != rep["macro_f1"]["ci"]


def test_cis_bracket_the_estimate_and_pairs_are_paired():
    gold, pred = random_labels(13, n_traj=60)
    rep = evaluate(gold, {"noisy": pred, "same": pred, "perfect": gold}, EvalConfig(bootstrap=300))
    noisy, same, perfect = rep["preds"]
    for key in ("macro_f1", "micro_f1", "kappa", "binary_f1"):
        lo, hi = noisy[key]["ci"]
        assert lo < noisy[key]["value"] < hi
        assert same["delta_vs_first"][key if key != "micro_f1" else "kappa"]["ci"] == [0.0, 0.0]
    assert perfect["macro_f1"]["ci"] == [1.0, 1.0]
    assert perfect["delta_vs_first"]["macro_f1"]["ci"][0] > 0  # better on every resample
    assert rep["bootstrap"] == {"samples": 300, "seed": 0, "confidence": 0.95, "unit": "trajectory"}


def test_label_file_names():
    assert label_file_names(["a/heuristic/annotations.jsonl", "b/llm/annotations.parquet", "x/gold.jsonl",
                             "c/critic.jsonl", "d/critic.jsonl"]) == [
        "heuristic", "llm", "x", "c/critic.jsonl", "d/critic.jsonl"]


def test_mask_labels_are_validated():
    with pytest.raises(ValueError, match="expected a non-empty subset"):
        EvalConfig(mask_labels=("mistakes",))
    assert EvalConfig(mask_labels=("mistake", "unnecessary")).mask_labels == ("unnecessary", "mistake")


# -- resolving `file` / `instance_id` keyed label files ------------------------------------------------------

def make_traj(instance_id: str, path: str, n_steps: int, row: int | None = None, salt: str = "") -> Trajectory:
    messages = [Message(role="system", content="sys"), Message(role="user", content=f"fix {instance_id}{salt}")]
    for i in range(n_steps):
        messages += [Message(role="assistant", content=f"step {i}",
                             tool_calls=[ToolCall(id=f"c{i}", function=FunctionCall(
                                 name="bash", arguments=json.dumps({"command": f"ls {i}"})))]),
                     Message(role="tool", content=f"out {i}", tool_call_id=f"c{i}")]
    from srft.model import trajectory_id

    return Trajectory(id=trajectory_id(instance_id, messages), instance_id=instance_id, source=Source(
        format="test", path=path, row=row, sha256="0" * 64), messages=messages, steps=steps_from_messages(messages),
        outcome=Outcome.from_status("unresolved", "test"))


@pytest.fixture()
def store(tmp_path):
    trajs = [make_traj("a__a-1", "/runs/r1/a__a-1.traj.json", 3),
             make_traj("b__b-2", "/runs/r1/b__b-2.traj.json", 2),
             make_traj("b__b-2", "/runs/r2/b__b-2.traj.json", 4, salt=" again"),  # a second run: same instance
             make_traj("c__c-3", "/data/set.parquet", 2, row=0),
             make_traj("d__d-4", "/data/set.parquet", 2, row=1)]
    write_trajectories(tmp_path / "data" / "trajectories.parquet", sorted(trajs, key=lambda t: t.id))
    return tmp_path / "data", {(t.source.path, t.source.row): t for t in trajs}


def test_resolves_file_and_instance_keys(store, tmp_path):
    data, by_path = store
    rows = [{"file": "r1/a__a-1.traj.json", "step": 1, "label": "good"},  # trailing path components
            {"file": "/runs/r2/b__b-2.traj.json", "step": 4, "label": "mistake"},
            {"instance_id": "a__a-1", "step": 2, "label": "recover"},
            {"file": "set.parquet", "row": 1, "step": 2, "label": "unnecessary"},
            {"trajectory_id": by_path[("/runs/r1/b__b-2.traj.json", None)].id, "step": 2, "label": "good"}]
    write_jsonl(tmp_path / "ext.jsonl", rows)
    labels = load_labels(tmp_path / "ext.jsonl", TrajectoryIndex.from_store(data))
    got = {(x.trajectory_id, x.step): x.label for x in labels}
    assert got == {(by_path[("/runs/r1/a__a-1.traj.json", None)].id, 1): "good",
                   (by_path[("/runs/r2/b__b-2.traj.json", None)].id, 4): "mistake",
                   (by_path[("/runs/r1/a__a-1.traj.json", None)].id, 2): "recover",
                   (by_path[("/data/set.parquet", 1)].id, 2): "unnecessary",
                   (by_path[("/runs/r1/b__b-2.traj.json", None)].id, 2): "good"}


def test_ambiguous_and_unknown_keys_are_errors(store, tmp_path):
    data, _ = store
    rows = [{"instance_id": "b__b-2", "step": 1, "label": "good"},  # two runs of b__b-2
            {"file": "b__b-2.traj.json", "step": 1, "label": "good"},
            {"file": "set.parquet", "step": 1, "label": "good"},  # a data set file holds two rows
            {"file": "nowhere.traj.json", "step": 1, "label": "good"},
            {"instance_id": "a__a-1", "step": 9, "label": "good"}]
    write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(LabelFileError) as err:
        load_labels(tmp_path / "bad.jsonl", TrajectoryIndex.from_store(data))
    text = str(err.value)
    assert text.count("is ambiguous") == 3 and "bad.jsonl:1: instance_id 'b__b-2' is ambiguous" in text
    assert "'row'" in text and "nowhere.traj.json' matches no trajectory" in text
    assert "bad.jsonl:5: step 9 out of range (trajectory" in text
    with pytest.raises(LabelFileError, match="pass --data DIR"):
        load_labels(tmp_path / "bad.jsonl", None)


# -- the command ---------------------------------------------------------------------------------------------

def test_cli_side_by_side_json_plot(store, tmp_path):
    data, by_path = store
    ids = sorted(t.id for t in by_path.values())
    n = {t.id: len(t.steps) for t in by_path.values()}
    rng = np.random.default_rng(0)
    gold = [StepLabel(trajectory_id=t, step=s, label=LABELS[rng.integers(4)]) for t in ids for s in range(1, n[t] + 1)]
    noisy = [g.model_copy(update={"label": LABELS[(LABELS.index(g.label) + (i % 3 == 0)) % 4]})
             for i, g in enumerate(gold)]
    write_labels(tmp_path / "gold.jsonl", gold)
    write_labels(tmp_path / "heuristic.jsonl", noisy[1:])  # one gold step unpredicted
    write_labels(tmp_path / "llm.parquet", gold)
    result = CliRunner().invoke(app, ["critic-eval", "--gold", str(tmp_path / "gold.jsonl"),
                                      "--pred", str(tmp_path / "heuristic.jsonl"),
                                      "--pred", str(tmp_path / "llm.parquet"),
                                      "--data", str(data), "--mask-labels", "mistake,unnecessary",
                                      "--bootstrap", "200", "--plot", str(tmp_path / "cm.png"),
                                      "--out", str(tmp_path / "report.json"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [e["name"] for e in report["preds"]] == ["heuristic", "llm"]
    heuristic, llm = report["preds"]
    assert heuristic["gold_only_steps"] == 1 and llm["macro_f1"]["value"] == 1.0
    y, yhat = as_arrays(gold, noisy[1:])
    assert heuristic["kappa"]["value"] == pytest.approx(cohen_kappa_score(y, yhat), abs=1e-6)
    assert report["mask_labels"] == ["unnecessary", "mistake"]
    assert llm["delta_vs_first"]["macro_f1"]["value"] > 0
    assert json.loads((tmp_path / "report.json").read_text()) == report
    png = (tmp_path / "cm.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert "gold step(s) without a prediction" in result.stderr and "macro-F1" in result.stderr

    strict = CliRunner().invoke(app, ["critic-eval", "--gold", str(tmp_path / "gold.jsonl"), "--pred",
                                      str(tmp_path / "heuristic.jsonl"), "--bootstrap", "0", "--strict"])
    assert strict.exit_code == 1


def test_cli_errors(tmp_path):
    write_labels(tmp_path / "gold.jsonl", [StepLabel(trajectory_id="a", step=1, label="good")])
    write_labels(tmp_path / "other.jsonl", [StepLabel(trajectory_id="b", step=1, label="good")])
    write_jsonl(tmp_path / "keyed.jsonl", [{"instance_id": "x__y-1", "step": 1, "label": "good"}])
    runner = CliRunner()
    disjoint = runner.invoke(app, ["critic-eval", "--gold", str(tmp_path / "gold.jsonl"), "--pred",
                                   str(tmp_path / "other.jsonl"), "--json"])
    assert disjoint.exit_code == 1 and json.loads(disjoint.stdout)["preds"][0]["matched_steps"] == 0
    keyed = runner.invoke(app, ["critic-eval", "--gold", str(tmp_path / "gold.jsonl"), "--pred",
                                str(tmp_path / "keyed.jsonl"), "--json"])
    assert keyed.exit_code == 2 and "pass --data DIR" in json.loads(keyed.stdout)["error"]
    bad_mask = runner.invoke(app, ["critic-eval", "--gold", str(tmp_path / "gold.jsonl"), "--pred",
                                   str(tmp_path / "gold.jsonl"), "--mask-labels", "bad"])
    assert bad_mask.exit_code == 2 and "non-empty subset" in bad_mask.output
