"""Which harness report decides a trajectory's outcome: scoping by location and by run, conflicts, overrides.

Rules (documented in docs/formats.md):
1. Location. A report given with `--outcomes` applies everywhere. A report found while walking an input
   directory applies to the trajectories under its scope: the nearest folder, from the report's own folder
   upwards, that holds trajectory files (a `reports/<id>/report.json` tree scopes to the run folder above it).
2. Run. A report whose run id (or file name, `<model>.<run_id>.json`) names a folder that holds trajectories is
   run-scoped: it applies only under that folder. Several runs of the same instances sit side by side (the
   harness writes `<model>.<run>.json` next to `<run>/`), so without this the same instance gets the wrong
   outcome. Among the reports that apply, run-scoped ones win over unscoped ones.
3. Agreement. Reports that agree on resolved/unresolved combine (the most specific status is kept: an empty
   patch or error over plain unresolved). Reports that disagree are a conflict: outcome unknown, reported.
4. Rows. An in-row value (data-set `resolved`/`target`) wins over nothing. When a report disagrees with it, the
   row wins unless `outcomes_override`; either way the conflict is reported.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from srft.formats.outcomes import OutcomeReport
from srft.model import Outcome, Trajectory

_SPECIFIC = {"resolved": 0, "empty_patch": 1, "error": 2, "unresolved": 3}


@dataclass
class ScopedReport:
    report: OutcomeReport
    scope: Path | None  # None: applies everywhere (given on the command line)
    given: bool
    run_folder: str | None = None  # set when the report names a folder that holds trajectories

    def names(self, folder: str) -> bool:
        name = Path(self.report.path).name
        stem = name[:-5] if name.endswith(".json") else name
        return self.report.run_id == folder or stem.endswith("." + folder) or stem.endswith("__" + folder)


def scope_for(report_path: Path, root: Path, trajectory_dirs: set[Path]) -> Path:
    """The nearest folder at or above the report (not above `root`) that holds trajectory files."""
    start = report_path if report_path.is_dir() else report_path.parent
    for folder in (start, *start.parents):
        if folder in trajectory_dirs:
            return folder
        if folder == root or root not in folder.parents:
            break
    return root


class OutcomeIndex:
    def __init__(self, reports: list[ScopedReport], trajectory_dirs: set[Path], override: bool) -> None:
        folder_names = {d.name for d in trajectory_dirs}
        for sr in reports:
            sr.run_folder = next((f for f in sorted(folder_names) if sr.names(f)), None)
        self.reports = reports
        self.override = override
        self.by_instance: dict[str, list[ScopedReport]] = defaultdict(list)
        for sr in reports:
            for iid in sr.report.outcomes:
                self.by_instance[iid].append(sr)
        self.conflicts: list[dict[str, Any]] = []
        self.counts = {"from_reports": 0, "from_rows": 0, "overridden": 0, "none": 0}

    def applicable(self, instance_id: str, path: Path) -> list[ScopedReport]:
        candidates = []
        for sr in self.by_instance.get(instance_id, ()):
            if sr.scope is not None and sr.scope != path and sr.scope not in path.parents:
                continue
            candidates.append(sr)
        folders = {p.name for p in path.parents}
        scoped = [sr for sr in candidates if sr.run_folder is not None and sr.run_folder in folders]
        return scoped or [sr for sr in candidates if sr.run_folder is None]

    def join(self, traj: Trajectory, path: Path) -> Trajectory:
        """The trajectory with its outcome decided; conflicts recorded in `self.conflicts`."""
        row = traj.outcome if traj.outcome.status != "unknown" else None
        reports = self.applicable(traj.instance_id, path) if traj.instance_id else []
        found = [(sr.report.path, sr.report.outcomes[traj.instance_id]) for sr in reports]
        from_reports = self._combine(traj, found)
        if from_reports is None:
            self.counts["from_rows" if row else "none"] += 1
            return traj
        if row is None:
            self.counts["from_reports"] += 1
            return traj.model_copy(update={"outcome": from_reports})
        if from_reports.resolved is None or from_reports.resolved == row.resolved:
            self.counts["from_rows"] += 1
            if row.tests is None and from_reports.tests is not None and from_reports.resolved is not None:
                return traj.model_copy(update={"outcome": row.model_copy(update={"tests": from_reports.tests})})
            return traj
        kept = from_reports if self.override else row
        self._conflict(traj, {row.source: row.status, **{p: o.status for p, o in found}}, kept.source)
        self.counts["overridden" if self.override else "from_rows"] += 1
        detail = f"conflict: {row.source} says {row.status}, {from_reports.source} says {from_reports.status}"
        return traj.model_copy(update={"outcome": kept.model_copy(update={"detail": detail})})

    def _combine(self, traj: Trajectory, found: list[tuple[str, Outcome]]) -> Outcome | None:
        if not found:
            return None
        verdicts = {o.resolved for _, o in found}
        if len(verdicts) > 1:
            statuses = {p: o.status for p, o in sorted(found)}
            self._conflict(traj, statuses, None)
            detail = "conflict: " + "; ".join(f"{p} says {s}" for p, s in statuses.items())
            return Outcome(resolved=None, status="unknown", source=None, detail=detail)
        path, best = min(found, key=lambda f: (_SPECIFIC.get(f[1].status, 9), f[0]))
        others = sorted({p for p, _ in found} - {path})
        detail = best.detail
        if others:
            detail = "; ".join(filter(None, [detail, "agrees: " + ", ".join(others)]))
        # a run summary lists ids only; an agreeing per-instance report.json keeps the per-test results
        tests = best.tests if best.tests is not None else next(
            (o.tests for _, o in sorted(found, key=lambda f: f[0]) if o.tests is not None), None)
        return best.model_copy(update={"source": path, "detail": detail, "tests": tests})

    def _conflict(self, traj: Trajectory, statuses: dict[str | None, str], kept: str | None) -> None:
        self.conflicts.append({"trajectory_id": traj.id, "instance_id": traj.instance_id,
                               "path": traj.source.path, "row": traj.source.row,
                               "sources": {str(k): v for k, v in sorted(statuses.items(), key=lambda kv: str(kv[0]))},
                               "kept": kept})

    def sources_report(self) -> list[dict[str, Any]]:
        return [{"path": sr.report.path, "kind": sr.report.kind, "run_id": sr.report.run_id,
                 "instances": len(sr.report.outcomes), "given": sr.given,
                 "scope": None if sr.scope is None else str(sr.scope), "run_folder": sr.run_folder,
                 "notes": sr.report.notes}
                for sr in sorted(self.reports, key=lambda s: s.report.path)]
