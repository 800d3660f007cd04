"""`srft compare`: paired statistics over per-instance outcomes of several systems (and several runs each).

Input edges: SWE-bench harness outputs are read by `srft.formats.outcomes` (run summaries, sb-cli reports,
report.json directories, OpenHands output.swebench_eval.md); per-instance 0/1 tables (CSV/TSV/JSONL, one column
per system or run) are read here. A run is one column of outcomes; a system is one or more runs.

Core: `compare_runs` (in memory, pure) -> the result dict that `--json` prints. `run_compare` loads paths and
calls it. Rendering lives in `srft.compare.render` (`render_table`, `render_markdown`, `plot_forest`).

The denominator is `instances` (e.g. the 500 Verified ids) or, without it, the union of every run's ids (or
their intersection with `common=True`). An instance a run lacks, or whose outcome is unknown, counts as
unresolved and is listed under that run's `missing`.
"""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

import srft
from srft.compare import stats
from srft.model import Outcome, repo_from_instance_id

TABLE_DELIMITERS = {".csv": ",", ".tsv": "\t", ".jsonl": None}
ID_COLUMNS = ("instance_id", "task_id", "id")
_TRUE, _FALSE = {"1", "1.0", "true", "yes", "resolved"}, {"0", "0.0", "false", "no", "unresolved"}
_MISSING = {"", "na", "nan", "none", "null"}
FEW_CLUSTERS = 30  # below this a cluster bootstrap undercovers (Cameron, Gelbach & Miller 2008)
MDE_RUNS = (1, 3, 5, 10)  # run counts the MDE is projected to (when within-run variance is estimable)


class CompareError(ValueError):
    """Bad input to `srft compare`; the message names the file (and row/column) and what was expected."""


class CompareConfig(BaseModel):
    """How systems are compared (recorded in every result)."""

    model_config = ConfigDict(extra="forbid")

    n_boot: int = Field(10_000, ge=100, description="bootstrap resamples")
    seed: int = Field(0, ge=0, description="bootstrap seed; same seed and inputs give the same result")
    confidence: float = Field(0.95, gt=0.5, lt=1.0, description="CI coverage")
    two_level: bool = Field(False, description="also resample each system's runs (whole columns)")
    cluster: Literal["none", "repo"] = Field("none", description="'repo': cluster bootstrap by repository")
    baseline: str | None = Field(None, description="compare every system against this one; None: all pairs")
    alpha: float = Field(0.05, gt=0.0, lt=1.0, description="two-sided test level for the MDE")
    power: float = Field(0.8, gt=0.0, lt=1.0, description="power for the MDE")


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


# -- reading -------------------------------------------------------------------------------------------------

def _cell(value: Any, where: str) -> bool | None:
    text = str(value).strip().lower() if value is not None else ""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    if text in _MISSING:
        return None
    raise CompareError(f"{where}: expected 0/1 or true/false (blank = missing), got {value!r}")


def read_table(path: Path) -> tuple[list[tuple[int, str]], dict[str, list[Any]]]:
    """A per-instance table -> ([(row number, instance id)], {column: raw cells}); duplicate ids are an error."""
    delimiter = TABLE_DELIMITERS[path.suffix.lower()]
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            if delimiter is None:
                rows = [(n, json.loads(line)) for n, line in enumerate(fh, 1) if line.strip()]
            else:
                rows = [(n + 1, row) for n, row in enumerate(csv.DictReader(fh, delimiter=delimiter), 1)]
    except (OSError, UnicodeDecodeError) as exc:
        raise CompareError(f"{path}: cannot read ({exc})") from exc
    except json.JSONDecodeError as exc:
        raise CompareError(f"{path}: invalid JSON line ({exc.msg})") from exc
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
                source=r.path, kind=r.kind, outcomes=r.outcomes, notes=tuple(r.notes)) for r in reports]


def read_instances(path: str | Path) -> list[str]:
    """The denominator: a JSON list of ids, a table's id column, or one id per line (blank lines and `#`
    comments skipped)."""
    path = Path(path)
    if path.suffix.lower() in TABLE_DELIMITERS and path.is_file():
        return [iid for _, iid in read_table(path)[0]]
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CompareError(f"{path}: cannot read instance list ({exc})") from exc
    if path.suffix == ".json":
        try:
            ids = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CompareError(f"{path}: invalid JSON ({exc.msg})") from exc
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise CompareError(f"{path}: expected a JSON list of instance id strings")
    else:
        ids = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    dupes = sorted(i for i, c in Counter(ids).items() if c > 1)
    if dupes:
        raise CompareError(f"{path}: duplicate instance ids {', '.join(dupes[:5])}")
    if not ids:
        raise CompareError(f"{path}: empty instance list")
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


# -- the comparison ------------------------------------------------------------------------------------------

def _universe(systems: dict[str, list[Run]], instances: list[str] | None, common: bool) -> tuple[list[str], str]:
    runs = [run for rs in systems.values() for run in rs]
    if instances is not None:
        allowed = set(instances)
        if len(allowed) < len(instances):
            raise CompareError("the instance list holds duplicate ids")
        for run in runs:
            extra = sorted(set(run.outcomes) - allowed)
            if extra:
                raise CompareError(f"{run.source}: {len(extra)} instance(s) not in the instance list, e.g. "
                                   f"{', '.join(extra[:3])}")
        return sorted(instances), "list"
    if common:
        known = [{i for i, o in run.outcomes.items() if o.resolved is not None} for run in runs]
        return sorted(set.intersection(*known)), "common"
    return sorted(set().union(*(run.outcomes for run in runs))), "union"


def _matrix(runs: list[Run], ids: list[str]) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """(n, k) 0/1 matrix over `ids` and a record per run."""
    x = np.zeros((len(ids), len(runs)))
    records = []
    for j, run in enumerate(runs):
        statuses = Counter()
        missing, errors = [], []
        for i, iid in enumerate(ids):
            outcome = run.outcomes.get(iid)
            if outcome is None or outcome.resolved is None:
                missing.append(iid)
                statuses["missing"] += 1
                continue
            x[i, j] = float(outcome.resolved)
            statuses[outcome.status] += 1
            if outcome.status == "error":
                errors.append(iid)
        canon = json.dumps(sorted((i, o.resolved) for i, o in run.outcomes.items()), separators=(",", ":"))
        records.append({"label": run.label, "source": run.source, "kind": run.kind,
                        "n_resolved": int(x[:, j].sum()), "rate": float(x[:, j].mean()) if ids else 0.0,
                        "status_counts": dict(sorted(statuses.items())), "n_missing": len(missing),
                        "missing": missing, "error_ids": errors, "notes": list(run.notes),
                        "outcomes_sha256": hashlib.sha256(canon.encode()).hexdigest()})
    return x, records


def _clusters(ids: list[str], how: str) -> tuple[np.ndarray | None, dict[str, Any] | None]:
    if how == "none":
        return None, None
    labels = [repo_from_instance_id(i) or i for i in ids]  # an unparsable id is its own cluster
    unclustered = sum(repo_from_instance_id(i) is None for i in ids)
    sizes = Counter(labels)
    info = {"by": how, "n_clusters": len(sizes), "unclustered": unclustered,
            "sizes": dict(sorted(sizes.items()))}
    return stats.cluster_codes(labels), info


def _interval(iv: stats.Interval) -> dict[str, Any]:
    return {"ci": [iv.low, iv.high], "se": iv.se, "se_boot": iv.se_boot}


def _system_result(name: str, x: np.ndarray, runs: list[dict[str, Any]], cfg: CompareConfig,
                   codes: np.ndarray | None, ids: list[str]) -> dict[str, Any]:
    iv = stats.bootstrap([x], [1.0], n_boot=cfg.n_boot, rng=stats.rng_for(cfg.seed, "system", name),
                         confidence=cfg.confidence, two_level=cfg.two_level, clusters=codes)
    spread = stats.run_spread(x)
    out = {"name": name, "n_runs": x.shape[1], "rate": iv.estimate, **_interval(iv), "runs": runs,
           "run_spread": {"low": spread.low, "high": spread.high, "sd": spread.sd},
           "within_run_var": stats.within_run_variance(x)}
    if codes is not None:
        repos = np.array([repo_from_instance_id(i) or i for i in ids])
        per_instance = x.mean(axis=1)
        out["by_repo"] = {r: float(per_instance[repos == r].mean()) for r in sorted(set(repos.tolist()))}
    return out


def _pair_result(a: str, b: str, xa: np.ndarray, xb: np.ndarray, cfg: CompareConfig,
                 codes: np.ndarray | None) -> dict[str, Any]:
    iv = stats.bootstrap([xa, xb], [1.0, -1.0], n_boot=cfg.n_boot, rng=stats.rng_for(cfg.seed, "pair", a, b),
                         confidence=cfg.confidence, two_level=cfg.two_level, clusters=codes)
    counts = stats.pair_counts(xa, xb)
    split = stats.variance_split(xa, xb)
    n = xa.shape[0]
    by_runs = None if split is None else {
        str(k): stats.mde(stats.paired_se(n, k, *split), cfg.alpha, cfg.power) for k in MDE_RUNS}
    return {"a": a, "b": b, "diff": iv.estimate, **_interval(iv),
            "p_value": stats.sign_test(counts.a_only, counts.b_only), "test": "exact sign test (McNemar)",
            "a_only": counts.a_only, "b_only": counts.b_only, "both": counts.both, "neither": counts.neither,
            "n_discordant": counts.a_only + counts.b_only,
            # The bootstrap SE reflects the design (clusters, run resampling), so the MDE does too.
            "mde": {"value": stats.mde(iv.se_boot, cfg.alpha, cfg.power), "se": iv.se_boot, "n": n,
                    "runs": [xa.shape[1], xb.shape[1]], "by_runs": by_runs,
                    "between_var": None if split is None else split[0],
                    "within_var": None if split is None else split[1]}}


def _pairs(names: list[str], baseline: str | None) -> list[tuple[str, str]]:
    if baseline is not None:
        if baseline not in names:
            raise CompareError(f"--baseline {baseline!r} is not a system (systems: {', '.join(names)})")
        return [(name, baseline) for name in names if name != baseline]
    return [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]


def compare_runs(systems: dict[str, list[Run]], *, instances: list[str] | None = None, common: bool = False,
                 instances_source: str | None = None, config: CompareConfig | None = None) -> dict[str, Any]:
    """The comparison on in-memory runs (pure). Returns the self-describing result dict (see docs/compare.md)."""
    cfg = config or CompareConfig()
    if not systems or any(not runs for runs in systems.values()):
        raise CompareError("every system needs at least one run")
    if instances is not None and common:
        raise CompareError("give either an instance list or common=True, not both")
    ids, how = _universe(systems, instances, common)
    if not ids:
        raise CompareError("no instances to compare (the runs share none)" if common else "no instances")
    codes, cluster_info = _clusters(ids, cfg.cluster)
    names = list(systems)
    mats, results, warnings = {}, [], []
    if cluster_info and cluster_info["n_clusters"] < FEW_CLUSTERS:
        warnings.append(f"only {cluster_info['n_clusters']} clusters: cluster-bootstrap CIs are rough and "
                        "usually too narrow with this few (read them as indicative)")
    for name, runs in systems.items():
        mats[name], records = _matrix(runs, ids)
        for rec in records:
            if rec["n_missing"]:
                warnings.append(f"{name} / {rec['label']}: {rec['n_missing']} of {len(ids)} instances missing "
                                "(counted unresolved)")
            warnings.extend(f"{name} / {rec['label']}: {note}" for note in rec["notes"])
        results.append(_system_result(name, mats[name], records, cfg, codes, ids))
    pairs = [_pair_result(a, b, mats[a], mats[b], cfg, codes) for a, b in _pairs(names, cfg.baseline)]
    for pair, p_adj in zip(pairs, stats.holm([p["p_value"] for p in pairs])):
        pair["p_holm"] = p_adj
    return {"kind": "srft.compare", "srft_version": srft.__version__, "config": cfg.model_dump(),
            "method": {"ci": "percentile bootstrap", "resample": "instances (paired)" + (
                " and runs (whole columns, per system)" if cfg.two_level else ""),
                "cluster": cfg.cluster, "test": "exact two-sided sign test on discordant instances",
                "mde": f"(z_(1-alpha/2) + z_power) * SE; alpha={cfg.alpha}, power={cfg.power}",
                "units": "fractions in [0, 1]; multiply by 100 for % / pp"},
            "instances": {"n": len(ids), "from": instances_source or how,
                          "sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest(),
                          "clusters": cluster_info},
            "systems": results, "comparisons": pairs, "warnings": warnings}


def _distinct(runs: list[Run], system: str) -> list[Run]:
    """Reject a run given twice; label runs by source when their short labels clash."""
    sources = Counter(run.source for run in runs)
    if any(c > 1 for c in sources.values()):
        raise CompareError(f"system {system!r}: run {next(s for s, c in sources.items() if c > 1)} given twice")
    if len({run.label for run in runs}) < len(runs):
        return [Run(run.source, run.source, run.kind, run.outcomes, run.notes) for run in runs]
    return runs


def run_compare(systems: dict[str, list[str | Path]] | None = None, *, inputs: list[str | Path] = (),
                instances: str | Path | None = None, common: bool = False, **config: Any) -> dict[str, Any]:
    """Load runs from paths and compare. `systems`: name -> paths (several = several runs); `inputs`: paths whose
    runs each become a system named after the run. `config`: CompareConfig fields."""
    cfg = CompareConfig(**config)
    loaded: dict[str, list[Run]] = {}
    for name, paths in (systems or {}).items():
        loaded[name] = _distinct([run for p in paths for run in load_runs(p)], name)
    for path in inputs:
        for run in load_runs(path):
            if run.label in loaded:
                raise CompareError(f"{run.source}: system name {run.label!r} is already taken; "
                                   "name the systems with --system NAME=PATH")
            loaded[run.label] = [run]
    if not loaded:
        raise CompareError("nothing to compare: give input paths or --system NAME=PATH")
    ids = read_instances(instances) if instances is not None else None
    return compare_runs(loaded, instances=ids, common=common, config=cfg,
                        instances_source=None if instances is None else str(instances))

