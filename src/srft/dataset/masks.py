"""The one place loss masks are made: trajectory + tokenizer + step weights -> token samples.

A sample is the template's own render of (part of) a trajectory, tokenized once, with
  input_ids    token ids, identical to `tokenizer.apply_chat_template(messages, tools, tokenize=True)`;
  labels       the id where a token belongs to the trained text of a step with weight > 0, else IGNORE_INDEX;
  loss_weights that step's weight on those tokens, 0 elsewhere (only stored when weights are soft);
  step_spans   [{step, start, end, weight}] token range [start, end) of each step's trained text in the sample.
Which text a step trains (content + tool calls + end-of-turn token, never headers or inserted text) is decided
in `srft.dataset.render`; here char offsets become token ranges and truncation happens, only at step boundaries.

Modes: `full` renders the whole trajectory once (one sample, or several with --max-length windows);
`per-step` makes one sample per trained step: the prompt the model saw at inference + that step, exact even for
templates that are not prefix-preserving (Qwen3).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from srft.model import Trajectory
from srft.dataset.render import Renderer, locate_steps

IGNORE_INDEX = -100


class MaskConfig(BaseModel):
    """How trajectories become token samples."""

    model_config = ConfigDict(extra="forbid")

    render: Literal["full", "per-step"] = Field("full", description="one render per trajectory, or one per step")
    max_length: int | None = Field(None, ge=8, description="longest sample in tokens (None = no limit)")
    truncation: Literal["drop", "keep-start", "windows"] = Field(
        "drop", description="over max_length: drop the sample, keep its first steps, or split it into windows")
    chat_template_kwargs: dict[str, Any] = Field(default_factory=dict,
                                                 description="extra template variables, e.g. enable_thinking")

    @model_validator(mode="after")
    def _check(self) -> MaskConfig:
        if self.render == "per-step" and self.truncation == "keep-start":
            raise ValueError("truncation=keep-start keeps the start of a sample, but a per-step sample ends with its "
                             "trained step: use windows (drops the oldest steps) or drop")
        return self


@dataclass
class Sample:
    input_ids: list[int]
    labels: list[int]
    loss_weights: list[float]
    step_spans: list[dict[str, Any]]
    step_labels: list[str | None]
    message_indices: list[int]   # which messages of the trajectory the sample renders, in order
    text: str                    # the rendered text the ids tokenize
    notes: list[dict[str, Any]] = field(default_factory=list)  # per span: status, filler, straddle (not stored)
    trained_tokens: int = 0      # tokens whose label is not IGNORE_INDEX


@dataclass
class Built:
    """Samples of one trajectory, or why it has none; counts are summed by `srft build`."""

    samples: list[Sample] = field(default_factory=list)
    drop_reason: str | None = None
    counts: Counter = field(default_factory=Counter)


@dataclass
class _View:
    indices: list[int]           # message indices rendered
    trained: frozenset[int]      # step numbers trained in this view (others are context)
    exact_last: bool = False     # per-step: the last step must be located from its own P_i


class _Job:
    """Per-trajectory state shared by the helpers below."""

    def __init__(self, traj: Trajectory, r: Renderer, weights: list[float], config: MaskConfig):
        self.traj, self.r, self.weights, self.config = traj, r, weights, config
        self.msgs = r.messages(traj)
        self.tools = traj.tools
        self.step_at = {s.message_index: s for s in traj.steps}
        self.head = list(range(traj.steps[0].message_index)) if traj.steps else []
        self.counts: Counter = Counter()

    def sample(self, view: _View) -> Sample:
        sub = [self.msgs[j] for j in view.indices]
        positions = [j for j in view.indices if self.msgs[j]["role"] == "assistant"]
        exact = frozenset({len(positions) - 1}) if view.exact_last else frozenset()
        text, locs = locate_steps(self.r, sub, self.tools, exact=exact, fallback=self.config.render == "full")
        enc = self.r.encode(text)
        ids = enc.ids
        labels, lw = [IGNORE_INDEX] * len(ids), [0.0] * len(ids)
        spans, step_labels, notes, trained = [], [], [], 0
        for loc in locs:
            step = self.step_at.get(positions[loc.index])
            if step is None:
                continue
            w = self.weights[step.number - 1] if step.number in view.trained else 0.0
            ts, te, straddle = token_range(enc, len(ids), loc.start, loc.end)
            if w > 0:
                labels[ts:te] = ids[ts:te]
                lw[ts:te] = [w] * (te - ts)
                trained += te - ts
            spans.append({"step": step.number, "start": ts, "end": te, "weight": float(w)})
            step_labels.append(step.label)
            notes.append({"status": loc.status, "filler": bool(loc.filler), "straddle": straddle,
                          "char_end": loc.end, "trained_here": step.number in view.trained})
        if not len(ids) == len(labels) == len(lw):
            raise RuntimeError("internal error: labels and input_ids differ in length")
        return Sample(ids, labels, lw, spans, step_labels, list(view.indices), text, notes, trained)


def token_range(enc: Any, n: int, start: int, end: int) -> tuple[int, int, bool]:
    """Tokens [ts, te) whose first char lies in [start, end), and whether a token straddles either boundary
    (it then stays untrained: a token that begins in a role header is never a target)."""

    def first_at_or_after(pos: int) -> tuple[int, bool]:
        if pos >= enc.token_to_chars(n - 1)[1] if n else True:
            return n, False
        t = enc.char_to_token(pos)
        while t is None and pos > 0:  # a char no token covers (dropped by a normalizer): look left
            pos -= 1
            t = enc.char_to_token(pos)
        t = t or 0
        straddle = False
        while t < n and enc.token_to_chars(t)[0] < pos:
            straddle, t = True, t + 1
        return t, straddle

    ts, s1 = first_at_or_after(start)
    te, s2 = first_at_or_after(end)
    return ts, te, s1 or s2


def sample_counts(sample: Sample, weights: list[float]) -> Counter:
    """What one emitted sample holds: tokens, trained tokens, tokens of policy-masked steps, locating facts."""
    c: Counter = Counter(samples=1, tokens=len(sample.input_ids), trained_tokens=sample.trained_tokens)
    for span, note, label in zip(sample.step_spans, sample.notes, sample.step_labels):
        if weights[span["step"] - 1] == 0:
            c["masked_step_tokens"] += span["end"] - span["start"]
        elif span["weight"] > 0:
            c[f"trained_tokens_label_{label or 'unlabelled'}"] += span["end"] - span["start"]
        if note["trained_here"]:
            c[f"steps_{note['status']}"] += 1
            c["steps_filler_skipped"] += note["filler"]
            c["boundary_straddles"] += note["straddle"]
    return c


def default_weights(traj: Trajectory) -> list[float]:
    """`Step.weight` where a policy set it, else 1 (0 for demonstration and synthetic steps)."""
    return [s.weight if s.weight is not None else (0.0 if s.is_demo or s.synthetic else 1.0) for s in traj.steps]


def build_samples(traj: Trajectory, tokenizer_or_renderer: Any, weights: list[float] | None = None,
                  config: MaskConfig | None = None) -> Built:
    """Samples for one trajectory (the viewer calls this for a single trajectory; `srft build` for all).

    `weights`: one per step (default: `default_weights`). Never raises on bad data: a trajectory the template
    cannot render, or whose steps contain an end-of-turn token as text, comes back with `drop_reason` set.
    """
    config = config or MaskConfig()
    r = tokenizer_or_renderer if isinstance(tokenizer_or_renderer, Renderer) else \
        Renderer(tokenizer_or_renderer, config.chat_template_kwargs)
    weights = list(default_weights(traj) if weights is None else weights)
    if len(weights) != len(traj.steps):
        raise ValueError(f"trajectory {traj.id}: {len(weights)} weights for {len(traj.steps)} steps")
    if not traj.steps:
        return Built(drop_reason="no_steps")
    bad = _eot_in_steps(traj, r.profile.eots)
    if bad:
        return Built(drop_reason="end_of_turn_token_in_step_text", counts=Counter({"bad_step": bad}))
    job = _Job(traj, r, weights, config)
    for step in traj.steps:  # what the template silently leaves out of a step (reported by srft build)
        m = traj.messages[step.message_index]
        job.counts["steps_reasoning_not_rendered"] += bool(m.reasoning_content) and not r.profile.reasoning_rendered
        job.counts["steps_tool_calls_not_rendered"] += bool(m.tool_calls) and not r.profile.tool_calls_rendered
    try:
        samples = _per_step(job) if config.render == "per-step" else _full(job)
    except Exception as exc:  # noqa: BLE001 - item boundary: the template refused this trajectory
        return Built(drop_reason=f"template_error: {type(exc).__name__}: {str(exc)[:120]}")
    kept = []
    for s in samples:
        if s.trained_tokens == 0:
            job.counts["samples_dropped_no_trained_tokens"] += 1
        else:
            kept.append(s)
            job.counts.update(sample_counts(s, weights))
    # every step with weight > 0 must be trained somewhere, unless truncation dropped it
    trained = {span["step"] for s in samples for span in s.step_spans if span["weight"] > 0}
    missing = sum(1 for st, w in zip(traj.steps, weights) if w > 0 and st.number not in trained)
    job.counts["unlocated_trained_steps"] += max(0, missing - job.counts["trained_steps_truncated"])
    return Built(samples=kept, counts=job.counts)


def _eot_in_steps(traj: Trajectory, eots: tuple[str, ...]) -> int:
    """Number of the first step whose text contains an end-of-turn string (it would end the turn early), or 0."""
    for step in traj.steps:
        m = traj.messages[step.message_index]
        texts = [m.content, m.reasoning_content or ""] + [tc.function.arguments for tc in m.tool_calls or []]
        if any(eot in t for eot in eots for t in texts):
            return step.number
    return 0


# -- full renders and their truncation -------------------------------------------------------------------------

def _full(job: _Job) -> list[Sample]:
    every = frozenset(s.number for s in job.traj.steps)
    sample = job.sample(_View(list(range(len(job.msgs))), every))
    limit = job.config.max_length
    if limit is None or len(sample.input_ids) <= limit:
        return [sample]
    mode = job.config.truncation
    if mode == "drop":
        _lost(job, sample, [])
        job.counts["samples_dropped_too_long"] += 1
        return []
    if mode == "keep-start":
        fit = [s for s in sample.step_spans if s["end"] <= limit]
        if not fit:
            _lost(job, sample, [])
            job.counts["samples_dropped_context_too_long"] += 1
            return []
        cut = fit[-1]["end"]
        _lost(job, sample, [(0, cut)])
        job.counts["samples_truncated"] += 1
        notes = sample.notes[:len(fit)]
        labels = sample.labels[:cut]
        return [Sample(sample.input_ids[:cut], labels, sample.loss_weights[:cut], fit, sample.step_labels[:len(fit)],
                       sample.message_indices, sample.text[:notes[-1]["char_end"]], notes,
                       sum(lab != IGNORE_INDEX for lab in labels))]
    return _windows(job, sample, every)


def _windows(job: _Job, sample: Sample, every: frozenset[int]) -> list[Sample]:
    """Split at step boundaries into samples that each start with the messages before step 1 (system + task)."""
    limit, spans = job.config.max_length, sample.step_spans
    head_len = spans[0]["start"] if spans else len(sample.input_ids)
    msg_of = {s.number: s.message_index for s in job.traj.steps}
    out, kept = [], [(0, head_len)]
    a = 0
    while a < len(spans):
        b = a
        while b + 1 < len(spans) and head_len + spans[b + 1]["end"] - spans[a]["start"] <= limit:
            b += 1
        window = None
        while b >= a:
            first, last = msg_of[spans[a]["step"]], msg_of[spans[b]["step"]]
            window = job.sample(_View(job.head + list(range(first, last + 1)), every))
            if len(window.input_ids) <= limit:
                break
            window, b = None, b - 1
        if window is None:
            job.counts["steps_dropped_too_long"] += 1
            a += 1
            continue
        out.append(window)
        kept.append((spans[a]["start"], spans[b]["end"]))
        a = b + 1
    _lost(job, sample, kept)
    job.counts["samples_windowed"] += 1
    return out


def _lost(job: _Job, sample: Sample, kept: list[tuple[int, int]]) -> None:
    """Count the tokens (and trained tokens) of an over-long sample that no output sample keeps."""
    keep = [False] * len(sample.input_ids)
    for start, end in kept:
        keep[start:end] = [True] * (end - start)
    job.counts["truncated_tokens"] += keep.count(False)
    job.counts["trained_tokens_lost"] += sum(1 for k, lab in zip(keep, sample.labels)
                                             if not k and lab != IGNORE_INDEX)
    job.counts["trained_steps_truncated"] += sum(1 for sp in sample.step_spans
                                                 if sp["weight"] > 0 and not all(keep[sp["start"]:sp["end"]]))


# -- per-step samples ----------------------------------------------------------------------------------------

def _per_step(job: _Job) -> list[Sample]:
    out = []
    for step in job.traj.steps:
        if job.weights[step.number - 1] <= 0:
            continue
        view = _View(list(range(step.message_index + 1)), frozenset({step.number}), exact_last=True)
        sample = job.sample(view)
        limit = job.config.max_length
        if limit is not None and len(sample.input_ids) > limit:
            if job.config.truncation == "windows":
                sample = _trim_history(job, step.number, sample)
            else:
                _lost(job, sample, [])
                sample = None
            if sample is None:
                job.counts["samples_dropped_too_long"] += 1
                continue
        out.append(sample)
    return out


def _trim_history(job: _Job, number: int, full: Sample) -> Sample | None:
    """The per-step sample of step `number` with its oldest steps removed until it fits (None if it never does)."""
    limit = job.config.max_length
    spans = {s["step"]: s for s in full.step_spans}
    head_len = spans[min(spans)]["start"] if spans else 0
    end = spans[number]["end"] if number in spans else len(full.input_ids)
    msg_of = {s.number: s.message_index for s in job.traj.steps}
    first = next((n for n in range(1, number + 1) if n in spans and head_len + end - spans[n]["start"] <= limit),
                 number)
    for n in range(first, number + 1):
        view = _View(job.head + list(range(msg_of[n], msg_of[number] + 1)), frozenset({number}), exact_last=True)
        sample = job.sample(view)
        if len(sample.input_ids) <= limit:
            job.counts["truncated_tokens"] += len(full.input_ids) - len(sample.input_ids)
            job.counts["samples_truncated"] += 1
            return sample
    job.counts["truncated_tokens"] += len(full.input_ids)
    job.counts["trained_tokens_lost"] += full.trained_tokens
    job.counts["trained_steps_truncated"] += 1
    return None
