"""How sure a critic is of each label: votes over several answers, or probabilities from token log-probabilities.

votes     several answers per step (K samples of one critic at temperature > 0, or the members of an ensemble):
          the label with most votes wins (`tally`), `votes` = {label: count}, `confidence` = the winner's share.
logprobs  one answer whose tokens came with the server's top-k log-probabilities (OpenAI `logprobs.content`
          shape: [{token, logprob, top_logprobs: [{token, logprob}]}]): at the first token of each step's label
          value, the probability mass on the tokens that begin each label, normalised over the four labels
          (`label_probs`). The four labels begin with different letters, so one token names at most one label.
          Servers report log-probabilities before any grammar, so the mass on non-label tokens is dropped.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from typing import Any

from srft.model import LABELS

SEVERITY = {"mistake": 0, "unnecessary": 1, "recover": 2, "good": 3}
_LABEL_VALUE = re.compile(r'(?<!\\)"label"\s*:\s*"')


def vote(ballots: list[str], tie: str) -> str:
    """The winning label of one step; `ballots` in order (members most trusted first, or samples).
    Ties: `first_member` = the earliest ballot among the tied labels; `severity` = the most severe label."""
    counts = Counter(ballots)
    top = max(counts.values())
    tied = [lab for lab in LABELS if counts.get(lab) == top]
    if len(tied) == 1:
        return tied[0]
    if tie == "severity":
        return min(tied, key=SEVERITY.__getitem__)
    return next(b for b in ballots if b in tied)


def tally(ballots: list[str], tie: str = "first_member") -> tuple[str, dict[str, int], float]:
    """(winner, votes per label in LABELS order, the winner's share of the ballots)."""
    winner = vote(ballots, tie)
    counts = Counter(ballots)
    return winner, {lab: counts[lab] for lab in LABELS if counts[lab]}, counts[winner] / len(ballots)


def _answer_order(text: str) -> list[int] | None:
    """The step numbers in the order the answer lists them (the order of its "label" keys)."""
    from srft.critic.parse import _unwrap

    try:
        data = json.loads(_unwrap(text))
        return [int(item["step"]) for item in data["steps"]]
    except (ValueError, KeyError, TypeError):
        return None


def _mass(entry: dict[str, Any], prefix: str) -> dict[str, float]:
    """Probability per label of one token position: the chosen token and its alternatives that begin with the
    text before the label value (`prefix`, e.g. '"') and continue into exactly one label."""
    candidates = {entry.get("token", ""): entry.get("logprob")}
    for alt in entry.get("top_logprobs") or []:
        candidates.setdefault(alt.get("token", ""), alt.get("logprob"))
    mass: dict[str, float] = {}
    for token, logprob in candidates.items():
        if logprob is None or not isinstance(token, str) or not token.startswith(prefix):
            continue
        rest = token[len(prefix):]
        if not rest:
            continue
        for lab in LABELS:
            if lab.startswith(rest) or rest.startswith(lab):
                mass[lab] = mass.get(lab, 0.0) + math.exp(logprob)
                break
    return mass


def label_probs(text: str, tokens: list[dict[str, Any]]) -> dict[int, dict[str, float]]:
    """step -> {label: probability} for every step whose label token could be found (others are left out)."""
    joined = "".join(t.get("token", "") for t in tokens)
    order = _answer_order(joined) or _answer_order(text)
    starts = [m.end() for m in _LABEL_VALUE.finditer(joined)]
    if order is None or len(starts) != len(order):
        return {}
    bounds, pos = [], 0
    for t in tokens:
        bounds.append((pos, pos + len(t.get("token", ""))))
        pos = bounds[-1][1]
    out: dict[int, dict[str, float]] = {}
    j = 0
    for step, start in zip(order, starts, strict=True):
        while j < len(bounds) and bounds[j][1] <= start:
            j += 1
        if j == len(bounds):
            break
        mass = _mass(tokens[j], joined[bounds[j][0]:start])
        total = sum(mass.values())
        if total > 0:
            out[step] = {lab: round(mass[lab] / total, 6) for lab in LABELS if lab in mass}
    return out
