"""Step-label policies: pure functions from a trajectory (with step labels) to one loss weight per step.

A policy never looks at tokens. It answers, for each assistant step, "how much loss does this step get?"
(a weight in [0, 1]; 0 = kept in context but not trained) and, for a whole trajectory, "is it used at all?".
The mask engine (`srft.dataset.masks`) turns the weights into token labels.

    sft     every step of every trajectory
    rft     resolved trajectories only, every step
    srft    resolved trajectories whole; unresolved ones whole, with `mask_labels` steps at weight 0
            (optionally soft `label_weights`, confidence weights, and labels applied to resolved ones too)
    prefix  unresolved trajectories trained only up to (not including) their first masked step
    random  as srft, but the masked steps are chosen at random (seeded per trajectory): the control that shows
            whether the critic's choice of steps matters

Demonstration (`is_demo`) and scaffold-added (`synthetic`) steps are never trained, under every policy.

Confidence weights (`confidence_weights`): a step whose label came with votes or probabilities (`Step.label_probs`)
gets the expected weight over them, sum_label share * weight(label) with weight 0 for `mask_labels`, so without
`label_weights` it is the share of votes that are not a masked label (3/3 mistake -> 0, 1/3 mistake -> 0.67).
"""

from __future__ import annotations

import hashlib
import random as _random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from srft.model import Label, Trajectory
from srft.registry import resolve

# name -> "module:function"; a user's own dotted path works too (srft.registry.resolve).
POLICIES: dict[str, str] = {
    "sft": "srft.policy:sft",
    "rft": "srft.policy:rft",
    "srft": "srft.policy:srft",
    "prefix": "srft.policy:prefix",
    "random": "srft.policy:random_control",
}


class PolicyConfig(BaseModel):
    """How step labels become per-step loss weights."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("srft", description="policy: sft | rft | srft | prefix | random, or a dotted path")
    mask_labels: list[Label] = Field(["mistake"], description="labels whose steps get weight 0")
    label_weights: dict[Label, float] = Field(
        default_factory=dict, description="soft weights per label, e.g. {unnecessary: 0.5}; per-token float loss")
    label_on_resolved: bool = Field(False, description="also apply labels to resolved trajectories")
    confidence_weights: bool = Field(False, description="weigh a step by its label's votes/probabilities: the "
                                     "expected label weight (needs labels with votes or probs)")
    unlabelled: Literal["train", "mask"] = Field(
        "train", description="weight of a step without a label where labels apply: train (1.0) or mask (0.0)")
    unknown_outcome: Literal["unresolved", "resolved", "drop"] = Field(
        "unresolved", description="treat a trajectory with no harness outcome as this (rft drops 'unresolved')")
    seed: int = Field(0, description="seed of the random control policy (mixed with each trajectory id)")

    @model_validator(mode="after")
    def _check(self) -> PolicyConfig:
        problems = []
        for label, weight in self.label_weights.items():
            if not 0.0 <= weight <= 1.0:
                problems.append(f"label_weights.{label}={weight}: expected a weight in [0, 1]")
            if label in self.mask_labels:
                problems.append(f"label {label!r} is in both mask_labels and label_weights: keep it in one")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def soft(self) -> bool:
        """True when some step can get a weight strictly between 0 and 1 (needs a per-token weight column)."""
        return self.confidence_weights or any(0.0 < w < 1.0 for w in self.label_weights.values())

    def label_weight(self, label: str) -> float:
        return 0.0 if label in self.mask_labels else self.label_weights.get(label, 1.0)


@dataclass
class Decision:
    """A policy's answer for one trajectory: a weight per step, or why the trajectory is not used."""

    weights: list[float]
    drop_reason: str | None = None
    counts: Counter = field(default_factory=Counter)  # masked_steps, unlabelled_steps, demo_steps, ...


@dataclass
class PolicyReport:
    """Totals over a batch of trajectories."""

    policy: str
    trajectories: int = 0
    trajectories_used: int = 0
    steps: int = 0
    trained_steps: int = 0
    dropped: Counter = field(default_factory=Counter)   # reason -> trajectories
    counts: Counter = field(default_factory=Counter)    # masked_steps, unlabelled_steps, soft_steps, ...

    def to_dict(self) -> dict:
        return {"policy": self.policy, "trajectories": self.trajectories,
                "trajectories_used": self.trajectories_used, "steps": self.steps,
                "trained_steps": self.trained_steps, "trajectories_dropped": dict(sorted(self.dropped.items())),
                **{k: v for k, v in sorted(self.counts.items())}}


PolicyFn = Callable[[Trajectory, PolicyConfig], Decision]


# -- helpers shared by the policies -------------------------------------------------------------------------

def _outcome(traj: Trajectory, config: PolicyConfig) -> str:
    """'resolved' | 'unresolved' | 'drop' after applying `unknown_outcome`."""
    if traj.outcome.resolved is None:
        return config.unknown_outcome
    return "resolved" if traj.outcome.resolved else "unresolved"


def _never_trained(traj: Trajectory, counts: Counter) -> list[bool]:
    """Demonstration and synthetic steps: kept as context, never trained."""
    out = []
    for step in traj.steps:
        counts["demo_steps"] += step.is_demo
        counts["synthetic_steps"] += step.synthetic and not step.is_demo
        out.append(step.is_demo or step.synthetic)
    return out


def _labelled_weights(traj: Trajectory, config: PolicyConfig, counts: Counter) -> list[float]:
    """Weights from labels: mask_labels -> 0, label_weights -> w, other labels -> 1, no label -> `unlabelled`;
    with confidence weights, the expected weight over the label's vote shares."""
    weights = []
    for step in traj.steps:
        if step.label is None:
            counts["unlabelled_steps"] += 1
            weights.append(1.0 if config.unlabelled == "train" else 0.0)
        elif config.confidence_weights and step.label_probs:
            counts["confidence_weighted_steps"] += 1
            total = sum(step.label_probs.values())
            weights.append(round(sum(p * config.label_weight(lab) for lab, p in step.label_probs.items()) / total, 6))
        else:
            weights.append(config.label_weight(step.label))
    return weights


def _finish(traj: Trajectory, weights: list[float], counts: Counter) -> Decision:
    """Zero the never-trained steps and count what the policy did."""
    never = _never_trained(traj, counts)
    weights = [0.0 if n else w for w, n in zip(weights, never)]
    for step, w, n in zip(traj.steps, weights, never):
        if w == 0.0 and not n:
            counts["masked_steps"] += 1
            if step.label is not None:
                counts[f"masked_{step.label}"] += 1
        elif 0.0 < w < 1.0:
            counts["soft_steps"] += 1
    return Decision(weights=weights, counts=counts)


def _dropped(traj: Trajectory, reason: str) -> Decision:
    return Decision(weights=[0.0] * len(traj.steps), drop_reason=reason)


# -- the policies -------------------------------------------------------------------------------------------

def sft(traj: Trajectory, config: PolicyConfig) -> Decision:
    """Every step of every trajectory."""
    return _finish(traj, [1.0] * len(traj.steps), Counter())


def rft(traj: Trajectory, config: PolicyConfig) -> Decision:
    """Resolved trajectories only, every step trained."""
    outcome = _outcome(traj, config)
    if outcome != "resolved":
        return _dropped(traj, "outcome_unknown" if outcome == "drop" else "unresolved")
    return _finish(traj, [1.0] * len(traj.steps), Counter())


def srft(traj: Trajectory, config: PolicyConfig) -> Decision:
    """Resolved: every step. Unresolved: every step kept in context, labelled steps weighed by their label."""
    outcome = _outcome(traj, config)
    if outcome == "drop":
        return _dropped(traj, "outcome_unknown")
    counts: Counter = Counter()
    if outcome == "resolved" and not config.label_on_resolved:
        return _finish(traj, [1.0] * len(traj.steps), counts)
    return _finish(traj, _labelled_weights(traj, config, counts), counts)


def prefix(traj: Trajectory, config: PolicyConfig) -> Decision:
    """Unresolved: steps before the first `mask_labels` step trained, that step and all later ones masked."""
    outcome = _outcome(traj, config)
    if outcome == "drop":
        return _dropped(traj, "outcome_unknown")
    counts: Counter = Counter()
    if outcome == "resolved" and not config.label_on_resolved:
        return _finish(traj, [1.0] * len(traj.steps), counts)
    counts["unlabelled_steps"] += sum(s.label is None for s in traj.steps)
    first = next((i for i, s in enumerate(traj.steps) if s.label in config.mask_labels), len(traj.steps))
    return _finish(traj, [1.0 if i < first else 0.0 for i in range(len(traj.steps))], counts)


def random_control(traj: Trajectory, config: PolicyConfig) -> Decision:
    """As srft, but the same number of trainable steps is masked at random (seeded by seed + trajectory id),
    and soft weights are moved along with them."""
    decision = srft(traj, config)
    if decision.drop_reason is not None:
        return decision
    never = [s.is_demo or s.synthetic for s in traj.steps]
    eligible = [i for i, n in enumerate(never) if not n]
    chosen = [decision.weights[i] for i in eligible]  # the multiset of weights srft gave, reshuffled
    digest = hashlib.sha256(f"{config.seed}:{traj.id}".encode()).digest()
    _random.Random(int.from_bytes(digest[:8], "big")).shuffle(chosen)
    weights = [0.0] * len(traj.steps)
    for i, w in zip(eligible, chosen):
        weights[i] = w
    return _finish(traj, weights, Counter({"unlabelled_steps": decision.counts["unlabelled_steps"]}))


# -- batch API ----------------------------------------------------------------------------------------------

def get_policy(name: str) -> PolicyFn:
    return resolve(POLICIES, name, "policy")


def decide(traj: Trajectory, config: PolicyConfig) -> Decision:
    """The policy's decision for one trajectory (weights checked to be one per step, each in [0, 1])."""
    decision = get_policy(config.name)(traj, config)
    if len(decision.weights) != len(traj.steps) or any(not 0.0 <= w <= 1.0 for w in decision.weights):
        raise ValueError(f"policy {config.name!r} returned {len(decision.weights)} weights for trajectory "
                         f"{traj.id} ({len(traj.steps)} steps); expected one weight in [0, 1] per step")
    return decision


def step_weights(traj: Trajectory, config: PolicyConfig) -> list[float]:
    """Per-step weights for one trajectory (all 0 when the policy drops it)."""
    return decide(traj, config).weights


def apply_policy(trajectories: Iterable[Trajectory],
                 config: PolicyConfig) -> tuple[list[Trajectory], PolicyReport]:
    """Set `Step.weight` on every step of the used trajectories; return them (input order) and the totals.
    Dropped trajectories are left out and counted by reason."""
    get_policy(config.name)  # fail before the loop on an unknown name
    report = PolicyReport(policy=config.name)
    used = []
    for traj in trajectories:
        report.trajectories += 1
        decision = decide(traj, config)
        if decision.drop_reason is not None:
            report.dropped[decision.drop_reason] += 1
            continue
        report.trajectories_used += 1
        report.steps += len(traj.steps)
        report.trained_steps += sum(w > 0 for w in decision.weights)
        report.counts.update(decision.counts)
        steps = [s.model_copy(update={"weight": w}) for s, w in zip(traj.steps, decision.weights)]
        used.append(traj.model_copy(update={"steps": steps}))
    return used, report
