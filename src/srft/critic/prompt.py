"""The critic prompt: one call per trajectory (or per window of consecutive steps when it does not fit).

A prompt is the versioned Jinja template `prompts/v1.jinja` (or the user's `--prompt FILE`) rendered with:
  task      the task statement, clipped head + tail to `task_tokens`
  outcome   "resolved ..." / "unresolved ..." / None when the outcome is hidden or unknown
  steps     list of {number, thought, action, observation, note}: thought and action in full, the observation
            clipped head + tail to `observation_tokens` with a marked cut
  digest    one short line per earlier step (windows after the first), so each window knows what came before
  first, last, total, numbers   the window's step numbers and the trajectory's step count
  evidence  list of {name, text}: the hindsight sections this trajectory has (tests, diff, reference; see
            srft.critic.evidence), each clipped to its budget; the template's rubric says how to use each
It is sent as a single user message. `prompt_hash` (recorded with every label) covers the template text, the
rendering options and the evidence (sections, budgets, the reference file's sha256), since all change what the
critic sees.

Windows: steps are packed greedily into windows whose prompt plus answer budget fits `context_tokens`; each step
is in exactly one window. A step too large to fit alone has its thought/action clipped too (counted).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from srft.critic import labelled_steps
from srft.critic.evidence import EVIDENCE, Reference, Section, load_reference, sections
from srft.model import LABELS, Step, Trajectory

BUILTIN_TEMPLATE = "v2.jinja"
Evidence = Literal["tests", "diff", "reference"]
CUT_MARK = "\n[... {n} tokens cut ...]\n"
STEP_OVERHEAD_TOKENS = 24  # "### Step n", the Thought/Action/Observation headers, blank lines


class PromptConfig(BaseModel):
    """How trajectories are shown to an LLM critic."""

    model_config = ConfigDict(extra="forbid")

    template: str | None = Field(None, description="path to a Jinja prompt template; None = built-in v1")
    show_outcome: bool = Field(True, description="tell the critic whether the trajectory was resolved")
    context_tokens: int = Field(32768, ge=512, description="the critic's context window (prompt + answer)")
    observation_tokens: int = Field(512, ge=16, description="per-step observation budget (head + tail kept)")
    task_tokens: int = Field(2048, ge=32, description="budget for the task statement (head + tail kept)")
    digest_tokens: int = Field(1024, ge=0, description="budget for the digest of earlier steps in a window")
    max_window_steps: int | None = Field(None, ge=1, description="cap on steps per window (small models)")
    answer_tokens_per_step: int = Field(64, ge=8, description="answer budget per step (label + reason)")
    answer_overhead_tokens: int = Field(32, ge=0, description="answer budget for the JSON wrapper")
    reason_max_chars: int = Field(0, ge=0, description="schema maxLength of a reason (0 = none; e.g. 120 keeps "
                                  "small local models from rambling)")
    schema_style: Literal["positional", "enum"] = Field("positional", description="answer JSON schema form "
                                                        "(see srft.critic.parse.answer_schema)")
    tokenizer: str | None = Field(None, description="tokenizer.json (or its folder) for budgets; None = estimate")
    chars_per_token: float = Field(3.2, gt=0, description="estimate used without a tokenizer (3.2 errs high)")
    evidence: list[Evidence] | None = Field(None, description="hindsight sections; None = tests and diff where a "
                                            "trajectory has them, plus reference when `reference` is set")
    reference: str | None = Field(None, description="reference fixes: JSONL/Parquet rows with instance_id, patch "
                                  "(and optionally FAIL_TO_PASS/PASS_TO_PASS)")
    reference_unknown: Literal["error", "ignore"] = Field(
        "error", description="reference rows naming instances the store lacks: error, or ignore (a whole split)")
    tests_tokens: int = Field(384, ge=32, description="budget of the per-test results section")
    diff_tokens: int = Field(1024, ge=32, description="budget of the final patch section (head + tail kept)")
    reference_tokens: int = Field(1024, ge=32, description="budget of the reference fix section")

    @model_validator(mode="after")
    def _reference(self) -> PromptConfig:
        if self.evidence is not None and "reference" in self.evidence and self.reference is None:
            raise ValueError("evidence 'reference' needs a reference file (--reference FILE)")
        if self.evidence is not None and "reference" not in self.evidence and self.reference is not None:
            raise ValueError(f"a reference file is given but evidence {','.join(self.evidence) or '(none)'} leaves "
                             "it out: add reference to the evidence")
        return self

    def sections(self) -> tuple[str, ...]:
        """The evidence sections asked for, in prompt order."""
        if self.evidence is None:
            return ("tests", "diff") + (("reference",) if self.reference else ())
        return tuple(e for e in EVIDENCE if e in self.evidence)

    def budgets(self) -> dict[str, int]:
        return {"tests": self.tests_tokens, "diff": self.diff_tokens, "reference": self.reference_tokens}


class TokenCounter:
    """Counts and clips text by tokens: exact with a `tokenizers` tokenizer.json, else chars / chars_per_token."""

    def __init__(self, tokenizer: str | None = None, chars_per_token: float = 3.2):
        self.chars_per_token = chars_per_token
        self._tok = None
        if tokenizer:
            from tokenizers import Tokenizer

            path = Path(tokenizer)
            file = path / "tokenizer.json" if path.is_dir() else path
            try:  # tokenizers raises a bare Exception for a missing or unreadable file
                self._tok = Tokenizer.from_file(str(file))
            except Exception as exc:
                raise ValueError(f"--tokenizer {tokenizer}: cannot load {file} ({exc}); give a tokenizer.json or "
                                 "the folder holding it") from None

    def count(self, text: str) -> int:
        if not text:
            return 0
        if self._tok is not None:
            return len(self._tok.encode(text, add_special_tokens=False).ids)
        return math.ceil(len(text) / self.chars_per_token)

    def clip(self, text: str, budget: int) -> tuple[str, int]:
        """Keep the head and tail of `text` within `budget` tokens; returns (text, tokens cut)."""
        keep = max(budget - self.count(CUT_MARK.format(n=10 ** 6)), 2)  # room for the cut marker
        head, tail = keep // 2, keep - keep // 2
        if self._tok is None:
            total = self.count(text)
            if total <= budget:
                return text, 0
            end_head, start_tail = int(head * self.chars_per_token), len(text) - int(tail * self.chars_per_token)
            return text[:end_head] + CUT_MARK.format(n=total - keep) + text[start_tail:], total - keep
        window = 32 * budget  # chars: far more than `budget` tokens can span
        if len(text) <= 3 * window:
            offsets = self._tok.encode(text, add_special_tokens=False).offsets
            if len(offsets) <= budget:
                return text, 0
            end_head, start_tail, cut = offsets[head - 1][1], offsets[len(offsets) - tail][0], len(offsets) - keep
        else:  # a huge output (a 1 MB log): tokenize only its two ends, estimate the middle at the ends' density
            first = self._tok.encode(text[:window], add_special_tokens=False).offsets
            last = self._tok.encode(text[-window:], add_special_tokens=False).offsets
            end_head = first[head - 1][1]
            start_tail = len(text) - window + last[len(last) - tail][0]
            density = (len(first) + len(last)) / (2 * window)
            cut = round((start_tail - end_head) * density)
        return text[:end_head] + CUT_MARK.format(n=cut) + text[start_tail:], cut


@dataclass
class Window:
    """One prompt: the steps `numbers` (consecutive, in order) of a trajectory with `total` labelled steps."""

    index: int
    numbers: list[int]
    messages: list[dict[str, Any]]
    prompt_tokens: int  # our estimate (the server's count is what gets reported)
    max_tokens: int  # answer budget
    clipped_steps: int = 0  # steps whose thought/action had to be clipped to fit
    evidence: list[Section] = field(default_factory=list)  # the hindsight sections in this prompt


@dataclass
class Plan:
    """What every window of one trajectory shares: the clipped task, the evidence, one view per labelled step
    and each step's token cost in the prompt."""

    task: str
    evidence: list[Section]
    views: list[dict[str, Any]]
    costs: list[int]


def load_template(path: str | None) -> tuple[str, str]:
    """(template text, name): the user's file, or the packaged built-in."""
    if path is None:
        text = resources.files("srft.critic").joinpath("prompts", BUILTIN_TEMPLATE).read_text(encoding="utf-8")
        return text, f"builtin:{BUILTIN_TEMPLATE}"
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"prompt template {path} not found")
    return p.read_text(encoding="utf-8"), str(p)


def outcome_text(traj: Trajectory) -> str | None:
    out = traj.outcome
    if out.resolved is None:
        return None
    if out.resolved:
        return "resolved: the final patch passed the evaluation tests"
    why = {"error": " (the evaluation errored)", "empty_patch": " (the agent submitted an empty patch)"}
    return "unresolved: the final patch did not pass the evaluation tests" + why.get(out.status, "")


class PromptBuilder:
    """Renders windows of a trajectory with one template and one set of options."""

    def __init__(self, config: PromptConfig | None = None):
        import jinja2

        self.config = config or PromptConfig()
        self.template_text, self.template_name = load_template(self.config.template)
        env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
        try:
            self._template = env.from_string(self.template_text)
        except jinja2.TemplateSyntaxError as exc:
            raise ValueError(f"prompt template {self.template_name}:{exc.lineno}: {exc.message}") from exc
        self.counter = TokenCounter(self.config.tokenizer, self.config.chars_per_token)
        self.reference: Reference | None = load_reference(self.config.reference) if self.config.reference else None
        self.sections = self.config.sections()
        options = self.config.model_dump(exclude={"template", "tokenizer", "chars_per_token", "reference",
                                                  "reference_unknown"})
        options.update(evidence=list(self.sections), reference=self.reference.sha256 if self.reference else None)
        digest = hashlib.sha256((self.template_text + "\n" + json.dumps(options, sort_keys=True)).encode())
        self.prompt_hash = digest.hexdigest()[:16]

    # -- pieces --------------------------------------------------------------------------------------
    def _observation(self, traj: Trajectory, step: Step) -> str:
        parts = []
        for msg in traj.observations(step):
            text = msg.content
            if msg.role == "tool" and msg.name:
                text = f"[{msg.name}] {text}"
            parts.append(text)
        return self.counter.clip("\n".join(parts), self.config.observation_tokens)[0]

    def _step_view(self, traj: Trajectory, step: Step) -> dict[str, Any]:
        note = "added by the scaffold, not the agent" if step.synthetic else ""
        return {"number": step.number, "thought": step.thought.strip(), "action": step.action.strip(),
                "observation": self._observation(traj, step).strip(), "note": note}

    def _digest(self, views: list[dict[str, Any]]) -> list[str]:
        """One line per earlier step, newest kept when over budget."""
        lines = []
        for v in views:
            action = (v["action"] or v["thought"]).strip().splitlines() or [""]
            obs = v["observation"].strip().splitlines() or [""]
            lines.append(f"step {v['number']}: {action[0][:120]} -> {obs[0][:80]}")
        budget, kept, used = self.config.digest_tokens, [], 0
        for line in reversed(lines):
            cost = self.counter.count(line) + 1
            if used + cost > budget:
                kept.append(f"({len(lines) - len(kept)} earlier steps not shown)")
                break
            kept.append(line)
            used += cost
        return list(reversed(kept))

    def _render(self, traj: Trajectory, plan: Plan, views: list[dict[str, Any]], digest: list[str]) -> str:
        numbers = [v["number"] for v in views]
        return self._template.render(
            task=plan.task, outcome=outcome_text(traj) if self.config.show_outcome else None, steps=views,
            digest=digest, first=numbers[0] if numbers else 0, last=numbers[-1] if numbers else 0,
            numbers=numbers, total=len(plan.views), labels=LABELS,
            evidence=[{"name": e.name, "text": e.text} for e in plan.evidence])

    def answer_budget(self, n_steps: int) -> int:
        return self.config.answer_overhead_tokens + self.config.answer_tokens_per_step * n_steps

    # -- windows -------------------------------------------------------------------------------------
    def plan(self, traj: Trajectory) -> Plan:
        """The clipped task, the evidence, one view per labelled step and each step's token cost."""
        count = self.counter.count
        task = self.counter.clip(traj.task().strip(), self.config.task_tokens)[0]
        evidence = sections(traj, self.sections, self.config.budgets(), self.counter, self.reference)
        numbers = set(labelled_steps(traj))
        views = [self._step_view(traj, s) for s in traj.steps if s.number in numbers]
        costs = [STEP_OVERHEAD_TOKENS + count(v["thought"]) + count(v["action"]) + count(v["observation"])
                 for v in views]
        return Plan(task, evidence, views, costs)

    def windows(self, traj: Trajectory, plan: Plan | None = None) -> list[Window]:
        """Split the labelled steps of `traj` into windows that fit the context; each step in exactly one."""
        cfg, count = self.config, self.counter.count
        plan = plan or self.plan(traj)
        views, costs = plan.views, plan.costs
        groups: list[list[int]] = []  # indices into views
        i = 0
        while i < len(views):
            digest = self._digest(views[:i]) if i else []
            fixed = count(self._render(traj, plan, [], digest))
            room = cfg.context_tokens - fixed
            group, used = [i], costs[i] + cfg.answer_tokens_per_step + cfg.answer_overhead_tokens
            while (i + len(group) < len(views) and used + costs[i + len(group)] + cfg.answer_tokens_per_step <= room
                   and (cfg.max_window_steps is None or len(group) < cfg.max_window_steps)):
                used += costs[i + len(group)] + cfg.answer_tokens_per_step
                group.append(i + len(group))
            groups.append(group)
            i += len(group)
        return [self._window(traj, plan, g, k) for k, g in enumerate(groups)]

    def _window(self, traj: Trajectory, plan: Plan, group: list[int], index: int) -> Window:
        cfg, views = self.config, plan.views
        digest = self._digest(views[:group[0]]) if group[0] else []
        chosen = [dict(views[j]) for j in group]
        text = self._render(traj, plan, chosen, digest)
        clipped, tokens = 0, self.counter.count(text)
        over = tokens + self.answer_budget(len(chosen)) - cfg.context_tokens
        if over > 0 and len(chosen) == 1:  # one step larger than the whole context: clip its thought/action
            view = chosen[0]
            for key in ("thought", "action"):
                size = self.counter.count(view[key])
                view[key] = self.counter.clip(view[key], max(size - over, 64))[0]
                over -= size - self.counter.count(view[key])
            clipped = 1
            text = self._render(traj, plan, chosen, digest)
            tokens = self.counter.count(text)
        return Window(index=index, numbers=[v["number"] for v in chosen],
                      messages=[{"role": "user", "content": text}], prompt_tokens=tokens,
                      max_tokens=self.answer_budget(len(chosen)), clipped_steps=clipped, evidence=plan.evidence)

    def reask(self, window: Window, answer: str, error: str) -> list[dict[str, Any]]:
        """The one repair turn: the original prompt, the bad answer, and the error quoted back."""
        first, last = window.numbers[0], window.numbers[-1]
        text = (f"Your answer could not be used: {error}\n"
                f"Reply again with only the JSON object {{\"steps\": [...]}} holding exactly one entry for each "
                f"step {first} to {last} ({len(window.numbers)} entries), each with \"step\", \"label\" (one of "
                f"{', '.join(LABELS)}) and \"reason\".")
        return [*window.messages, {"role": "assistant", "content": answer}, {"role": "user", "content": text}]
