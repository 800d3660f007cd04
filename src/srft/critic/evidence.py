"""Hindsight evidence for the critic: what is known about how a trajectory ended, shown beside its steps.

Sections, each optional and clipped to its own token budget (repeated in every window of the trajectory):
  tests      the harness's per-test results on the final patch (`Outcome.tests`, from SWE-bench report.json
             `tests_status`): target tests (FAIL_TO_PASS) that pass or still fail, existing tests (PASS_TO_PASS)
             the patch broke, counts of the rest
  diff       the final patch the agent submitted (`Metadata.submission`)
  reference  a reference fix from the user's file: JSONL or Parquet rows with `instance_id` and `patch`, and
             optionally `FAIL_TO_PASS` / `PASS_TO_PASS` test lists (lists, or JSON-encoded lists as the
             SWE-bench, SWE-smith and SWE-Gym data sets store them)
A section is shown only when the trajectory has it; the template's rubric says how to use each one.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from srft.model import Trajectory

if TYPE_CHECKING:
    from srft.critic import TrajectoryResult
    from srft.critic.prompt import PromptBuilder, TokenCounter

EVIDENCE = ("tests", "diff", "reference")
SHOWN_GROUPS = (("FAIL_TO_PASS", True), ("PASS_TO_PASS", False))  # (group, list its passing tests too)
MAX_LISTED = 5  # reference rows named in an error


class ReferenceError(ValueError):
    """A reference file that cannot be used; the message names the file, the rows and the fix."""


@dataclass(frozen=True)
class ReferenceFix:
    patch: str
    fail_to_pass: list[str] | None = None
    pass_to_pass: list[str] | None = None


@dataclass(frozen=True)
class Reference:
    """Reference fixes by instance id, read from `path` (whose sha256 goes into the prompt hash)."""

    path: str
    sha256: str
    fixes: dict[str, ReferenceFix]


@dataclass(frozen=True)
class Section:
    name: str  # one of EVIDENCE
    text: str
    tokens: int  # in the prompt, after clipping
    cut: int  # tokens (or test names, for `tests`) left out to fit the budget


def _rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return list(enumerate(pq.read_table(path).to_pylist(), 1))
    from srft.io import iter_jsonl

    return list(iter_jsonl(path))


def _test_list(value: Any, where: str, problems: list[str]) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):  # SWE-bench stores the lists JSON-encoded
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            problems.append(f"{where}: not a JSON list of test names")
            return None
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        problems.append(f"{where}: expected a list of test names")
        return None
    return value


def load_reference(path: str | os.PathLike) -> Reference:
    """Read a reference file; raise ReferenceError listing every bad row (no patch column, an empty or
    non-string patch, a missing instance_id, a duplicate instance)."""
    from srft.io import sha256_file

    path = Path(path)
    if not path.is_file():
        raise ReferenceError(f"reference {path}: file not found")
    try:
        rows = _rows(path)
    except (OSError, ValueError) as exc:
        raise ReferenceError(f"reference {path}: cannot read: {exc}") from None
    if not rows:
        raise ReferenceError(f"reference {path}: no rows")
    if not any("patch" in rec for _, rec in rows):
        columns = sorted({k for _, rec in rows for k in rec})[:12]
        raise ReferenceError(f"reference {path}: no 'patch' column (columns: {', '.join(columns)}); each row needs "
                             "instance_id and patch (the reference fix as a unified diff)")
    fixes: dict[str, ReferenceFix] = {}
    first: dict[str, int] = {}
    problems: list[str] = []
    for row, rec in rows:
        where = f"{path.name}:{row}"
        iid, patch = rec.get("instance_id"), rec.get("patch")
        if not isinstance(iid, str) or not iid.strip():
            problems.append(f"{where}: no instance_id")
            continue
        if iid in first:
            problems.append(f"{where}: duplicate instance {iid!r} (first at row {first[iid]})")
            continue
        first[iid] = row
        if not isinstance(patch, str) or not patch.strip():
            problems.append(f"{where}: instance {iid!r} has no patch")
            continue
        f2p = _test_list(rec.get("FAIL_TO_PASS"), f"{where}: FAIL_TO_PASS", problems)
        p2p = _test_list(rec.get("PASS_TO_PASS"), f"{where}: PASS_TO_PASS", problems)
        fixes[iid] = ReferenceFix(patch, f2p, p2p)
    if problems:
        more = f"; and {len(problems) - 2 * MAX_LISTED} more" if len(problems) > 2 * MAX_LISTED else ""
        raise ReferenceError(f"reference {path}: {len(problems)} bad row(s): "
                             + "; ".join(problems[:2 * MAX_LISTED]) + more)
    return Reference(str(path), sha256_file(path), dict(sorted(fixes.items())))


def check_instances(reference: Reference, instances: set[str]) -> None:
    """Every reference row must name an instance of the store (a wrong file is caught before any call)."""
    unknown = sorted(set(reference.fixes) - instances)
    if unknown:
        shown = ", ".join(unknown[:MAX_LISTED]) + (", ..." if len(unknown) > MAX_LISTED else "")
        raise ReferenceError(f"reference {reference.path}: {len(unknown)} of {len(reference.fixes)} instance(s) are "
                             f"not in the store ({shown}); keep only the store's instances in the file, or set "
                             "prompt.reference_unknown=ignore")


# -- sections (pure) ----------------------------------------------------------------------------------------

def _fit_lines(lines: list[str], budget: int, counter: TokenCounter) -> tuple[list[str], int]:
    """The leading lines that fit `budget` tokens, plus a note of how many were left out."""
    kept, used = [], 0
    for i, line in enumerate(lines):
        cost = counter.count(line) + 1
        if used + cost > budget - 12:  # room for the note
            return kept + [f"  ({len(lines) - i} more not shown)"], len(lines) - i
        kept.append(line)
        used += cost
    return kept, 0


def tests_text(traj: Trajectory) -> list[str] | None:
    """The per-test results as lines, failures first; None when the harness gave none."""
    tests = traj.outcome.tests
    if tests is None:
        return None
    lines = []
    for group, list_passing in SHOWN_GROUPS:
        mine = [t for t in tests if t.group == group]
        if not mine:
            continue
        passed = [t.name for t in mine if t.passed]
        failed = [t.name for t in mine if not t.passed]
        lines.append(f"{group}: {len(passed)} of {len(mine)} pass")
        lines += [f"  FAIL {name}" for name in failed]
        if list_passing:
            lines += [f"  pass {name}" for name in passed]
    return lines or None


def reference_text(fix: ReferenceFix, budget: int, counter: TokenCounter) -> tuple[str, int]:
    """The test names (at most a quarter of the budget) and the patch (the rest), within `budget` together."""
    tests, cut = "", 0
    if fix.fail_to_pass:  # whole names, as many as fit
        head, names = "Tests this fix makes pass (FAIL_TO_PASS): ", list(fix.fail_to_pass)

        def fits(k: int) -> bool:
            return counter.count(head + ", ".join(names[:k]) + f" (+{len(names)} more)") <= budget // 4

        low, high = 0, len(names)  # the most names that fit (binary search: lists can be long)
        while low < high:
            mid = (low + high + 1) // 2
            low, high = (mid, high) if fits(mid) else (low, mid - 1)
        shown, rest = low, names[low:]
        tests = head + ", ".join(names[:shown]) + (f" (+{len(rest)} more)" if rest else "") + "\n"
        cut = counter.count(", ".join(rest))
    patch, patch_cut = counter.clip(fix.patch.strip(), budget - counter.count(tests))
    return tests + patch, cut + patch_cut


def sections(traj: Trajectory, wanted: tuple[str, ...], budgets: dict[str, int], counter: TokenCounter,
             reference: Reference | None) -> list[Section]:
    """The evidence sections this trajectory has, in `wanted` order, each within its budget."""
    out = []
    for name in wanted:
        budget = budgets[name]
        if name == "tests" and (lines := tests_text(traj)) is not None:
            kept, cut = _fit_lines(lines, budget, counter)
            text = "\n".join(kept)
        elif name == "diff" and traj.metadata.submission is not None:
            patch = traj.metadata.submission.strip()
            text, cut = counter.clip(patch, budget) if patch else ("(the agent submitted an empty patch)", 0)
        elif name == "reference" and reference is not None and traj.instance_id in reference.fixes:
            text, cut = reference_text(reference.fixes[traj.instance_id], budget, counter)
        else:
            continue
        out.append(Section(name, text, counter.count(text), cut))
    return out


def evidence_summary(results: list[TrajectoryResult], prompt: PromptBuilder) -> dict[str, Any]:
    """Which hindsight sections the critic saw, their budgets, and what they cost in prompt tokens."""
    shown: Counter = Counter(name for r in results for name in r.evidence)
    budgets = prompt.config.budgets()
    return {"sections": list(prompt.sections), "budget_tokens": {k: budgets[k] for k in prompt.sections},
            "trajectories": {k: shown[k] for k in prompt.sections},
            "prompt_tokens": {k: sum(r.evidence.get(k, 0) for r in results) for k in prompt.sections},
            "tokens_cut": {k: sum(r.evidence_cut.get(k, 0) for r in results) for k in prompt.sections},
            "reference": None if prompt.reference is None else {
                "path": prompt.reference.path, "sha256": prompt.reference.sha256,
                "instances": len(prompt.reference.fixes)}}
