"""The token-mask view: what `srft build` would train for one trajectory, under a policy and a label source.

It calls the same code as `srft build` (`srft.policy.decide` -> `srft.dataset.masks.build_samples`, full render) and
returns runs of consecutive tokens in the same state, for app.js to draw with textContent:
  {"text", "tokens", "trained": bool, "step": int | None, "label": str | None, "weight": float | None}
Run texts concatenate to the exact rendered text (each token covers the text up to the next token's start).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

from srft.labels import StepLabel, apply_labels
from srft.model import Trajectory
from srft.view.db import HumanLabel
from srft.view.store import Annotations

HUMAN = "human"


class MaskViewError(ValueError):
    """A request the mask view cannot answer (unknown policy or label source); the message says why."""


class MaskView:
    def __init__(self, tokenizer: str | os.PathLike, policy: str, mask_labels: Sequence[str]):
        from srft.policy import POLICIES
        from srft.dataset.render import Renderer, load_tokenizer

        self.tokenizer_path = str(tokenizer)
        self.tokenizer = load_tokenizer(self.tokenizer_path)  # at startup: a bad path fails before serving
        self.renderer = Renderer(self.tokenizer)  # probes the chat template once
        # only registered policies (plus the one given on the command line): a page must not be able to make
        # the server import an arbitrary dotted path
        self.allowed = sorted(set(POLICIES) | {policy})
        self.mask_labels = list(mask_labels)
        self._lock = threading.Lock()  # one tokenizer, shared by the server's worker threads

    def policies(self) -> list[str]:
        return self.allowed

    def _labels(self, traj: Trajectory, source: str, human: Sequence[HumanLabel], ann: Annotations) -> list:
        if source == HUMAN:
            return [StepLabel(trajectory_id=h.trajectory_id, step=h.step, label=h.label, source="human")
                    for h in human]
        if source not in ann.sources:
            raise MaskViewError(f"unknown label source {source!r}; known: {', '.join([HUMAN, *ann.sources])}")
        return [lab for (tid, _), lab in ann.sources[source].items() if tid == traj.id]

    def render(self, traj: Trajectory, policy: str, source: str, human: Sequence[HumanLabel],
               ann: Annotations) -> dict[str, Any]:
        from srft.dataset.masks import IGNORE_INDEX, build_samples
        from srft.policy import PolicyConfig, decide

        if policy not in self.allowed:
            raise MaskViewError(f"unknown policy {policy!r}; known: {', '.join(self.allowed)}")
        labelled = apply_labels([traj.model_copy(update={"steps": [s.model_copy(update={"label": None})
                                                                   for s in traj.steps]})],
                                self._labels(traj, source, human, ann))[0]
        decision = decide(labelled, PolicyConfig(name=policy, mask_labels=self.mask_labels))
        out: dict[str, Any] = {"policy": policy, "source": source, "tokens": 0, "trained": 0, "segments": [],
                               "weights": decision.weights, "warnings": self.renderer.profile.warnings()}
        if decision.drop_reason is not None:
            return {**out, "note": f"the policy leaves this trajectory out ({decision.drop_reason})"}
        with self._lock:
            built = build_samples(labelled, self.renderer, decision.weights)
            if built.drop_reason is not None or not built.samples:
                why = built.drop_reason or "no trained tokens"
                return {**out, "note": f"srft build would drop this trajectory ({why})"}
            sample = built.samples[0]
            _, offsets = _encode(self.tokenizer, sample.text)
        masked = sum(w == 0 for w in decision.weights)
        note = (f"{masked} of {len(decision.weights)} steps masked; template of {self.tokenizer_path}"
                + (f"; {len(built.samples)} samples" if len(built.samples) > 1 else ""))
        step_of = {}
        for span in sample.step_spans:
            for i in range(span["start"], span["end"]):
                step_of[i] = span
        labels = {s.number: s.label for s in labelled.steps}
        segments = _runs(sample.text, offsets, sample.labels, step_of, labels, IGNORE_INDEX)
        return {**out, "tokens": len(sample.input_ids), "trained": sample.trained_tokens, "segments": segments,
                "steps": sample.step_spans, "note": note}


def _encode(tokenizer: Any, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    enc = tokenizer.backend_tokenizer.encode(text, add_special_tokens=False)
    return enc.ids, enc.offsets


def _runs(text: str, offsets: list[tuple[int, int]], labels: list[int], step_of: dict[int, dict],
          step_labels: dict[int, str | None], ignore: int) -> list[dict[str, Any]]:
    """Consecutive tokens with the same (trained, step) as one run of text."""
    if len(offsets) != len(labels):
        raise RuntimeError(f"internal error: {len(offsets)} offsets for {len(labels)} labels")
    starts = [o[0] for o in offsets] + [len(text)]
    runs: list[dict[str, Any]] = []
    for i, label in enumerate(labels):
        span = step_of.get(i)
        key = (label != ignore, span["step"] if span else None)
        piece = text[starts[i] if i else 0: starts[i + 1]]
        if runs and (runs[-1]["trained"], runs[-1]["step"]) == key:
            runs[-1]["text"] += piece
            runs[-1]["tokens"] += 1
            continue
        runs.append({"text": piece, "tokens": 1, "trained": key[0], "step": key[1],
                     "label": step_labels.get(key[1]) if span else None,
                     "weight": span["weight"] if span else None})
    return runs
