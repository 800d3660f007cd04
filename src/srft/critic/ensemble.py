"""Majority vote over several critics, with agreement recorded.

Each member labels the trajectory on its own (with its own cache entries). Per step the label with the most votes
wins. Tie rule (`tie`):
  first_member  (default) among the tied labels, the one chosen by the earliest member in the list, so list
                members from most to least trusted;
  severity      among the tied labels, the most severe: mistake > unnecessary > recover > good (masks more).
A member that fails on a trajectory does not vote on it; with fewer than `min_votes` members left the trajectory
is critic_failed. Every label keeps the vote: `votes` {label: members}, `confidence` the winner's share, and a
reason saying it ("2/3 votes: ..."); the report carries per-step agreement, the share of unanimous steps, and
pairwise agreement and Cohen's kappa between members. A member that itself voted (`--samples K`) casts its
majority label as its one vote.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from itertools import combinations
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from srft.critic import CriticContext, TrajectoryResult, labelled_steps
from srft.critic.confidence import SEVERITY, tally, vote  # noqa: F401 - vote and SEVERITY are part of this API
from srft.critic.llm import build_critic
from srft.labels import StepLabel
from srft.model import LABELS, Trajectory


class MemberSpec(BaseModel):
    """One voting critic."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="registered critic name or dotted path")
    options: dict[str, Any] = Field(default_factory=dict, description="that critic's options")


class EnsembleConfig(BaseModel):
    """Options of the ensemble critic."""

    model_config = ConfigDict(extra="forbid")

    members: list[MemberSpec] = Field(min_length=2, description="the voting critics, most trusted first")
    tie: Literal["first_member", "severity"] = Field("first_member", description="tie rule (see module doc)")
    min_votes: int = Field(1, ge=1, description="members that must succeed for a trajectory to be labelled")


class EnsembleCritic:
    def __init__(self, config: EnsembleConfig, members: list[Any]):
        self.config, self.members = config, members
        ids = [m.id for m in members]
        self.member_ids = [i if ids.count(i) == 1 else f"{i}#{k}" for k, i in enumerate(ids)]
        self.id = f"ensemble({','.join(self.member_ids)})"
        self.prompt_hash = next((m.prompt_hash for m in members if m.prompt_hash), None)

    async def prepare(self) -> None:
        for m in self.members:
            if hasattr(m, "prepare"):
                await m.prepare()

    async def aclose(self) -> None:
        for m in self.members:
            await m.aclose()

    async def label(self, traj: Trajectory) -> TrajectoryResult:
        results = await asyncio.gather(*(m.label(traj) for m in self.members))
        res = TrajectoryResult(trajectory_id=traj.id, status="ok")
        for r in results:
            res.calls, res.cached = res.calls + r.calls, res.cached + r.cached
            res.prompt_tokens += r.prompt_tokens
            res.completion_tokens += r.completion_tokens
            res.prompt_tokens_cached += r.prompt_tokens_cached
            res.windows = max(res.windows, r.windows)
            res.abstained += r.abstained
            res.unscored_steps += r.unscored_steps
            for name, tokens in r.evidence.items():
                res.evidence[name] = res.evidence.get(name, 0) + tokens
                res.evidence_cut[name] = res.evidence_cut.get(name, 0) + r.evidence_cut.get(name, 0)
        ok = [(mid, r) for mid, r in zip(self.member_ids, results) if r.status != "critic_failed"]
        failed = [(mid, r) for mid, r in zip(self.member_ids, results) if r.status == "critic_failed"]
        res.raw = [{**raw, "member": mid} for mid, r in failed for raw in r.raw]
        if len(ok) < self.config.min_votes:
            res.status, res.failure = "critic_failed", "member_failed"
            res.error = "; ".join(f"{mid}: {r.error}" for mid, r in failed)
            return res
        steps = labelled_steps(traj)
        by_member = {mid: {lab.step: lab for lab in r.labels} for mid, r in ok}
        res.member_labels = {mid: [by_member[mid][n].label if n in by_member.get(mid, {}) else None
                                   for n in steps] for mid in self.member_ids}
        res.agreement = []
        for n in steps:
            ballots = [(mid, by_member[mid][n]) for mid, _ in ok if n in by_member[mid]]
            winner, votes, share = tally([b.label for _, b in ballots], self.config.tie)
            voters = [(mid, b) for mid, b in ballots if b.label == winner]
            res.agreement.append(share)
            first_reason = next((b.reason for _, b in voters if b.reason), "")
            reason = f"{len(voters)}/{len(ballots)} votes ({', '.join(m for m, _ in voters)}): {first_reason}"
            res.labels.append(StepLabel(trajectory_id=traj.id, step=n, label=winner, reason=reason.strip(),
                                        source=self.id, prompt_hash=self.prompt_hash, votes=votes,
                                        confidence=round(share, 6)))
        if any(r.status == "repaired" for r in results):
            res.status = "repaired"
        if failed:  # labelled by the others; the failure stays visible
            res.error = "members failed: " + "; ".join(f"{mid}: {r.error}" for mid, r in failed)
        return res


def _kappa(a: list[str], b: list[str]) -> float | None:
    n = len(a)
    if n == 0:
        return None
    observed = sum(x == y for x, y in zip(a, b)) / n
    ca, cb = Counter(a), Counter(b)
    expected = sum(ca[lab] * cb[lab] for lab in LABELS) / (n * n)
    return None if expected == 1 else (observed - expected) / (1 - expected)


def agreement_summary(results: list[TrajectoryResult]) -> dict[str, Any]:
    """Agreement over every voted step: mean winner share, unanimous share, pairwise agreement and kappa."""
    shares = [a for r in results if r.agreement for a in r.agreement]
    pairs: dict[str, dict[str, Any]] = {}
    members = sorted({m for r in results if r.member_labels for m in r.member_labels})
    for x, y in combinations(members, 2):
        a, b = [], []
        for r in results:
            if r.member_labels and x in r.member_labels and y in r.member_labels:
                for lx, ly in zip(r.member_labels[x], r.member_labels[y]):
                    if lx is not None and ly is not None:
                        a.append(lx)
                        b.append(ly)
        pairs[f"{x} | {y}"] = {"steps": len(a), "agreement": sum(p == q for p, q in zip(a, b)) / len(a) if a else None,
                               "kappa": _kappa(a, b)}
    return {"steps": len(shares), "mean_winner_share": sum(shares) / len(shares) if shares else None,
            "unanimous": sum(s == 1.0 for s in shares), "pairwise": pairs}


def build(options: dict[str, Any], ctx: CriticContext) -> EnsembleCritic:
    config = EnsembleConfig(**options)
    return EnsembleCritic(config, [build_critic(m.name, m.options, ctx) for m in config.members])
