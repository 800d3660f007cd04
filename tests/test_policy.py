"""Policies: labels -> per-step weights, as pure functions; batch counts by reason."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from srft.policy import POLICIES, PolicyConfig, apply_policy, decide, step_weights

from test_masks import make_traj, tool_traj

LABELS5 = {1: "good", 2: "mistake", 3: "unnecessary", 4: "recover"}  # step 5 unlabelled


def traj(resolved, labels=LABELS5, demo=False):
    t = tool_traj(4, resolved=resolved, labels=labels)
    if demo:
        t = t.model_copy(update={"steps": [t.steps[0].model_copy(update={"is_demo": True}),
                                           t.steps[1].model_copy(update={"synthetic": True}), *t.steps[2:]]})
    return t


@pytest.mark.parametrize("name,resolved,expected", [
    ("sft", True, [1, 1, 1, 1, 1]),
    ("sft", False, [1, 1, 1, 1, 1]),
    ("rft", True, [1, 1, 1, 1, 1]),
    ("srft", True, [1, 1, 1, 1, 1]),
    ("srft", False, [1, 0, 1, 1, 1]),
    ("prefix", False, [1, 0, 0, 0, 0]),
    ("prefix", True, [1, 1, 1, 1, 1]),
])
def test_policy_weights(name, resolved, expected):
    assert step_weights(traj(resolved), PolicyConfig(name=name)) == expected


def test_rft_drops_unresolved_and_unknown():
    assert decide(traj(False), PolicyConfig(name="rft")).drop_reason == "unresolved"
    assert decide(traj(None), PolicyConfig(name="rft")).drop_reason == "unresolved"  # unknown -> unresolved
    assert decide(traj(None), PolicyConfig(name="srft", unknown_outcome="drop")).drop_reason == "outcome_unknown"
    assert step_weights(traj(None), PolicyConfig(name="srft", unknown_outcome="resolved")) == [1] * 5


def test_srft_options():
    cfg = PolicyConfig(name="srft", mask_labels=["mistake", "unnecessary"], label_on_resolved=True,
                       unlabelled="mask")
    assert step_weights(traj(True), cfg) == [1, 0, 0, 1, 0]
    soft = PolicyConfig(name="srft", label_weights={"unnecessary": 0.5})
    assert step_weights(traj(False), soft) == [1, 0, 0.5, 1, 1] and soft.soft
    assert not PolicyConfig().soft


def test_config_is_validated():
    with pytest.raises(ValidationError, match="both mask_labels and label_weights"):
        PolicyConfig(mask_labels=["mistake"], label_weights={"mistake": 0.5})
    with pytest.raises(ValidationError, match=r"in \[0, 1\]"):
        PolicyConfig(label_weights={"unnecessary": 2.0})
    with pytest.raises(ValidationError):
        PolicyConfig(mask_label=["mistake"])  # a typo in a key is an error
    with pytest.raises(ValidationError):
        PolicyConfig(mask_labels=["bad"])


def test_demo_and_synthetic_steps_are_never_trained():
    for name in POLICIES:
        weights = step_weights(traj(True, demo=True), PolicyConfig(name=name))
        assert weights[:2] == [0, 0], name


def test_random_masks_as_many_steps_as_srft_seeded():
    trajs = [tool_traj(8, resolved=False, iid=f"astropy__astropy-{i}", labels={2: "mistake", 5: "mistake"})
             for i in range(20)]
    srft = [step_weights(t, PolicyConfig(name="srft")) for t in trajs]
    rand = [step_weights(t, PolicyConfig(name="random", seed=1)) for t in trajs]
    assert all(sorted(a) == sorted(b) for a, b in zip(srft, rand))  # same number of masked steps per trajectory
    assert rand != srft  # but not the same steps
    assert rand == [step_weights(t, PolicyConfig(name="random", seed=1)) for t in trajs]  # deterministic
    assert rand != [step_weights(t, PolicyConfig(name="random", seed=2)) for t in trajs]


def test_batch_counts():
    trajs = [traj(True), traj(False), traj(None), make_traj(tool_traj().messages, resolved=False)]
    used, report = apply_policy(trajs, PolicyConfig(name="srft", unknown_outcome="drop"))
    assert len(used) == 3 and report.dropped == {"outcome_unknown": 1}
    assert [s.weight for s in used[1].steps] == [1, 0, 1, 1, 1]
    d = report.to_dict()
    assert d["trajectories_used"] == 3 and d["masked_steps"] == 1 and d["masked_mistake"] == 1
    assert d["unlabelled_steps"] == 1 + 5  # step 5 of traj 2, all 5 of the unlabelled one
    assert d["trained_steps"] == 14
    _, rft = apply_policy(trajs, PolicyConfig(name="rft"))
    assert rft.dropped == {"unresolved": 3}


def test_unknown_policy_lists_the_known_ones():
    with pytest.raises(KeyError, match="known: prefix, random, rft, sft, srft"):
        apply_policy([traj(True)], PolicyConfig(name="nope"))


def test_a_users_dotted_path_policy():
    _, report = apply_policy([traj(True)], PolicyConfig(name="srft.policy:sft"))
    assert report.trajectories_used == 1
