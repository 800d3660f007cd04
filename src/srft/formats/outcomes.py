"""SWE-bench harness outputs -> per-instance outcomes.

Three kinds of files are read (the kind names are part of the API; `srft compare` reuses this module):
  harness_summary   the run summary `<model>.<run_id>.json` (schema_version 2: resolved_ids, unresolved_ids,
                    error_ids, empty_patch_ids, ...) and the sb-cli report `<subset>__<split>__<run_id>.json`
  instance_reports  per-instance `report.json` files, flat (`{"resolved": ..., "patch_is_None": ...}` inside an
                    `<instance_id>/` folder) or keyed (`{"<instance_id>": {"resolved": ...}}`); a directory of
                    them reads as one report per run directory
  openhands_md      OpenHands' `output.swebench_eval.md` (markdown lists per outcome)

Status precedence when an id sits in several lists of one file (the harness puts every evaluated id in
`completed_ids` and `submitted_ids` as well): resolved > empty_patch > error > unresolved. `resolved_ids` is the
test result itself, so it wins; an empty patch is the most specific reason for a failure; an id only in
`completed_ids`/`submitted_ids`/`incomplete_ids` has no outcome. A contradiction inside one file (an id both
resolved and errored) is kept in `OutcomeReport.notes`.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from srft.formats._files import json_error
from srft.model import Outcome, OutcomeStatus, TestResult

OutcomeKind = Literal["harness_summary", "instance_reports", "openhands_md"]

# (list key in a run summary, status); order = precedence, first wins.
SUMMARY_LISTS: tuple[tuple[str, OutcomeStatus], ...] = (
    ("resolved_ids", "resolved"),
    ("empty_patch_ids", "empty_patch"),
    ("error_ids", "error"),
    ("unresolved_ids", "unresolved"),
)
_PRECEDENCE = {status: rank for rank, (_, status) in enumerate(SUMMARY_LISTS)}
_MD_SECTIONS: dict[str, OutcomeStatus] = {
    "resolved": "resolved", "empty patch": "empty_patch", "error": "error", "unresolved": "unresolved",
}
_INSTANCE_KEYS = ("patch_is_None", "patch_exists", "patch_successfully_applied", "tests_status")
_SNIFF_MARKERS = ('"resolved_ids"', '"completed_ids"', '"submitted_ids"', '"schema_version"', '"total_instances"',
                  '"patch_is_None"', '"tests_status"', '"patch_successfully_applied"')
SNIFF_BYTES = 8192
MAX_REPORT_BYTES = 200 * 1024 * 1024  # a 500-instance summary is ~30 KB; larger files are not harness outputs


class OutcomeFileError(ValueError):
    """A harness output that cannot be read; the message names the file and the reason."""


class OutcomeReport(BaseModel):
    """The outcomes in one harness output file (or one run's directory of per-instance report.json files)."""

    model_config = ConfigDict(extra="forbid")

    kind: OutcomeKind = Field(description="harness_summary | instance_reports | openhands_md")
    path: str = Field(description="the file (or, for a directory of report.json files, that directory)")
    run_id: str | None = Field(None, description="the run id when the file name or layout encodes it")
    outcomes: dict[str, Outcome] = Field(description="instance_id -> Outcome (source = path)")
    notes: list[str] = Field(default_factory=list, description="contradictions found inside the file")

    def statuses(self) -> dict[str, str]:
        return {iid: o.status for iid, o in self.outcomes.items()}


# -- detection -------------------------------------------------------------------------------------------

def detect_outcome_obj(obj: Any) -> OutcomeKind | None:
    """The kind of a parsed JSON harness output, or None."""
    if not isinstance(obj, dict) or not obj:
        return None
    if any(isinstance(obj.get(key), list) for key, _ in SUMMARY_LISTS) and (
            "schema_version" in obj or "completed_ids" in obj or "submitted_ids" in obj):
        return "harness_summary"
    if isinstance(obj.get("resolved"), bool) and any(k in obj for k in _INSTANCE_KEYS):
        return "instance_reports"
    values = list(obj.values())
    if all(isinstance(v, dict) and isinstance(v.get("resolved"), bool) and any(k in v for k in _INSTANCE_KEYS)
           for v in values):
        return "instance_reports"
    return None


def _is_openhands_md(text: str) -> bool:
    return bool(re.search(r"^##\s+(Resolved|Unresolved)\s+Instances\s*$", text, re.M))


def sniff_outcome_file(path: str | Path) -> bool:
    """Cheap pre-check (first bytes only): could this file be a harness output? Used to avoid parsing every
    trajectory twice; `detect_outcome_file` gives the answer."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(SNIFF_BYTES).decode("utf-8", errors="replace")
    except OSError:
        return False
    if path.suffix == ".md":
        return "Instances" in head
    if path.suffix != ".json":
        return False
    return any(marker in head for marker in _SNIFF_MARKERS)


def detect_outcome_file(path: str | Path) -> OutcomeKind | None:
    """The kind of harness output at `path`, or None when it is not one (or cannot be read)."""
    try:
        return _parse(Path(path))[0]
    except OutcomeFileError:
        return None


# -- reading ---------------------------------------------------------------------------------------------

def read_outcome_file(path: str | Path) -> OutcomeReport:
    """Read one harness output; raise OutcomeFileError (naming the file and the reason) if it is not one."""
    path = Path(path)
    kind, obj = _parse(path)
    if kind is None:
        shape = f"keys {', '.join(sorted(obj)[:12])}" if isinstance(obj, dict) else type(obj).__name__
        raise OutcomeFileError(f"{path}: not a SWE-bench harness output ({shape})")
    return report_from_obj(obj, path, kind)


def report_from_obj(obj: Any, path: str | Path, kind: OutcomeKind | None = None) -> OutcomeReport:
    """Build the report from an already-parsed file (JSON object, or markdown text for openhands_md)."""
    path = Path(path)
    kind = kind or ("openhands_md" if isinstance(obj, str) else detect_outcome_obj(obj))
    if kind == "harness_summary":
        return _from_summary(obj, path)
    if kind == "instance_reports":
        return _from_instance_report(obj, path)
    if kind == "openhands_md":
        return _from_openhands_md(obj, path)
    raise OutcomeFileError(f"{path}: not a SWE-bench harness output")


def read_outcomes(path: str | Path) -> list[OutcomeReport]:
    """Every harness output in a file or under a directory (recursive), sorted by path. Per-instance report.json
    files are merged into one report per run directory (the folder that holds the `<instance_id>/` folders)."""
    path = Path(path)
    if not path.exists():
        raise OutcomeFileError(f"{path}: no such file or directory")
    if path.is_file():
        return [read_outcome_file(path)]
    reports: list[OutcomeReport] = []
    instance_reports: list[OutcomeReport] = []
    for file in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in (".json", ".md")):
        if not sniff_outcome_file(file):
            continue
        kind, obj = _parse(file)
        if kind is None:
            continue
        report = report_from_obj(obj, file, kind)
        (instance_reports if kind == "instance_reports" else reports).append(report)
    reports.extend(merge_instance_reports(instance_reports))
    return sorted(reports, key=lambda r: r.path)


def merge_instance_reports(reports: Iterable[OutcomeReport]) -> list[OutcomeReport]:
    """Group single-file instance reports by run directory: `<run_dir>/<instance_id>/report.json`."""
    groups: dict[Path, list[OutcomeReport]] = defaultdict(list)
    for report in reports:
        file = Path(report.path)
        run_dir = file.parent.parent if file.parent.name in report.outcomes else file.parent
        groups[run_dir].append(report)
    merged = []
    for run_dir, members in sorted(groups.items()):
        if len(members) == 1 and Path(members[0].path).parent.name not in members[0].outcomes:
            merged.append(members[0])  # a keyed report.json standing alone keeps its own path
            continue
        outcomes: dict[str, Outcome] = {}
        notes: list[str] = []
        for member in sorted(members, key=lambda r: r.path):
            for iid, outcome in member.outcomes.items():
                if iid in outcomes and outcomes[iid].status != outcome.status:
                    notes.append(f"{iid}: {outcomes[iid].source} says {outcomes[iid].status}, "
                                 f"{outcome.source} says {outcome.status}")
                outcomes.setdefault(iid, outcome)
            notes.extend(member.notes)
        merged.append(OutcomeReport(kind="instance_reports", path=str(run_dir), run_id=members[0].run_id,
                                    outcomes=dict(sorted(outcomes.items())), notes=notes))
    return merged


def run_id_from_name(path: str | Path, kind: OutcomeKind) -> str | None:
    """The run id a harness output's name or location encodes.

    harness_summary: `<model with / -> __>.<run_id>.json` (split at the first dot: run ids may hold
    dots, model names rarely do; the join also matches folder names against the whole file name), or sb-cli
    `<subset>__<split>__<run_id>.json` with split test/dev/train.
    instance_reports: `.../run_evaluation/<run_id>/<model>/<instance_id>/report.json`.
    """
    path = Path(path)
    if kind == "harness_summary":
        stem = path.name[:-len(".json")] if path.name.endswith(".json") else path.stem
        sbcli = re.match(r"^[\w\-]+__(?:test|dev|train)__(?P<run>.+)$", stem)
        if sbcli:
            return sbcli["run"]
        return stem.split(".", 1)[1] if "." in stem else None
    if kind == "instance_reports":
        parts = path.parts
        if "run_evaluation" in parts:
            i = parts.index("run_evaluation")
            if i + 1 < len(parts) - 1:
                return parts[i + 1]
    return None


# -- parsers ---------------------------------------------------------------------------------------------

def _parse(path: Path) -> tuple[OutcomeKind | None, Any]:
    try:
        size = path.stat().st_size
        if size > MAX_REPORT_BYTES:
            return None, {}
        data = path.read_bytes()
    except OSError as exc:
        raise OutcomeFileError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise OutcomeFileError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    if path.suffix == ".md":
        return ("openhands_md" if _is_openhands_md(text) else None), text
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise OutcomeFileError(f"{path}: {json_error(text, exc)}") from exc
    return detect_outcome_obj(obj), obj


def _from_lists(lists: dict[OutcomeStatus, Iterable[Any]], path: Path) -> tuple[dict[str, Outcome], list[str]]:
    """Apply the precedence to per-status id lists."""
    seen: dict[str, list[OutcomeStatus]] = defaultdict(list)
    for status, ids in lists.items():
        for iid in ids:
            if not isinstance(iid, str) or not iid:
                raise OutcomeFileError(f"{path}: {status} list holds a non-string id {iid!r}")
            if status not in seen[iid]:
                seen[iid].append(status)
    outcomes, notes = {}, []
    for iid, statuses in sorted(seen.items()):
        ranked = sorted(statuses, key=_PRECEDENCE.__getitem__)
        detail = None
        if "resolved" in ranked and len(ranked) > 1:
            detail = f"also listed as {', '.join(ranked[1:])}"
            notes.append(f"{iid}: listed as {', '.join(ranked)}; kept {ranked[0]}")
        outcomes[iid] = Outcome.from_status(ranked[0], str(path), detail)
    return outcomes, notes


def _from_summary(obj: dict[str, Any], path: Path) -> OutcomeReport:
    lists: dict[OutcomeStatus, list[Any]] = {}
    for key, status in SUMMARY_LISTS:
        value = obj.get(key, [])
        if not isinstance(value, list):
            raise OutcomeFileError(f"{path}: {key} should be a list of instance ids, got {type(value).__name__}")
        lists[status] = value
    outcomes, notes = _from_lists(lists, path)
    for key, status in SUMMARY_LISTS:  # the counts the harness printed must match its lists
        count = obj.get(key.replace("_ids", "_instances"))
        if isinstance(count, int) and count != len(set(lists[status])):
            notes.append(f"{key.replace('_ids', '_instances')} = {count} but {key} lists {len(set(lists[status]))}")
    return OutcomeReport(kind="harness_summary", path=str(path), run_id=run_id_from_name(path, "harness_summary"),
                         outcomes=outcomes, notes=notes)


def _instance_status(report: dict[str, Any]) -> OutcomeStatus:
    if report.get("resolved") is True:
        return "resolved"
    if report.get("patch_is_None") is True or report.get("patch_exists") is False:
        return "empty_patch"
    if report.get("patch_successfully_applied") is False:
        return "error"
    return "unresolved"


TEST_GROUPS = ("FAIL_TO_PASS", "PASS_TO_PASS", "FAIL_TO_FAIL", "PASS_TO_FAIL")


def _tests(status: Any) -> list[TestResult] | None:
    """`tests_status` {group: {success: [...], failure: [...]}} -> one TestResult per test (None when absent)."""
    if not isinstance(status, dict):
        return None
    out = []
    for group in TEST_GROUPS:
        lists = status.get(group)
        if not isinstance(lists, dict):
            continue
        for key, passed in (("success", True), ("failure", False)):
            out += [TestResult(name=name, group=group, passed=passed) for name in lists.get(key) or []
                    if isinstance(name, str)]
    return out


def _from_instance_report(obj: dict[str, Any], path: Path) -> OutcomeReport:
    if isinstance(obj.get("resolved"), bool):  # flat: the instance id is the enclosing folder's name
        entries = {path.parent.name: obj}
    else:
        entries = obj
    outcomes = {}
    for iid, report in sorted(entries.items()):
        if not isinstance(report, dict) or not isinstance(report.get("resolved"), bool):
            raise OutcomeFileError(f"{path}: entry {iid!r} has no boolean 'resolved'")
        outcome = Outcome.from_status(_instance_status(report), str(path))
        outcomes[iid] = outcome.model_copy(update={"tests": _tests(report.get("tests_status"))})
    return OutcomeReport(kind="instance_reports", path=str(path), run_id=run_id_from_name(path, "instance_reports"),
                         outcomes=outcomes)


_MD_ITEM = re.compile(r"^\s*[-*]\s+(?:\[(?P<link>[^\]]+)\]|(?P<bare>\S+))")
_MD_COUNT = re.compile(r"^\s*[-*]\s+(?P<name>[a-z ]+?) instances:\s*(?P<n>\d+)\s*$", re.I)


def _from_openhands_md(text: str, path: Path) -> OutcomeReport:
    lists: dict[OutcomeStatus, list[str]] = {status: [] for status in _MD_SECTIONS.values()}
    counts: dict[str, int] = {}
    section: OutcomeStatus | None = None
    for line in text.splitlines():
        heading = re.match(r"^#+\s+(?P<name>.+?)(?:\s+Instances)?\s*$", line, re.I)
        if heading:  # `## Incomplete Instances` and other headings close the current list
            section = _MD_SECTIONS.get(heading["name"].strip().lower()) if line.startswith("## ") else None
            continue
        if section is None:
            count = _MD_COUNT.match(line)
            if count:
                counts[count["name"].strip().lower()] = int(count["n"])
            continue
        item = _MD_ITEM.match(line)
        if item:
            lists[section].append(item["link"] or item["bare"])
    outcomes, notes = _from_lists(lists, path)
    for name, status in _MD_SECTIONS.items():
        if name in counts and counts[name] != len(set(lists[status])):
            notes.append(f"summary says {counts[name]} {name} instances, the list has {len(set(lists[status]))}")
    return OutcomeReport(kind="openhands_md", path=str(path), run_id=None, outcomes=outcomes, notes=notes)
