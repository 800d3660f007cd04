"""How `srft compare` makes each CI, p-value and MDE, by design (pure: numpy matrices in, result dicts out).

Shapes: a system is an (n instances x k runs) 0/1 matrix; all systems share the row order.

- plain: paired percentile bootstrap CI; p = exact sign test (McNemar); MDE from the exact McNemar power
  (one run per system), else normal.
- two-level and/or cluster bootstrap: percentile bootstrap CI; p = the bootstrap p that inverts it; MDE normal.
- cluster, `cluster_ci="wild"`: wild cluster bootstrap-t CI (test inversion); p = the same test at 0; MDE from
  the bootstrap-t quantiles.
- cluster, `cluster_ci="cr2"`: CR2 SE with a Bell-McCaffrey t; p = the same t test; MDE from t(df) quantiles.

Outside the plain design the CI and p come from one computation, so the CI excludes 0 exactly when
p < 1 - confidence. The plain design keeps the instance-level sign test (exact, and what readers expect for
paired 0/1 outcomes); near the boundary it can disagree with the bootstrap CI.

Every MDE uses the null-variance SE: SE0^2 = the design's SE^2 + mean(d)^2 / n, adding back what centring on the
observed difference removed (see `srft.compare.power`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from srft.compare import clustered, power, stats

MDE_RUNS = (1, 3, 5, 10)  # run counts the MDE is projected to (when within-run variance is estimable)


@dataclass(frozen=True)
class Design:
    """The inference settings of one comparison (from CompareConfig and the cluster codes)."""

    n_boot: int
    confidence: float
    alpha: float
    power: float
    two_level: bool = False
    codes: np.ndarray | None = None  # cluster code per instance, or None
    cluster_ci: str = "bootstrap"  # 'bootstrap' | 'wild' | 'cr2' (with codes only)

    @property
    def corrected(self) -> bool:
        return self.codes is not None and self.cluster_ci != "bootstrap"

    @property
    def plain(self) -> bool:
        return self.codes is None and not self.two_level

    def describe(self) -> dict[str, str]:
        """The `method` block of the result: how CIs, p and MDE were made ("{ci} over {resample}")."""
        if self.corrected:
            ci, resample = {"wild": ("wild cluster bootstrap-t (restricted, Webb weights), inverted",
                                     "repositories (one weight per repository)"),
                            "cr2": ("CR2 cluster-robust SE with Bell-McCaffrey t",
                                    "repositories (analytic, no resampling)")}[self.cluster_ci]
            test = ci.removesuffix(", inverted") + " (the test the CI inverts)"
            return {"ci": ci, "resample": resample, "test": test,
                    "mde": "(c_(1-alpha/2) + c_power) * SE0 with the quantiles c of the test's reference "
                           f"distribution and SE0 the null-variance SE; alpha={self.alpha}, power={self.power}"}
        resample = ("repositories" if self.codes is not None else "instances") + " (paired)" + (
            " and runs (whole columns, per system)" if self.two_level else "")
        test = ("exact two-sided sign test on discordant instances" if self.plain
                else "percentile-bootstrap test (p inverts the CI)")
        mde = ("exact McNemar power with one run per system, else (z_(1-alpha/2) + z_power) * SE0" if self.plain
               else "(z_(1-alpha/2) + z_power) * SE0")
        return {"ci": "percentile bootstrap", "resample": resample, "test": test,
                "mde": f"{mde}; SE0 = null-variance SE; alpha={self.alpha}, power={self.power}"}


def _interval(est: float, low: float, high: float, se: float | None, se_boot: float | None) -> dict[str, Any]:
    return {"estimate": est, "ci": [low, high], "se": se, "se_boot": se_boot}


def _clustered(values: np.ndarray, design: Design, rng: np.random.Generator,
               bounds: tuple[float, float]) -> clustered.ClusterInterval:
    if design.cluster_ci == "wild":
        return clustered.wild_interval(values, design.codes, rng=rng, n_boot=design.n_boot,
                                       confidence=design.confidence, bounds=bounds)
    return clustered.cr2_interval(values, design.codes, design.confidence)


def system_interval(x: np.ndarray, design: Design, rng: np.random.Generator) -> dict[str, Any]:
    """A system's rate with its CI: {estimate, ci, se, se_boot}."""
    if design.corrected:
        iv = _clustered(x.mean(axis=1), design, rng, (0.0, 1.0))
        return _interval(iv.estimate, iv.low, iv.high, iv.se, None)
    iv = stats.bootstrap([x], [1.0], n_boot=design.n_boot, rng=rng, confidence=design.confidence,
                         two_level=design.two_level, clusters=design.codes)
    return _interval(iv.estimate, iv.low, iv.high, iv.se, iv.se_boot)


def _mde_block(value: float | None, method: str, se0: float | None, a: np.ndarray, b: np.ndarray,
               design: Design) -> dict[str, Any]:
    split = power.variance_split(a, b)
    n = a.shape[0]
    by_runs = None  # clustering is not in the projection model, so a clustered design gets none
    if split is not None and design.codes is None:
        by_runs = {str(k): power.mde(power.projected_se(split, n, k, design.two_level), design.alpha,
                                     design.power) for k in MDE_RUNS}
    return {"value": value, "method": method, "se": se0, "n": n, "runs": [a.shape[1], b.shape[1]],
            "by_runs": by_runs, "between_var": None if split is None else split.between,
            "within_var": None if split is None else split.within,
            "run_var": None if split is None else split.runs}


def _quantile_mde(se0: float, lo: float, hi: float) -> float | None:
    return None if se0 <= 0.0 or not math.isfinite(se0) else (lo + hi) * se0


def pair_stats(a: np.ndarray, b: np.ndarray, design: Design, rng: np.random.Generator) -> dict[str, Any]:
    """A - B: difference, CI, p-value (the design's test), the sign test, counts and the MDE."""
    counts = stats.pair_counts(a, b)
    d = a.mean(axis=1) - b.mean(axis=1)
    n, m = d.shape[0], counts.a_only + counts.b_only
    p_sign = stats.sign_test(counts.a_only, counts.b_only)
    out = {"a_only": counts.a_only, "b_only": counts.b_only, "both": counts.both, "neither": counts.neither,
           "n_discordant": m, "p_sign": p_sign}
    shift = float(d.mean()) ** 2 / n  # what centring on the observed difference removed from the variance
    if design.corrected:
        iv = _clustered(d, design, rng, (-1.0, 1.0))
        out.update(_interval(iv.estimate, iv.low, iv.high, iv.se, None), p_value=iv.p_value)
        se0 = math.sqrt(iv.se ** 2 + shift)
        if iv.se == 0.0:  # every cluster has the same mean difference: nothing to size a test by
            crit, method = None, "undefined (no spread between clusters)"
        elif iv.t_star is not None:
            # the test's own critical value for "no difference", and the power quantile of the same t* shifted
            crit = (float(np.quantile(np.abs(iv.t_star), 1.0 - design.alpha)),
                    float(np.quantile(iv.t_star, design.power)))
            method = "wild bootstrap-t quantiles, null variance"
        else:
            crit = clustered.t_ppf(1.0 - design.alpha / 2.0, iv.df), clustered.t_ppf(design.power, iv.df)
            method = f"t({iv.df:.2f}) quantiles, null variance"
        value = None if crit is None else _quantile_mde(se0, *crit)
        out["mde"] = _mde_block(value, method, se0, a, b, design)
        return out
    iv = stats.bootstrap([a, b], [1.0, -1.0], n_boot=design.n_boot, rng=rng, confidence=design.confidence,
                         two_level=design.two_level, clusters=design.codes)
    out.update(_interval(iv.estimate, iv.low, iv.high, iv.se, iv.se_boot))
    if design.plain:
        se0 = math.sqrt(float(np.mean(d ** 2)) / n)
        one_run = a.shape[1] == 1 and b.shape[1] == 1
        value = (power.mcnemar_mde(n, m, design.alpha, design.power) if one_run
                 else power.mde(se0, design.alpha, design.power))
        exact = one_run and n <= power.EXACT_MAX_N  # mcnemar_mde falls back to the normal approximation above
        method = "exact McNemar power" if exact else "normal approximation, null variance"
        out.update(p_value=p_sign, mde=_mde_block(value, method, se0, a, b, design))
    else:
        se0 = math.sqrt(iv.se_boot ** 2 + shift)
        out.update(p_value=iv.p_zero, mde=_mde_block(power.mde(se0, design.alpha, design.power),
                                                      "normal approximation, null variance", se0, a, b, design))
    return out
