"""`srft compare`'s input edge: harness outputs and per-instance tables -> `Run`s, instance lists, --system specs.

SWE-bench harness outputs are read by `srft.formats.outcomes` (run summaries, sb-cli reports, report.json
directories, OpenHands output.swebench_eval.md); per-instance 0/1 tables (CSV/TSV/JSONL, one column per system
or run) are read here. A run is one column of outcomes; a system is one or more runs. Instance ids are trimmed
wherever they come from ("x__y-1 " is "x__y-1"), and files may start with a UTF-8 BOM (Excel's "CSV UTF-8").
"""

from __future__ import annotations

import csv
import fnmatch
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from srft.config import read_instance_ids
from srft.model import Outcome

TABLE_DELIMITERS = {".csv": ",", ".tsv": "\t", ".jsonl": None}
ID_COLUMNS = ("instance_id", "task_id", "id")
_TRUE, _FALSE = {"1", "1.0", "true", "yes", "resolved"}, {"0", "0.0", "false", "no", "unresolved"}
_MISSING = {"", "na", "nan", "none", "null"}


class CompareError(ValueError):
    """Bad input to `srft compare`; the message names the file (and row/column) and what was expected."""


@dataclass(frozen=True)
class Run:
    """One run of a system: per-instance outcomes and where they came from."""

    label: str  # short name: the table column, the harness run id, or the file stem
    source: str  # the file (or `file:column`) read
    kind: str  # 'table' or an outcomes.py kind
    outcomes: dict[str, Outcome]
    notes: tuple[str, ...] = ()  # contradictions the reader found inside the file

    @classmethod
    def from_resolved(cls, label: str, resolved: dict[str, bool | None], source: str = "memory") -> Run:
        """A run from {instance_id: resolved} (None = not evaluated), for callers that hold outcomes in memory."""
        return cls(label, source, "memory", {
            iid: Outcome.from_status("unknown" if r is None else "resolved" if r else "unresolved", source)
            for iid, r in sorted(resolved.items())})

    def trimmed(self) -> Run:
        """The same run with surrounding whitespace stripped from every id; two ids that then coincide are an
        error naming the source."""
        if all(iid == iid.strip() for iid in self.outcomes):
            return self
        out: dict[str, Outcome] = {}
        for iid, outcome in self.outcomes.items():
            key = iid.strip()
            if key in out:
                raise CompareError(f"{self.source}: duplicate instance id {key!r} (once with surrounding spaces)")
            out[key] = outcome
        return Run(self.label, self.source, self.kind, out, self.notes)


def _cell(value: Any, where: str) -> bool | None:
    text = str(value).strip().lower() if value is not None else ""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    if text in _MISSING:
        return None
    raise CompareError(f"{where}: expected 0/1 or true/false (blank = missing), got {value!r}")


def _rows(path: Path) -> list[tuple[int, Any]]:
    """(line number, row) pairs; header names are trimmed (a BOM is dropped by utf-8-sig)."""
    delimiter = TABLE_DELIMITERS[path.suffix.lower()]
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            if delimiter is None:
                rows = [(n, json.loads(line)) for n, line in enumerate(fh, 1) if line.strip()]
            else:
                rows = [(n + 1, row) for n, row in enumerate(csv.DictReader(fh, delimiter=delimiter), 1)]
    except (OSError, UnicodeDecodeError) as exc:
        raise CompareError(f"{path}: cannot read ({exc})") from exc
    except json.JSONDecodeError as exc:
        raise CompareError(f"{path}: invalid JSON line ({exc.msg})") from exc
    return [(n, {str(k).strip(): v for k, v in row.items()} if isinstance(row, dict) else row) for n, row in rows]


def read_table(path: Path) -> tuple[list[tuple[int, str]], dict[str, list[Any]]]:
    """A per-instance table -> ([(row number, trimmed instance id)], {column: raw cells}); duplicate ids are an
    error."""
    rows = _rows(path)
    if not rows:
        raise CompareError(f"{path}: no rows")
    header = [k for k in rows[0][1]] if isinstance(rows[0][1], dict) else []
    id_col = next((c for c in ID_COLUMNS if c in header), None)
    if id_col is None:
        raise CompareError(f"{path}: no instance id column (expected one of {', '.join(ID_COLUMNS)}; "
                           f"found {', '.join(header) or 'none'})")
    columns = [c for c in header if c != id_col]
    ids: list[tuple[int, str]] = []
    cells: dict[str, list[Any]] = {c: [] for c in columns}
    seen: dict[str, int] = {}
    for n, row in rows:
        iid = row.get(id_col) if isinstance(row, dict) else None
        if not isinstance(iid, str) or not iid.strip():
            raise CompareError(f"{path}: row {n}: missing instance id in column {id_col!r}")
        iid = iid.strip()
        if iid in seen:
            raise CompareError(f"{path}: duplicate instance id {iid!r} (rows {seen[iid]} and {n})")
        seen[iid] = n
        ids.append((n, iid))
        for c in columns:
            cells[c].append(row.get(c))
    return ids, cells


def table_runs(path: Path, pattern: str | None = None) -> list[Run]:
    """One run per selected column (`pattern`: a column name or fnmatch pattern; None: every column)."""
    ids, cells = read_table(path)
    chosen = [c for c in cells if pattern is None or fnmatch.fnmatchcase(c, pattern)]
    if not chosen:
        raise CompareError(f"{path}: no column matches {pattern!r} (columns: {', '.join(cells) or 'none'})")
    runs = []
    for column in chosen:
        source = f"{path}:{column}"
        outcomes = {}
        for (n, iid), value in zip(ids, cells[column]):
            resolved = _cell(value, f"{path}: row {n}, column {column!r}")
            status = "unknown" if resolved is None else ("resolved" if resolved else "unresolved")
            outcomes[iid] = Outcome.from_status(status, source)
        runs.append(Run(label=column, source=source, kind="table", outcomes=outcomes))
    return runs


def load_runs(spec: str | Path) -> list[Run]:
    """Runs from one input: a harness output (file or directory), a table, or `TABLE:COLUMN-PATTERN`."""
    path, pattern = Path(spec), None
    if not path.exists() and ":" in str(spec):
        head, pattern = str(spec).rsplit(":", 1)
        path = Path(head)
        if path.suffix.lower() not in TABLE_DELIMITERS:
            raise CompareError(f"{spec}: a column can only be picked from a CSV/TSV/JSONL table")
    if not path.exists():
        raise CompareError(f"{path}: no such file or directory")
    if path.is_file() and path.suffix.lower() in TABLE_DELIMITERS:
        return table_runs(path, pattern)
    from srft.formats import outcomes as harness

    try:
        reports = harness.read_outcomes(path)
    except harness.OutcomeFileError as exc:
        raise CompareError(f"{exc}; srft compare reads SWE-bench run summaries, sb-cli reports, report.json "
                           "directories, OpenHands output.swebench_eval.md, and CSV/TSV/JSONL 0/1 tables") from exc
    if not reports:
        raise CompareError(f"{path}: no harness outputs found under this directory")
    return [Run(label=r.run_id or (Path(r.path).parent.name if r.kind == "openhands_md" else Path(r.path).stem),
                source=r.path, kind=r.kind, outcomes=r.outcomes, notes=tuple(r.notes)).trimmed() for r in reports]


def read_instances(path: str | Path, option: str = "--instances") -> list[str]:
    """An instance list (the denominator, or a restriction): a JSON list of ids, a table's id column, or one id
    per line (blank lines and `#` comments skipped); ids trimmed, duplicates and an empty list are errors."""
    path = Path(path)
    if path.suffix.lower() in TABLE_DELIMITERS and path.is_file():
        return [iid for _, iid in read_table(path)[0]]
    try:
        ids = read_instance_ids(path, option)
    except ValueError as exc:
        raise CompareError(str(exc)) from exc
    dupes = sorted(i for i, c in Counter(ids).items() if c > 1)
    if dupes:
        raise CompareError(f"{option} {path}: duplicate instance ids {', '.join(dupes[:5])}")
    if not ids:
        raise CompareError(f"{option} {path}: empty instance list")
    return ids


def parse_system(spec: str) -> tuple[str, list[str]]:
    """'NAME=PATH[,PATH...]' -> (name, paths)."""
    name, sep, paths = spec.partition("=")
    parts = [p.strip() for p in paths.split(",") if p.strip()]
    if not sep or not name.strip() or not parts:
        raise CompareError(f"--system {spec!r}: expected NAME=PATH[,PATH...]")
    return name.strip(), parts


def parse_systems(specs: list[str]) -> dict[str, list[str]]:
    """Several --system specs -> {name: paths}; a name given twice is an error."""
    systems: dict[str, list[str]] = {}
    for spec in specs:
        name, paths = parse_system(spec)
        if name in systems:
            raise CompareError(f"--system {name!r} given twice (list several runs as NAME=PATH1,PATH2)")
        systems[name] = paths
    return systems
