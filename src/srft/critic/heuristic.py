"""The rule-based critic: deterministic, needs no LLM, works on any scaffold. The default critic and the
baseline every LLM critic must beat.

Rules (each can be switched off with `rules=[...]`; the reason of every label names the rule that fired):
  malformed  The scaffold rejected the action (its format-error message, a tool call whose arguments are not
             JSON, a tool the scaffold does not offer, no action at all on a non-final step)  -> mistake.
  failed     The command failed at the shell/tool level (command not found, no such file, `ERROR:` from a
             tool, a sed expression error...; a program's own Traceback is information, not a failure).
             If the next step retries the same program/tool with a corrected action: the failed step is a
             mistake and the retry (if it works) a recover. If the next step takes another approach: the
             failed step changed nothing and led nowhere -> unnecessary.
  repeat     The same action as an earlier step, with the same observation, and no step in between that could
             have changed anything (only read-only commands/tools)  -> unnecessary.
  revert     An edit that a later step undoes: an exact inverse replacement (str_replace / sed), an editor
             undo_edit or an undo/revert tool, `git checkout/restore/stash/reset --hard` or restoring a .bak copy
             of the file, or a line-addressed edit (`edit_line(path, line, text)`) whose line is later put
             back to the text it had before (as an earlier read/grep showed it)
             -> mistake for the edit(s), recover for the undo.
  submit     Submitting (a submit/finish tool, mini-swe-agent's COMPLETE_TASK_AND_SUBMIT, SWE-agent `submit`)
             right after a test run that reported failures, with nothing changed since  -> mistake.
Everything else is good. When several rules fire on one step: mistake > recover > unnecessary.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from srft.critic import CriticContext, TrajectoryResult, labelled_steps
from srft.critic.facts import Edit, StepFacts, same_path, step_facts
from srft.labels import StepLabel
from srft.model import Trajectory

Rule = Literal["malformed", "failed", "repeat", "revert", "submit"]
RULES: tuple[Rule, ...] = ("malformed", "failed", "repeat", "revert", "submit")
PRIORITY = {"mistake": 0, "recover": 1, "unnecessary": 2, "good": 3}
SOURCE = "heuristic"


class HeuristicConfig(BaseModel):
    """Options of the rule-based critic."""

    model_config = ConfigDict(extra="forbid")

    rules: list[Rule] = Field(default_factory=lambda: list(RULES), description="rules to apply (default: all)")


class _Verdicts:
    """Candidate (label, reason) per step; the most severe wins, first reason among equals."""

    def __init__(self) -> None:
        self.by_step: dict[int, list[tuple[str, str]]] = {}

    def add(self, step: int, label: str, reason: str) -> None:
        self.by_step.setdefault(step, []).append((label, reason))

    def final(self, step: int) -> tuple[str, str]:
        found = self.by_step.get(step)
        if not found:
            return "good", "no rule fired"
        return min(found, key=lambda lr: PRIORITY[lr[0]])


def _malformed(facts: list[StepFacts], out: _Verdicts) -> None:
    for f in facts:
        if f.rejected:
            out.add(f.number, "mistake", f"malformed: {f.rejected}")


def _failed(facts: list[StepFacts], out: _Verdicts) -> None:
    for i, f in enumerate(facts):
        if not f.failed or f.rejected:
            continue
        nxt = facts[i + 1] if i + 1 < len(facts) else None
        if nxt is not None and nxt.program == f.program and nxt.key != f.key:
            out.add(f.number, "mistake", f"failed: {f.failed!r}; step {nxt.number} retries it corrected")
            if not nxt.failed and not nxt.rejected:
                out.add(nxt.number, "recover", f"failed: corrects the failed action of step {f.number}")
        else:
            where = f"step {nxt.number} takes another approach" if nxt is not None else "nothing follows"
            out.add(f.number, "unnecessary", f"failed: {f.failed!r}; {where}")


def _repeat(facts: list[StepFacts], out: _Verdicts) -> None:
    seen: dict[tuple[str, str], int] = {}  # (action key, observation) -> index of its latest occurrence
    last_change = -1  # index of the latest step that may have changed state
    for j, f in enumerate(facts):
        if f.key and not f.rejected:
            prev = seen.get((f.key, f.observation))
            if prev is not None and last_change <= prev:
                out.add(f.number, "unnecessary", f"repeat: same action and output as step {facts[prev].number}")
            seen[(f.key, f.observation)] = j
        if f.mutates:
            last_change = j


def _undoes(later: Edit, earlier: Edit, before: str | None) -> bool:
    """Does `later` undo `earlier`? `before`: what earlier's line held before it (None when never shown)."""
    if not same_path(later.path, earlier.path):
        return False
    if later.kind == earlier.kind == "replace" and None not in (later.old, later.new, earlier.old, earlier.new):
        return later.old.strip() == earlier.new.strip() and later.new.strip() == earlier.old.strip()
    if later.kind == earlier.kind == "line" and later.loc == earlier.loc and before is not None:
        return later.new is not None and later.new.strip() == before  # the line is put back as it was
    return False


def _known(seen: dict[tuple[str, str], str], path: str, loc: str | None) -> str | None:
    return next((text for (p, line), text in seen.items() if line == loc and same_path(p, path)), None)


def _revert(facts: list[StepFacts], out: _Verdicts) -> None:
    live: list[tuple[int, Edit, str | None]] = []  # (step, edit, its line's text before it) not yet undone
    created: list[str] = []  # files the agent made itself: git restores leave them alone
    seen: dict[tuple[str, str], str] = {}  # (path, line) -> latest text known
    for f in facts:
        if f.failed or f.rejected:
            continue
        undone: list[tuple[int, Edit, str | None]] = []
        for edit in f.edits:
            undone += [x for x in live if _undoes(edit, x[1], x[2])]
        for rev in f.reverts:
            mine = [x for x in live if rev.paths is None or any(same_path(x[1].path, p) for p in rev.paths)]
            if rev.last_only:
                undone += mine[-1:]
            else:
                undone += [x for x in mine if not any(same_path(x[1].path, c) for c in created)]
        undone_steps = sorted({n for n, _, _ in undone if n != f.number})
        for n in undone_steps:
            out.add(n, "mistake", f"revert: undone by step {f.number}")
        if undone_steps:
            out.add(f.number, "recover", f"revert: undoes step{'s' if len(undone_steps) > 1 else ''} "
                                         f"{', '.join(map(str, undone_steps))}")
        live = [x for x in live if x not in undone]
        for edit in f.edits:
            if edit.kind in {"create", "write"} and not any(same_path(edit.path, e.path) for _, e, _ in live):
                created.append(edit.path)
            # an exact inverse restores the original text (nothing left to undo); other edits can be undone
            if not (edit.kind == "replace" and any(_undoes(edit, e, b) for _, e, b in undone)):
                live.append((f.number, edit, _known(seen, edit.path, edit.loc) if edit.kind == "line" else None))
        seen.update(f.lines_seen)
        for edit in f.edits:
            if edit.kind == "line" and edit.new is not None:
                seen[(edit.path, edit.loc)] = edit.new.strip()


def _submit(facts: list[StepFacts], out: _Verdicts) -> None:
    last_test: StepFacts | None = None
    changed_since = False
    for f in facts:
        if f.submits and last_test is not None and last_test.tests is False and not changed_since:
            out.add(f.number, "mistake", f"submit: submits while the tests of step {last_test.number} fail")
        if f.tests is not None:
            last_test, changed_since = f, False
        elif f.mutates and not f.submits:
            changed_since = True


RULE_FUNCS = {"malformed": _malformed, "failed": _failed, "repeat": _repeat, "revert": _revert, "submit": _submit}


def heuristic_labels(traj: Trajectory, rules: list[str] | tuple[str, ...] = RULES) -> list[StepLabel]:
    """One label per non-demo step of `traj`, by the rules above. Pure and deterministic."""
    facts = step_facts(traj)
    verdicts = _Verdicts()
    for rule in RULES:
        if rule in rules:
            RULE_FUNCS[rule](facts, verdicts)
    out = []
    for number in labelled_steps(traj):
        label, reason = verdicts.final(number)
        out.append(StepLabel(trajectory_id=traj.id, step=number, label=label, reason=reason, source=SOURCE))
    return out


class HeuristicCritic:
    """The `Critic` wrapper around `heuristic_labels`."""

    id = SOURCE
    prompt_hash: str | None = None

    def __init__(self, config: HeuristicConfig | None = None):
        self.config = config or HeuristicConfig()

    async def label(self, traj: Trajectory) -> TrajectoryResult:
        return TrajectoryResult(trajectory_id=traj.id, status="ok", labels=heuristic_labels(traj, self.config.rules))

    async def aclose(self) -> None:
        return None


def build(options: dict[str, Any], ctx: CriticContext | None = None) -> HeuristicCritic:
    return HeuristicCritic(HeuristicConfig(**options))
