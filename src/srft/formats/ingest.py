"""The ingest stage: files and folders -> one sorted, de-duplicated trajectory store with outcomes joined.

    ingest(paths, outcomes=..., exclude_instances=..., outcomes_override=...) -> IngestResult (in memory)
    run_ingest(paths, out_dir, ...) -> IngestResult   writes out_dir/trajectories.parquet + ingest_report.json

Two passes over the inputs. Pass 1 sorts files into companions (by name), harness reports (by content) and
trajectory candidates, so every report is known before any outcome is joined. Pass 2 streams the candidates
through the readers (`scan_file`), groups LLM-call logs, drops excluded instances, joins outcomes
(`_join.OutcomeIndex`) and hands each trajectory to a sink: a list, or an external sort (`_spill`) that keeps
memory bounded on 100k-row data sets. Duplicates (same content-derived id) are collapsed in the sorted merge.
Nothing is dropped silently: every skip, exclusion, duplicate and conflict is counted and listed in the report.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import srft
from srft.formats import Bad, Companion, reader, scan_file
from srft.formats._files import companion_kind
from srft.formats._join import OutcomeIndex, ScopedReport, scope_for
from srft.formats._llm_calls import LlmCallGrouper
from srft.formats.outcomes import (OutcomeFileError, OutcomeReport, merge_instance_reports, read_outcome_file,
                                   read_outcomes, sniff_outcome_file)
from srft.model import Trajectory
from srft.registry import RegistryError

STORE_NAME, REPORT_NAME = "trajectories.parquet", "ingest_report.json"
SUMMARY_KEYS = ("trajectories", "resolved", "unresolved", "unknown", "steps", "skipped", "excluded", "duplicates")
Progress = Callable[[int, int, str], None]


class IngestError(ValueError):
    """An input that makes the whole run meaningless (a missing --outcomes or --exclude-instances file)."""


@dataclass
class IngestResult:
    trajectories: list[Trajectory]  # empty from run_ingest, which streams them to disk
    report: dict[str, Any]

    def ok(self, skip_bad: bool = False) -> bool:
        """Full success: something was ingested and (unless skip_bad) nothing was skipped."""
        return self.report["trajectories"] > 0 and (skip_bad or self.report["skipped"] == 0)


def read_instance_ids(path: str | os.PathLike) -> set[str]:
    """The ids of an instance-id list (`srft.config.read_instance_ids`: one per line or a JSON list)."""
    from srft.config import read_instance_ids as read_ids

    try:
        return set(read_ids(path, "--exclude-instances"))
    except ValueError as exc:
        raise IngestError(str(exc)) from exc


@dataclass
class _Entry:
    path: Path
    root: Path | None  # the directory argument it was found under; None for a file given directly


@dataclass
class _IngestJob:
    paths: list[Path]
    outcomes: list[Path]
    exclude: set[str] | None
    override: bool
    fmt: str | None
    on_progress: Progress | None
    bad: list[Bad] = field(default_factory=list)
    companions: list[Companion] = field(default_factory=list)
    hidden: int = 0
    excluded: Counter = field(default_factory=Counter)
    late_reports: list[str] = field(default_factory=list)
    duplicates: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))

    def __post_init__(self) -> None:
        self.given = self._read_given_outcomes()  # validated before any heavy work
        self.grouper = LlmCallGrouper()

    def _read_given_outcomes(self) -> list[ScopedReport]:
        if self.fmt is not None:
            try:
                reader(self.fmt)
            except RegistryError as exc:
                raise IngestError(f"--format: {exc}") from exc
        scoped = []
        for path in self.outcomes:
            try:
                reports = read_outcomes(path)
            except OutcomeFileError as exc:
                raise IngestError(f"--outcomes: {exc}") from exc
            if not reports:
                raise IngestError(f"--outcomes {path}: no SWE-bench harness output found there")
            scoped.extend(ScopedReport(r, None, True) for r in reports)
        return scoped

    # -- pass 1 ----------------------------------------------------------------------------------------
    def _walk(self) -> list[_Entry]:
        entries, seen = [], set()
        for arg in self.paths:
            if arg.is_dir():
                for dirpath, dirnames, filenames in os.walk(arg):
                    dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                    self.hidden += sum(f.startswith(".") for f in filenames)
                    found = [_Entry(Path(dirpath) / f, arg) for f in sorted(filenames) if not f.startswith(".")]
                    entries.extend(found)
            elif arg.exists() or arg.is_symlink():
                entries.append(_Entry(arg, None))
            else:
                self.bad.append(Bad(path=str(arg), reason="no such file or directory"))
        unique = []
        for entry in entries:
            key = os.path.realpath(entry.path)
            if key not in seen:
                seen.add(key)
                unique.append(entry)
        return sorted(unique, key=lambda e: str(e.path))

    def _classify(self, entries: list[_Entry]) -> tuple[list[_Entry], OutcomeIndex]:
        candidates, found = [], []
        for entry in entries:
            path = entry.path
            if not path.is_file():
                self.bad.append(Bad(path=str(path), reason="cannot read: not a regular file (a broken link?)"))
            elif path.suffix == ".md" or companion_kind(path):
                for item in scan_file(path):
                    (self.companions.append(item) if isinstance(item, Companion) else found.append((item, entry)))
            elif path.suffix == ".json" and sniff_outcome_file(path):
                try:
                    found.append((read_outcome_file(path), entry))
                except OutcomeFileError:
                    candidates.append(entry)  # pass 2 reports why it is not a trajectory either
            else:
                candidates.append(entry)
        # folders holding trajectory files: the scopes of walked reports, and the run folders a report may name
        dirs = {p for e in candidates for p in e.path.parents
                if e.root is None or p == e.root or e.root in p.parents}
        reports = list(self.given)
        walked = [(r, e) for r, e in found if e.root is not None]
        reports += [ScopedReport(r, None, False) for r, e in found if e.root is None]
        singles = [r for r, _ in walked if r.kind == "instance_reports"]
        roots = {r.path: e.root for r, e in walked}
        for report in merge_instance_reports(singles) + [r for r, _ in walked if r.kind != "instance_reports"]:
            root = roots.get(report.path) or next(e.root for r, e in walked if r.path.startswith(report.path))
            reports.append(ScopedReport(report, scope_for(Path(report.path), root, dirs), False))
        return candidates, OutcomeIndex(reports, dirs, self.override)

    # -- pass 2 ----------------------------------------------------------------------------------------
    def collect(self) -> Iterator[Trajectory]:
        candidates, self.index = self._classify(self._walk())
        for done, entry in enumerate(candidates, 1):
            for item in scan_file(entry.path, fmt=self.fmt):
                if isinstance(item, Trajectory):
                    if item.source.format == "litellm-log":
                        self.grouper.add(item, str(entry.path.parent))
                    else:
                        yield from self._finalize(item)
                elif isinstance(item, Bad):
                    self.bad.append(item)
                elif isinstance(item, Companion):
                    self.companions.append(item)
                elif isinstance(item, OutcomeReport):
                    self.late_reports.append(item.path)
            if self.on_progress:
                self.on_progress(done, len(candidates), str(entry.path))
        for traj in self.grouper.finish():
            yield from self._finalize(traj)

    def _finalize(self, traj: Trajectory) -> Iterator[Trajectory]:
        if self.exclude is not None and traj.instance_id in self.exclude:
            self.excluded[traj.instance_id] += 1
            return
        yield self.index.join(traj, Path(traj.source.path))

    # -- merge -----------------------------------------------------------------------------------------
    # The merge works on store records (Trajectory.to_record dicts): the sorted spill hands records back and
    # the writer takes records, so 100k trajectories are not rebuilt as pydantic objects just to be counted.
    def dedup(self, ordered: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Collapse equal ids (input sorted by id, first arrival first); count what is kept."""
        current: dict[str, Any] | None = None
        for rec in ordered:
            if current is not None and rec["id"] == current["id"]:
                current = self._merge_duplicate(current, rec)
                continue
            if current is not None:
                yield self._count(current)
            current = rec
        if current is not None:
            yield self._count(current)

    def _merge_duplicate(self, kept: dict[str, Any], dup: dict[str, Any]) -> dict[str, Any]:
        where, kept_at = _where(dup), _where(kept)
        if self.duplicates and self.duplicates[-1]["id"] == kept["id"]:
            self.duplicates[-1]["dropped"].append(where)
        else:
            self.duplicates.append({"id": kept["id"], "instance_id": kept["instance_id"], "dropped": [where],
                                    "kept": kept_at})
        a, b = kept["outcome"], dup["outcome"]
        if a["resolved"] is None and b["resolved"] is not None:
            return {**kept, "outcome": b}  # same conversation; only the duplicate's source knew the outcome
        if a["resolved"] is not None and b["resolved"] is not None and a["resolved"] != b["resolved"]:
            self.index.conflicts.append({"trajectory_id": kept["id"], "instance_id": kept["instance_id"],
                                         "path": kept["source"]["path"], "row": kept["source"]["row"], "kept": None,
                                         "sources": {f"{kept_at} ({a['source']})": a["status"],
                                                     f"{where} ({b['source']})": b["status"]}})
            detail = f"conflict between duplicates: {a['status']} vs {b['status']}"
            return {**kept, "outcome": {"resolved": None, "status": "unknown", "source": None, "detail": detail}}
        return kept

    def _count(self, rec: dict[str, Any]) -> dict[str, Any]:
        row = self.stats[rec["source"]["format"]]
        row["trajectories"] += 1
        row[{True: "resolved", False: "unresolved", None: "unknown"}[rec["outcome"]["resolved"]]] += 1
        row["steps"] += len(rec["steps"])
        self.stats["status:" + rec["outcome"]["status"]]["n"] += 1
        return rec

    # -- report ----------------------------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        formats = {k: v for k, v in self.stats.items() if not k.startswith("status:")}
        for b in self.bad:
            formats.setdefault(b.format or "unrecognised", Counter())
        by_format = {name: {key: int(formats[name][key]) for key in
                            ("trajectories", "resolved", "unresolved", "unknown", "steps")}
                     for name in sorted(formats)}
        for b in self.bad:
            by_format[b.format or "unrecognised"]["skipped"] = by_format[b.format or "unrecognised"].get(
                "skipped", 0) + 1
        for row in by_format.values():
            row.setdefault("skipped", 0)
        totals = {key: sum(row[key] for row in by_format.values()) for key in
                  ("trajectories", "resolved", "unresolved", "unknown", "steps", "skipped")}
        companions: dict[str, dict[str, Any]] = {}
        for c in sorted(self.companions, key=lambda c: c.path):
            slot = companions.setdefault(c.kind, {"count": 0, "paths": []})
            slot["count"] += 1
            slot["paths"].append(c.path)
        return {
            "srft_version": srft.__version__,
            "inputs": [str(p) for p in self.paths], "outcome_files": [str(p) for p in self.outcomes],
            "format": self.fmt, "outcomes_override": self.override,
            **totals,
            "excluded": sum(self.excluded.values()),
            "duplicates": sum(len(d["dropped"]) for d in self.duplicates),
            "by_format": by_format,
            "by_status": {k.split(":", 1)[1]: v["n"] for k, v in sorted(self.stats.items()) if k.startswith("status:")},
            "bad": [b.model_dump() for b in sorted(self.bad, key=lambda b: (b.path, b.row or -1))],
            "companions": companions,
            "hidden_files_ignored": self.hidden,
            "outcome_sources": self.index.sources_report(),
            "outcomes": {**self.index.counts, "conflicts": len(self.index.conflicts)},
            "conflicts": sorted(self.index.conflicts, key=lambda c: (c["path"], c["row"] or -1, c["trajectory_id"])),
            "late_outcome_files": sorted(self.late_reports),
            "llm_calls": self.grouper.report,
            "excluded_instances": None if self.exclude is None else {
                "ids_in_file": len(self.exclude), "trajectories": sum(self.excluded.values()),
                "instances": sorted(self.excluded)},
            "duplicate_trajectories": self.duplicates,
        }


def _where(rec: dict[str, Any]) -> str:
    row = rec["source"]["row"]
    return rec["source"]["path"] + ("" if row is None else f":{row}")


class _Stored:
    """A store record in the shape `io.write_trajectories` consumes (it only calls `to_record`)."""

    __slots__ = ("record",)

    def __init__(self, record: dict[str, Any]) -> None:
        self.record = record

    def to_record(self) -> dict[str, Any]:
        return self.record


def _make_run(paths: Iterable[str | os.PathLike], outcomes: Iterable[str | os.PathLike],
              exclude_instances: str | os.PathLike | None, outcomes_override: bool, fmt: str | None,
              on_progress: Progress | None) -> _IngestJob:
    paths = list(paths)
    if paths and not any(Path(p).exists() for p in paths):  # one missing path among others is skipped and counted
        listed = ", ".join(str(p) for p in paths[:3]) + (f" (+{len(paths) - 3} more)" if len(paths) > 3 else "")
        raise IngestError(f"no such file or folder: {listed}; give trajectory files or folders that exist")
    exclude = None if exclude_instances is None else read_instance_ids(exclude_instances)
    return _IngestJob([Path(p) for p in paths], [Path(p) for p in outcomes], exclude, outcomes_override, fmt,
                on_progress)


def ingest(paths: Iterable[str | os.PathLike], *, outcomes: Iterable[str | os.PathLike] = (),
           exclude_instances: str | os.PathLike | None = None, outcomes_override: bool = False,
           fmt: str | None = None, on_progress: Progress | None = None) -> IngestResult:
    """Read everything in memory: `.trajectories` sorted by id, duplicates collapsed; `.report` as written to
    ingest_report.json. Raises IngestError for an unusable --outcomes/--exclude-instances/--format."""
    run = _make_run(paths, outcomes, exclude_instances, outcomes_override, fmt, on_progress)
    ordered = sorted(enumerate(run.collect()), key=lambda it: (it[1].id, it[0]))
    kept = [Trajectory.from_record(rec) for rec in run.dedup(t.to_record() for _, t in ordered)]
    return IngestResult(kept, run.report())


def run_ingest(paths: Iterable[str | os.PathLike], out_dir: str | os.PathLike, *,
               outcomes: Iterable[str | os.PathLike] = (), exclude_instances: str | os.PathLike | None = None,
               outcomes_override: bool = False, fmt: str | None = None,
               on_progress: Progress | None = None) -> IngestResult:
    """Stream the inputs into `out_dir/trajectories.parquet` (sorted by id, bounded memory) and write
    `out_dir/ingest_report.json`; both atomically. The result's `.trajectories` is empty (they are on disk)."""
    from srft.formats._spill import SortedSpill
    from srft.io import atomic_write_json, make_out_dir, write_trajectories

    run = _make_run(paths, outcomes, exclude_instances, outcomes_override, fmt, on_progress)
    out = make_out_dir(out_dir)
    spill = SortedSpill(directory=out)
    try:
        for traj in run.collect():
            spill.add(traj)
        write_trajectories(out / STORE_NAME, (_Stored(rec) for rec in run.dedup(spill.iter_records())))
    finally:
        spill.close()
    report = run.report()
    report["store"] = str(out / STORE_NAME)
    atomic_write_json(out / REPORT_NAME, report)
    return IngestResult([], report)


def print_summary(report: dict[str, Any], out: str, console) -> None:
    """The human summary of an ingest: a table by format, the skipped inputs, what was left out."""
    from srft.console import say, table

    columns = ("trajectories", "resolved", "unresolved", "unknown", "steps", "skipped")
    rows = [[name, *(row[c] for c in columns)] for name, row in report["by_format"].items()]
    total = ["total", *(report[c] for c in columns)]
    console.print(table(f"srft ingest -> {out}", ("format", *columns), rows, total=total))
    for bad in report["bad"][:20]:
        where = bad["path"] + ("" if bad["row"] is None else f":{bad['row']}")
        say(console, f"skipped {where}: {bad['reason']}", "yellow")
    if len(report["bad"]) > 20:
        say(console, f"... and {len(report['bad']) - 20} more skipped (see {REPORT_NAME})")
    if report["trajectories"] == 0:
        say(console, "no trajectories were ingested", "red")
    companions = ", ".join(f"{v['count']} {k}" for k, v in report["companions"].items())
    say(console, f"excluded {report['excluded']}, duplicates {report['duplicates']}, outcome conflicts "
        f"{report['outcomes']['conflicts']}, outcome sources {len(report['outcome_sources'])}"
        + (f", companions: {companions}" if companions else ""))


def json_summary(report: dict[str, Any], out: str) -> dict[str, Any]:
    """The `--json` object of an ingest."""
    return {**{k: report[k] for k in SUMMARY_KEYS}, "by_format": report["by_format"], "bad": report["bad"],
            "conflicts": report["outcomes"]["conflicts"], "out": out, "report": os.path.join(out, REPORT_NAME)}
