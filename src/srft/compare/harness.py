"""`srft compare`: paired statistics over per-instance outcomes of several systems (and several runs each).

Inputs (harness outputs, 0/1 tables, instance lists) are read by `srft.compare.inputs`; how each CI, p-value
and MDE is made, per design, is `srft.compare.designs`. Core: `compare_runs` (in memory, pure) -> the result
dict that `--json` prints. `run_compare` loads paths and calls it. Rendering lives in `srft.compare.render`.

The denominator is `instances` (e.g. the 500 Verified ids) or, without it, the union of every run's ids (or
their intersection with `common=True`), then restricted by `only` (id/repository patterns) and
`only_instances` (an id list). An instance a run lacks, or whose outcome is unknown, counts as unresolved and
is listed under that run's `missing`; a run with no evaluated instance at all among them is an error.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

import srft
from srft.compare import clustered, power, stats
from srft.compare.designs import MDE_RUNS, Design, pair_stats, system_interval
from srft.compare.inputs import (
    TABLE_DELIMITERS,
    CompareError,
    Run,
    load_runs,
    parse_system,
    parse_systems,
    read_instances,
    read_table,
    table_runs,
)
from srft.model import repo_from_instance_id

__all__ = ["FEW_CLUSTERS", "MDE_RUNS", "TABLE_DELIMITERS", "CompareConfig", "CompareError", "Run", "compare_runs",
           "load_runs", "parse_system", "parse_systems", "read_instances", "read_table", "run_compare",
           "table_runs"]

FEW_CLUSTERS = 30  # below this (effective) many, a cluster bootstrap undercovers (Cameron, Gelbach & Miller 2008)


class CompareConfig(BaseModel):
    """How systems are compared (recorded in every result)."""

    model_config = ConfigDict(extra="forbid")

    n_boot: int = Field(10_000, ge=100, description="bootstrap resamples")
    seed: int = Field(0, ge=0, description="bootstrap seed; same seed and inputs give the same result")
    confidence: float = Field(0.95, gt=0.5, lt=1.0, description="CI coverage")
    two_level: bool = Field(False, description="also resample each system's runs (whole columns)")
    cluster: Literal["none", "repo"] = Field("none", description="'repo': cluster bootstrap by repository")
    cluster_ci: Literal["bootstrap", "wild", "cr2"] = Field(
        "bootstrap", description="with cluster='repo': 'bootstrap' (percentile cluster bootstrap), 'wild' (wild "
        "cluster bootstrap-t, for few clusters) or 'cr2' (CR2 SE with Bell-McCaffrey t)")
    only: list[str] = Field([], description="keep instances whose id or repository (owner/name) matches one of "
                            "these fnmatch patterns, e.g. 'django__*'")
    baseline: str | None = Field(None, description="compare every system against this one; None: all pairs")
    alpha: float = Field(0.05, gt=0.0, lt=1.0, description="two-sided test level for the MDE")
    power: float = Field(0.8, gt=0.0, lt=1.0, description="power for the MDE")


# -- the instance set ----------------------------------------------------------------------------------------

def _universe(runs: list[Run], instances: list[str] | None, common: bool) -> tuple[list[str], str]:
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


def _restrict(ids: list[str], patterns: list[str], only_ids: list[str] | None,
              only_source: str | None) -> tuple[list[str], dict[str, Any] | None, list[str]]:
    """Keep ids matching any pattern (on the id or its repository) and listed in `only_ids`."""
    if not patterns and only_ids is None:
        return ids, None, []
    if only_ids is not None:
        only_source = only_source or "(list)"
    kept = ids
    if patterns:
        kept = [i for i in kept if any(fnmatch.fnmatchcase(i, p) or fnmatch.fnmatchcase(
            repo_from_instance_id(i) or "", p) for p in patterns)]
    warnings, not_found = [], 0
    if only_ids is not None:
        universe, wanted = set(ids), set(only_ids)
        missing = sorted(wanted - universe)
        not_found = len(missing)
        if missing:
            warnings.append(f"--only-instances {only_source}: {len(missing)} of its {len(wanted)} ids are not among "
                            f"the compared instances (ignored), e.g. {', '.join(missing[:3])}")
        kept = [i for i in kept if i in wanted]
    what = " and ".join(filter(None, [f"--only {' '.join(patterns)}" if patterns else None,
                                      f"--only-instances {only_source}" if only_ids is not None else None]))
    if not kept:
        raise CompareError(f"{what}: no instance left (none of the {len(ids)} compared instances matches)")
    info = {"only": list(patterns), "only_instances": only_source, "before": len(ids), "kept": len(kept),
            "not_found": not_found}
    return kept, info, warnings


# -- the comparison ------------------------------------------------------------------------------------------

def _matrix(runs: list[Run], ids: list[str]) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """(n, k) 0/1 matrix over `ids` and a record per run; a run with nothing evaluated among `ids` is an error."""
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
        if len(missing) == len(ids):
            evaluated = sum(o.resolved is not None for o in run.outcomes.values())
            why = ("every outcome is blank/NA (not evaluated)" if not evaluated else
                   f"none of its {evaluated} evaluated instances is among the {len(ids)} compared")
            raise CompareError(f"{run.source}: no evaluated instance: {why}; give a run with outcomes or drop it")
        canon = json.dumps(sorted((i, o.resolved) for i, o in run.outcomes.items()), separators=(",", ":"))
        records.append({"label": run.label, "source": run.source, "kind": run.kind,
                        "n_resolved": int(x[:, j].sum()), "rate": float(x[:, j].mean()),
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
            "effective_clusters": clustered.effective_clusters(list(sizes.values())),
            "effective_clusters_method": "Carter-Schochet-Steiner G* at zero intra-cluster correlation: "
                                         "(sum n_g)^2 / sum n_g^2 (an upper bound; correlation lowers it)",
            "sizes": dict(sorted(sizes.items()))}
    return stats.cluster_codes(labels), info


def _system_result(name: str, x: np.ndarray, runs: list[dict[str, Any]], design: Design, seed: int,
                   ids: list[str]) -> dict[str, Any]:
    iv = system_interval(x, design, stats.rng_for(seed, "system", name))
    spread = stats.run_spread(x)
    out = {"name": name, "n_runs": x.shape[1], "rate": iv["estimate"], "ci": iv["ci"], "se": iv["se"],
           "se_boot": iv["se_boot"], "runs": runs, "run_spread": {"low": spread.low, "high": spread.high,
                                                                 "sd": spread.sd},
           "within_run_var": power.within_run_variance(x)}
    if design.codes is not None:
        repos = np.array([repo_from_instance_id(i) or i for i in ids])
        per_instance = x.mean(axis=1)
        out["by_repo"] = {r: float(per_instance[repos == r].mean()) for r in sorted(set(repos.tolist()))}
    return out


def _pair_result(a: str, b: str, xa: np.ndarray, xb: np.ndarray, design: Design, seed: int) -> dict[str, Any]:
    res = pair_stats(xa, xb, design, stats.rng_for(seed, "pair", a, b))
    test = design.describe()["test"]
    return {"a": a, "b": b, "diff": res.pop("estimate"), **res, "test": test}


def _pairs(names: list[str], baseline: str | None) -> list[tuple[str, str]]:
    if baseline is not None:
        if baseline not in names:
            raise CompareError(f"--baseline {baseline!r} is not a system (systems: {', '.join(names)})")
        return [(name, baseline) for name in names if name != baseline]
    return [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]


def _design(cfg: CompareConfig, codes: np.ndarray | None) -> Design:
    if codes is not None and int(codes.max()) + 1 < 2:  # one cluster: a cluster bootstrap has nothing to resample
        raise CompareError("--cluster repo needs at least 2 repositories (all instances share one); drop --cluster")
    if cfg.cluster_ci != "bootstrap":
        if codes is None:
            raise CompareError(f"--cluster-ci {cfg.cluster_ci} corrects clustered CIs: add --cluster repo")
        if cfg.two_level:
            raise CompareError(f"--cluster-ci {cfg.cluster_ci} does not resample runs: drop --two-level, or keep it "
                               "with --cluster-ci bootstrap")
    return Design(n_boot=cfg.n_boot, confidence=cfg.confidence, alpha=cfg.alpha, power=cfg.power,
                  two_level=cfg.two_level, codes=codes, cluster_ci=cfg.cluster_ci)


def _cluster_warning(info: dict[str, Any], cfg: CompareConfig) -> list[str]:
    if info["effective_clusters"] >= FEW_CLUSTERS or cfg.cluster_ci != "bootstrap":
        return []
    message = (f"only {info['n_clusters']} clusters (effective number {info['effective_clusters']:.1f}, "
               "Carter-Schochet-Steiner G*): percentile cluster-bootstrap CIs are too narrow with this few, and "
               "the p-values that invert them too small; --cluster-ci wild (or cr2) corrects for it")
    return [message]


def compare_runs(systems: dict[str, list[Run]], *, instances: list[str] | None = None, common: bool = False,
                 instances_source: str | None = None, only_instances: list[str] | None = None,
                 only_instances_source: str | None = None, config: CompareConfig | None = None) -> dict[str, Any]:
    """The comparison on in-memory runs (pure). Returns the self-describing result dict (see docs/compare.md)."""
    cfg = config or CompareConfig()
    if not systems or any(not runs for runs in systems.values()):
        raise CompareError("every system needs at least one run")
    if instances is not None and common:
        raise CompareError("give either an instance list or common=True, not both")
    systems = {name: [run.trimmed() for run in runs] for name, runs in systems.items()}
    strip = (lambda ids: None if ids is None else [i.strip() for i in ids])
    ids, how = _universe([run for rs in systems.values() for run in rs], strip(instances), common)
    if not ids:
        raise CompareError("no instances to compare (the runs share none)" if common else "no instances")
    ids, restricted, warnings = _restrict(ids, cfg.only, strip(only_instances), only_instances_source)
    codes, cluster_info = _clusters(ids, cfg.cluster)
    design = _design(cfg, codes)
    if cluster_info:
        warnings += _cluster_warning(cluster_info, cfg)
    mats, results = {}, []
    for name, runs in systems.items():
        mats[name], records = _matrix(runs, ids)
        for rec in records:
            if rec["n_missing"]:
                warnings.append(f"{name} / {rec['label']}: {rec['n_missing']} of {len(ids)} instances missing "
                                "(counted unresolved)")
            warnings.extend(f"{name} / {rec['label']}: {note}" for note in rec["notes"])
        results.append(_system_result(name, mats[name], records, design, cfg.seed, ids))
    pairs = [_pair_result(a, b, mats[a], mats[b], design, cfg.seed) for a, b in _pairs(list(systems), cfg.baseline)]
    for pair, p_adj in zip(pairs, stats.holm([p["p_value"] for p in pairs])):
        pair["p_holm"] = p_adj
    return {"kind": "srft.compare", "srft_version": srft.__version__, "config": cfg.model_dump(),
            "method": {**design.describe(), "cluster": cfg.cluster,
                       "units": "fractions in [0, 1]; multiply by 100 for % / pp"},
            "instances": {"n": len(ids), "from": instances_source or how,
                          "sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest(),
                          "restricted": restricted, "clusters": cluster_info},
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
                instances: str | Path | None = None, common: bool = False,
                only_instances: str | Path | None = None, **config: Any) -> dict[str, Any]:
    """Load runs from paths and compare. `systems`: name -> paths (several = several runs); `inputs`: paths whose
    runs each become a system named after the run; `only_instances`: a file of ids to restrict the comparison
    to. `config`: CompareConfig fields."""
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
    only = read_instances(only_instances, "--only-instances") if only_instances is not None else None
    return compare_runs(loaded, instances=ids, common=common, config=cfg,
                        instances_source=None if instances is None else str(instances),
                        only_instances=only, only_instances_source=None if only is None else str(only_instances))
