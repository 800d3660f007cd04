"""Soft masks from the critic's confidence: `srft build` with confidence weights gives each step the share of its
votes that are not a masked label, on its exact tokens (real Qwen2.5-Coder tokenizer), through `loss_weights`."""

from __future__ import annotations

import json

import pytest
from critic_support import call, tool_traj, write_store
from typer.testing import CliRunner

from srft.cli import app
from srft.dataset.build import BuildConfig, run_build
from srft.dataset.masks import IGNORE_INDEX
from srft.labels import StepLabel, apply_labels, write_labels
from srft.policy import PolicyConfig, step_weights

VOTES = {1: {"good": 3}, 2: {"mistake": 3}, 3: {"mistake": 1, "good": 2}, 4: {"unnecessary": 2, "mistake": 1}}


def four_steps():
    return tool_traj([(f"step {i}", call("read_file", path=f"f{i}.py"), f"out {i}") for i in range(1, 5)],
                     instance="votes__repo-1")


def voted(traj) -> list[StepLabel]:
    return [StepLabel(trajectory_id=traj.id, step=n, label=max(v, key=v.get), votes=v, source="openai:m",
                      confidence=max(v.values()) / sum(v.values())) for n, v in VOTES.items()]


def test_confidence_weights_are_the_share_of_unmasked_votes():
    traj = four_steps()
    [labelled] = apply_labels([traj], voted(traj))
    assert labelled.steps[2].label_probs == pytest.approx({"mistake": 1 / 3, "good": 2 / 3})
    assert step_weights(labelled, PolicyConfig()) == [1.0, 0.0, 1.0, 1.0]  # hard labels, as before
    soft = PolicyConfig(confidence_weights=True)
    assert soft.soft and step_weights(labelled, soft) == [1.0, 0.0, 0.666667, 0.666667]
    both = PolicyConfig(confidence_weights=True, label_weights={"unnecessary": 0.5})
    assert step_weights(labelled, both) == [1.0, 0.0, 0.666667, 0.333333]  # 2/3 * 0.5 + 1/3 * 0
    masked = PolicyConfig(confidence_weights=True, mask_labels=["mistake", "unnecessary"])
    assert step_weights(labelled, masked) == [1.0, 0.0, 0.666667, 0.0]


def test_build_puts_confidence_weights_on_the_step_tokens(tmp_path, tokenizer_dir):
    import datasets

    traj = four_steps()
    store = write_store(tmp_path / "s", [traj])
    write_labels(tmp_path / "votes.parquet", voted(traj))
    qwen = str(tokenizer_dir / "qwen2.5-coder-instruct")
    result = CliRunner().invoke(app, ["build", str(store), "--tokenizer", qwen, "--out", str(tmp_path / "b"),
                                      "--annotations", str(tmp_path / "votes.parquet"), "--confidence-weights",
                                      "--export", "trl", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "b" / "build_report.json").read_text())
    assert report["config"]["policy"]["confidence_weights"] is True
    [row] = datasets.load_from_disk(str(tmp_path / "b" / "dataset"))
    spans = {s["step"]: s for s in row["step_spans"]}
    assert [spans[n]["weight"] for n in (1, 2, 3, 4)] == pytest.approx([1.0, 0.0, 0.666667, 0.666667])
    for span in spans.values():
        weights = row["loss_weights"][span["start"]:span["end"]]
        labels = row["labels"][span["start"]:span["end"]]
        if span["weight"] == 0:
            assert set(labels) == {IGNORE_INDEX} and set(weights) == {0.0}
        else:
            assert labels == row["input_ids"][span["start"]:span["end"]]
            assert weights == pytest.approx([span["weight"]] * len(weights))
    assert report["policy"]["confidence_weighted_steps"] == 4 and report["policy"]["soft_steps"] == 2
    assert any(w.startswith("trl: ") and "soft weight" in w for w in report["warnings"])  # said at build time

    write_labels(tmp_path / "hard.jsonl", [lab.model_copy(update={"votes": None, "confidence": None})
                                          for lab in voted(traj)])
    config = BuildConfig(tokenizer=qwen, policy=PolicyConfig(confidence_weights=True))
    hard = run_build(store, tmp_path / "h", config, annotations=tmp_path / "hard.jsonl")
    assert any("no label carries votes or probabilities" in w for w in hard["warnings"])


def test_simulated_votes_keep_the_error_rate_and_differ_only_in_where_doubt_falls():
    from srft.lab.data import flip_labels, vote_labels

    gold = [StepLabel(trajectory_id=f"t{t}", step=s, label="mistake" if s % 4 == 0 else "good", source="oracle")
            for t in range(200) for s in range(1, 13)]
    q = 0.25
    hard = flip_labels(gold, q, seed=3)
    sharp, flat = vote_labels(gold, q, seed=3), vote_labels(gold, q, seed=3, informative=False)
    assert [x.label for x in sharp] == [x.label for x in flat] == [x.label for x in hard]  # the same labels

    def stats(voted):
        wrong = [(g.label == "mistake") != (v.label == "mistake") for g, v in zip(gold, voted, strict=True)]
        unsure = [v.confidence < 1 for v in voted]
        in_unsure = sum(w for w, u in zip(wrong, unsure, strict=True) if u) / sum(unsure)
        in_sure = sum(w for w, u in zip(wrong, unsure, strict=True) if not u) / (len(voted) - sum(unsure))
        return sum(wrong) / len(voted), sum(unsure) / len(voted), in_unsure, in_sure

    error, unsure, wrong_if_unsure, wrong_if_sure = stats(sharp)
    assert error == pytest.approx(q, abs=0.02) and unsure == pytest.approx(q + q * (1 - q), abs=0.03)
    assert wrong_if_sure == 0 and wrong_if_unsure == pytest.approx(1 / (2 - q), abs=0.04)
    error, unsure, wrong_if_unsure, wrong_if_sure = stats(flat)
    assert unsure == pytest.approx(q + q * (1 - q), abs=0.03)
    assert wrong_if_unsure == pytest.approx(q, abs=0.04) and wrong_if_sure == pytest.approx(q, abs=0.03)
    for g, v in zip(gold, sharp, strict=True):  # a wrong label's dissenting vote is the truth
        if (g.label == "mistake") != (v.label == "mistake"):
            assert v.votes == {v.label: 2, g.label: 1}


def test_the_lab_confidence_arms_become_recipe_policies_and_nodes():
    from srft.run.graph import pipeline_nodes
    from srft.run.recipe import Recipe

    recipe = Recipe(lab={"preset": "tiny", "overrides": {"arms": ["rft", "srft-confidence"], "confidence_q": 0.2}})
    assert recipe.problems() == []
    policies = recipe.build.policies
    assert sorted(policies) == ["rft", "srft-hard", "srft-soft", "srft-soft-flat"]
    assert [(policies[n].flip, policies[n].flip_confidence, recipe.policy_config(n).confidence_weights)
            for n in ("srft-hard", "srft-soft", "srft-soft-flat")] == [
        (0.2, None, False), (0.2, "informative", True), (0.2, "uninformative", True)]
    nodes = {n.key: n for n in pipeline_nodes(recipe)}
    assert nodes["noisy/srft-soft"].options == {"q": 0.2, "seed": 0, "votes": "informative"}
    assert nodes["noisy/srft-hard"].options == {"q": 0.2, "seed": 0}
    assert "build/srft-soft-flat" in nodes and "noisy/srft-soft-flat" in nodes["build/srft-soft-flat"].deps
    bad = Recipe(lab={"preset": "tiny"}, build={"policies": {"x": {"labels": "gold", "flip_confidence": "informative"}}})
    assert any("simulated votes need a flip rate" in message for _, message in bad.problems())
