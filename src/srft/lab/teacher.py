"""A scripted, noisy teacher that knows the true label of every step it takes.

The teacher follows the sound plan (search each failing name, edit its line, run the tests, submit when they
pass) but, at configurable rates, it trusts the report's hint and chases the blamed file (and on a misleading
hint acts on it by editing a line there), edits the neighbouring line, writes a wrong value, wastes steps
(listing files, re-reading, re-running unchanged tests) and skips the final test run. When a test run shows a
failure its own mistake caused it notices with probability `notice` and recovers (undo, or rewrite the value);
otherwise it submits with failing tests. Every step's label comes from what the step did, not from a guess:

- `good`: search for a failing name, read the file that holds a bug, a correct edit, a test run after a change,
  submit when every test passes;
- `unnecessary`: ls, re-reading, repeating a search, re-running unchanged tests;
- `mistake`: reading or editing the wrongly blamed file, an edit that breaks a passing line or writes a wrong
  value, a submit while tests fail;
- `recover`: undoing or rewriting one of its own earlier mistakes.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from srft.lab.env import SYSTEM_PROMPT, LabEnv
from srft.lab.tasks import Task
from srft.model import FunctionCall, Label, Message, ToolCall

TEACHER_MODEL = "lab-teacher"


class TeacherConfig(BaseModel):
    """Noise rates of the scripted teacher (probabilities per opportunity)."""

    model_config = ConfigDict(extra="forbid")

    follow_hint: float = Field(0.7, ge=0, le=1, description="reads the file the report blames before searching")
    act_on_hint: float = Field(0.5, ge=0, le=1, description="edits a line of a wrongly blamed file it read")
    wrong_line: float = Field(0.15, ge=0, le=1, description="an edit lands on the neighbouring line")
    wrong_value: float = Field(0.1, ge=0, le=1, description="an edit writes a wrong value")
    notice: float = Field(0.4, ge=0, le=1, description="notices a failure its own mistake caused, and recovers")
    waste: float = Field(0.15, ge=0, le=1, description="takes an unnecessary step before a planned one")
    skip_test: float = Field(0.15, ge=0, le=1, description="submits right after the last edit, without testing")
    max_steps: int = Field(16, ge=4, description="step limit of an episode (the student gets the same)")


@dataclass
class TeacherStep:
    name: str
    arguments: dict[str, Any]
    observation: str
    label: Label
    reason: str


@dataclass
class TeacherEpisode:
    """One teacher run: the conversation, the true label per step, and the outcome."""

    task: Task
    steps: list[TeacherStep]
    resolved: bool
    exit_status: str
    submission: str
    messages: list[Message] = field(default_factory=list)


@dataclass
class _Mistake:
    kind: str  # wrong_line | wrong_value | hint_edit
    path: str
    name: str  # the name whose test it breaks or leaves failing
    line: int = 0  # the line it edited
    target: str = ""  # wrong_line: the failing name whose line was missed
    depth: int = 0  # its position in the file's edit history (undo reverts only the most recent edit)


class _Teaching:
    """Mutable state of one teacher episode; the plan is in `teach`."""

    def __init__(self, task: Task, cfg: TeacherConfig, rng: random.Random):
        self.task, self.cfg, self.rng = task, cfg, rng
        self.env = LabEnv(task, max_steps=cfg.max_steps)
        self.steps: list[TeacherStep] = []
        self.known: dict[str, tuple[str, int]] = {}  # name -> location seen in an observation
        self.read: list[str] = []
        self.searched: list[str] = []
        self.pending: list[_Mistake] = []  # mistakes not yet noticed
        self.ignored: list[_Mistake] = []  # mistakes it failed to notice (it never looks again)
        self.changed_since_test = True

    def act(self, name: str, label: Label, reason: str, **arguments: Any) -> str:
        result = self.env.step(name, arguments)
        self.steps.append(TeacherStep(name, arguments, result.observation, label, reason))
        if name in ("edit", "undo"):
            self.changed_since_test = True
        elif name == "test":
            self.changed_since_test = False
        return result.observation

    @property
    def over(self) -> bool:
        return self.env.done

    def maybe_waste(self) -> None:
        if self.over or self.rng.random() >= self.cfg.waste:
            return
        options = ["ls"] + (["reread"] if self.read else []) + (["research"] if self.searched else []) \
            + ([] if self.changed_since_test else ["retest"])
        choice = self.rng.choice(options)
        if choice == "ls":
            self.act("ls", "unnecessary", "lists files; the report already names the failing tests")
        elif choice == "reread":
            self.act("read", "unnecessary", "re-reads a file it has already seen", path=self.rng.choice(self.read))
        elif choice == "research":
            self.act("search", "unnecessary", "repeats a search it has already run",
                     var=self.rng.choice(self.searched))
        else:
            self.act("test", "unnecessary", "re-runs the tests with nothing changed")


def teach(task: Task, cfg: TeacherConfig, seed: int = 0) -> TeacherEpisode:
    """Run the noisy teacher on `task`; deterministic for (task, cfg, seed)."""
    rng = random.Random(f"lab-teacher:{task.instance_id}:{seed}")
    run = _Teaching(task, cfg, rng)
    run.maybe_waste()
    if task.hint and not run.over and rng.random() < cfg.follow_hint:
        _chase_hint(run)
    # Bottom-up: the last failure listed first, so the test it fixes next is always the last one reported.
    order = list(reversed(task.bugs))
    for i, name in enumerate(order):
        if run.over:
            break
        last = i == len(order) - 1
        _fix(run, name)
        if run.over:
            break
        if last and rng.random() < cfg.skip_test:
            break
        _test_and_recover(run)
    if not run.over:
        _submit(run)
    exit_status = "Submitted" if run.env.submitted else "LimitsExceeded"
    episode = TeacherEpisode(task, run.steps, run.env.resolved, exit_status, _patch(task, run.env))
    episode.messages = episode_messages(task, run.steps)
    return episode


def _chase_hint(run: _Teaching) -> None:
    task, path = run.task, run.task.hint
    assert path is not None
    if task.hint_misleading:
        run.act("read", "mistake", f"chases {path}, which the report blames but holds no failing name", path=path)
    else:
        run.act("read", "good", f"reads {path}, the file the report blames, which holds the bug", path=path)
    run.read.append(path)
    if task.hint_misleading and not run.over and run.rng.random() < run.cfg.act_on_hint:
        line_no = run.rng.randint(1, len(task.files[path]))
        victim = task.files[path][line_no - 1].split(" = ")[0]
        value = task.expected[task.bugs[-1]]
        if value == task.expected[victim]:  # by chance the value it writes is already there: harmless
            run.act("edit", "unnecessary", f"rewrites {victim} in {path} with the value it already has",
                    path=path, line=line_no, value=value)
            return
        run.act("edit", "mistake", f"acts on the false hint: sets {victim} in {path} to test_{task.bugs[-1]}'s "
                f"expected value", path=path, line=line_no, value=value)
        run.pending.append(_Mistake("hint_edit", path, victim, line_no, depth=len(run.env.history[path])))


def _fix(run: _Teaching, name: str) -> None:
    task, cfg, rng = run.task, run.cfg, run.rng
    run.maybe_waste()
    if name not in run.known and not run.over:
        run.act("search", "good", f"searches for {name}, a failing test's variable", var=name)
        run.searched.append(name)
        run.known[name] = task.location(name)
    run.maybe_waste()
    if run.over:
        return
    path, line = run.known[name]
    want, r = task.expected[name], rng.random()
    # A slip onto a neighbouring line that holds another bug would half-fix it by accident; only clean lines.
    neighbours = [n for n in (line - 1, line + 1) if 1 <= n <= len(task.files[path])
                  and task.files[path][n - 1].split(" = ")[0] not in task.bugs]
    if r < cfg.wrong_line and neighbours:
        other = rng.choice(neighbours)
        victim = task.files[path][other - 1].split(" = ")[0]
        run.act("edit", "mistake", f"edits line {other} instead of line {line}: overwrites {victim}",
                path=path, line=other, value=want)
        run.pending.append(_Mistake("wrong_line", path, victim, other, target=name,
                                    depth=len(run.env.history[path])))
    elif r < cfg.wrong_line + cfg.wrong_value:
        wrong = rng.choice([v for v in (want - 1, want + 1, want + 10, want - 10, task.buggy_value(name) + 1)
                            if v != want])
        run.act("edit", "mistake", f"writes {name} = {wrong}, but the test expects {want}",
                path=path, line=line, value=wrong)
        run.pending.append(_Mistake("wrong_value", path, name, line))
    else:
        run.act("edit", "good", f"fixes {name} on {path}:{line}", path=path, line=line, value=want)


def _test_and_recover(run: _Teaching) -> None:
    """Run the tests; for each failure caused by its own mistake, notice it (and recover) or never look again."""
    run.maybe_waste()
    if run.over:
        return
    run.act("test", "good", "runs the tests after a change")
    failing = {n for n, _ in run.env.failures()}
    for mistake in list(run.pending):
        if mistake.name not in failing or run.over:
            continue
        run.pending.remove(mistake)
        if run.rng.random() >= run.cfg.notice:
            run.ignored.append(mistake)
            continue
        _recover(run, mistake)
        if not run.over:
            run.act("test", "good", "re-runs the tests after recovering")


def _recover(run: _Teaching, mistake: _Mistake) -> None:
    task = run.task
    if mistake.kind in ("wrong_line", "hint_edit"):
        if len(run.env.history[mistake.path]) == mistake.depth:  # still the file's latest edit: undo it
            run.act("undo", "recover", f"test_{mistake.name} broke after its edit of {mistake.path}; undoes it",
                    path=mistake.path)
        else:  # a later edit of the same file would be undone instead: restore the line by hand
            original = task.files[mistake.path][mistake.line - 1]
            run.act("edit", "recover", f"test_{mistake.name} broke after its edit of {mistake.path}:"
                    f"{mistake.line}; restores the line", path=mistake.path, line=mistake.line,
                    value=int(original.split(" = ")[1]))
        if mistake.kind == "wrong_line" and not run.over:
            path, line = task.location(mistake.target)
            want = task.expected[mistake.target]
            run.act("edit", "good", f"fixes {mistake.target} on the right line {path}:{line}",
                    path=path, line=line, value=want)
    else:
        path, line = task.location(mistake.name)
        want = task.expected[mistake.name]
        run.act("edit", "recover", f"test_{mistake.name} still fails; rewrites the value it got wrong",
                path=path, line=line, value=want)


def _submit(run: _Teaching) -> None:
    if run.env.failures():
        run.act("submit", "mistake", "submits while tests fail")
    else:
        run.act("submit", "good", "submits with every test passing")


def _patch(task: Task, env: LabEnv) -> str:
    """The final change as a minimal unified diff (the `submission` a scaffold records)."""
    out = []
    for path, lines in env.files.items():
        for i, (old, new) in enumerate(zip(task.files[path], lines), 1):
            if old != new:
                out += [f"--- a/{path}", f"+++ b/{path}", f"@@ -{i} +{i} @@", f"-{old}", f"+{new}"]
    return "\n".join(out) + ("\n" if out else "")


def episode_messages(task: Task, steps: list[TeacherStep]) -> list[Message]:
    """The conversation in OpenAI shape: system, the report, then (assistant tool call, tool result)*."""
    messages = [Message(role="system", content=SYSTEM_PROMPT), Message(role="user", content=task.statement)]
    for n, step in enumerate(steps, 1):
        call_id = f"call_{n}"
        messages.append(Message(role="assistant", content="", tool_calls=[ToolCall(
            id=call_id, function=FunctionCall(name=step.name, arguments=json.dumps(step.arguments)))]))
        messages.append(Message(role="tool", content=step.observation, tool_call_id=call_id, name=step.name))
    return messages


def teacher_stats(episodes: list[TeacherEpisode]) -> dict[str, Any]:
    """Resolve rate (overall, by difficulty), label counts, the mistake share of failed trajectories' steps."""
    by_diff: dict[str, list[bool]] = {}
    labels, failed_labels = Counter(), Counter()
    for ep in episodes:
        by_diff.setdefault(ep.task.difficulty, []).append(ep.resolved)
        for step in ep.steps:
            labels[step.label] += 1
            if not ep.resolved:
                failed_labels[step.label] += 1
    n_failed = sum(failed_labels.values())
    return {"trajectories": len(episodes), "resolved": sum(ep.resolved for ep in episodes),
            "resolve_rate": sum(ep.resolved for ep in episodes) / len(episodes),
            "resolve_rate_by_difficulty": {d: sum(v) / len(v) for d, v in sorted(by_diff.items())},
            "steps": sum(labels.values()), "labels": dict(sorted(labels.items())),
            "labels_in_unresolved": dict(sorted(failed_labels.items())),
            "mistake_share_of_unresolved_steps": failed_labels["mistake"] / n_failed if n_failed else None,
            "exit_status": dict(sorted(Counter(ep.exit_status for ep in episodes).items()))}
