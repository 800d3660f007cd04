"""`srft lab --preset tiny` end to end through the real stages (the pipeline runner of `srft run`): ingest, annotate,
build, train, evaluate, compare, the lab's results."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from srft.cli import app
from srft.io import read_trajectories
from srft.lab.config import arms, preset_config
from srft.labels import read_labels
from srft.run.layout import GOLD_LABELS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("lab") / "tiny"
    result = CliRunner().invoke(app, ["lab", "--preset", "tiny", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout.strip().splitlines()[-1])


def test_every_arm_is_trained_evaluated_and_compared(tiny):
    out, summary = tiny
    config = preset_config("tiny")
    names = ["base", *(a.name for a in arms(config))]
    assert [r["system"] for r in summary["results"]] == names
    with open(out / "outcomes.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == config.tasks.eval
    assert set(rows[0]) == {"instance_id", "base", *(f"{a.name}.s{s}" for a in arms(config) for s in config.seeds)}
    cmp = json.loads((out / "compare.json").read_text())
    assert cmp["kind"] == "srft.compare" and {c["b"] for c in cmp["comparisons"]} == {"rft"}
    report = json.loads((out / "lab_report.json").read_text())
    for name in names[1:]:
        evaluation = report["arms"][name]["eval"]["seed0"]
        assert evaluation["actions"] > 0 and 0 <= evaluation["success"] <= 1
        assert report["arms"][name]["train"]["seed0"]["steps"] == config.finetune.max_steps  # equal steps
    assert (out / "noise.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| srft-oracle |" in (out / "results.md").read_text()
    for d in ("easy", "medium", "hard"):
        assert (out / f"outcomes-{d}.csv").is_file()


def test_teacher_data_went_through_ingest_and_the_labels_line_up(tiny):
    out, summary = tiny
    trajectories = read_trajectories(out / "ingest")
    assert len(trajectories) == summary["teacher"]["trajectories"] == preset_config("tiny").tasks.train
    assert sum(t.resolved for t in trajectories) == summary["teacher"]["resolved"]
    oracle = read_labels(out / "gold" / GOLD_LABELS, {t.id: t for t in trajectories})
    assert len(oracle) == sum(len(t.steps) for t in trajectories) == summary["teacher"]["steps"]
    assert Counter(lab.label for lab in oracle) == summary["teacher"]["labels"]
    critic = read_labels(out / "annotate" / "annotations.jsonl")
    unresolved = {t.id for t in trajectories if not t.resolved}
    assert {lab.trajectory_id for lab in critic} == unresolved  # the critic labels unresolved ones only


def test_builds_mask_exactly_what_each_arm_says(tiny):
    """srft-oracle: unresolved trajectories whole, exactly the true mistake steps at weight 0; rft: resolved
    only; mistakes-only: only true mistake steps trained."""
    import datasets

    out, _ = tiny
    trajectories = {t.id: t for t in read_trajectories(out / "ingest")}
    truth = {(lab.trajectory_id, lab.step): lab.label for lab in read_labels(out / "gold" / GOLD_LABELS)}
    srft = datasets.load_from_disk(str(out / "build" / "srft-oracle" / "dataset"))
    checked = 0
    for row in srft:
        traj = trajectories[row["trajectory_id"]]
        for span, label in zip(row["step_spans"], row["step_labels"]):
            assert label == truth[(traj.id, span["step"])]
            masked = not traj.resolved and label == "mistake"
            assert (span["weight"] == 0) == masked
            trained = [t for t in row["labels"][span["start"]:span["end"]] if t != -100]
            assert bool(trained) == (not masked)
            checked += masked
    assert checked > 0
    rft = datasets.load_from_disk(str(out / "build" / "rft" / "dataset"))
    assert {r["trajectory_id"] for r in rft} == {t.id for t in trajectories.values() if t.resolved}
    harm = datasets.load_from_disk(str(out / "build" / "mistakes-only" / "dataset"))
    for row in harm:
        for span, label in zip(row["step_spans"], row["step_labels"]):
            assert (span["weight"] > 0) == (label == "mistake")


def test_a_second_run_resumes_and_changes_nothing(tiny):
    out, summary = tiny
    before = (out / "outcomes.csv").read_bytes(), (out / "compare.json").read_bytes()
    result = CliRunner().invoke(app, ["lab", "--preset", "tiny", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "lab_report.json").read_text())
    assert set(report["timings_s"].values()) == {0.0}  # every stage reused
    assert ((out / "outcomes.csv").read_bytes(), (out / "compare.json").read_bytes()) == before


def test_bad_overrides_are_errors_that_name_the_key(tmp_path):
    result = CliRunner().invoke(app, ["lab", "--preset", "tiny", "--out", str(tmp_path), "--set",
                                      "finetune.max_stepz=3", "--json"])
    assert result.exit_code == 2
    assert "max_stepz" in json.loads(result.stdout.strip().splitlines()[-1])["error"]
    assert not any(tmp_path.iterdir())
