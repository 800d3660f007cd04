"""Paired statistics for agent evaluations (pure: numpy arrays in, numbers out; no I/O).

Shapes: one system's outcomes are a float matrix `x` of shape (n_instances, k_runs) with 0/1 entries (an instance
missing from a run is already 0 there). Every system in a comparison shares the same row order, so row i is the
same task everywhere: that pairing is what makes the comparison sharp.

What is computed, and why:
- The point estimate of a system is the mean over instances of the per-instance solve fraction (the mean over
  runs), which equals the mean of the per-run rates.
- The paired bootstrap resamples *instances* (rows) with replacement, the same rows for both systems, and
  recomputes the difference of means. Runs are averaged per instance first (Miller 2024, "Adding Error Bars to
  Evals", arXiv:2411.00640, sec. 3-4: resampling each item K times shrinks the within-item variance).
- `two_level=True` also resamples each system's runs, as whole columns, independently per system (runs of two
  systems are independent seeds): Owen's "pigeonhole" bootstrap for crossed instance x run designs (Owen 2007,
  Ann. Appl. Stat. 1(2)). It captures a run-level effect (one bad training seed depresses every instance) and is
  mildly conservative. With one run per system it equals the one-level bootstrap.
- `clusters` (an integer code per instance, e.g. the repository) switches to a cluster bootstrap: whole clusters
  are resampled and the statistic is the ratio (sum of values)/(number of instances drawn). Django is 231 of the
  500 Verified instances, so instances are not independent draws.
- CIs are percentile intervals (what `scipy.stats.bootstrap(..., paired=True, method="percentile")` gives).
  `Interval.p_zero` is the two-sided bootstrap p of "the statistic is 0" that inverts that interval: the
  smallest level at which the percentile CI excludes 0 (Efron & Tibshirani 1993, sec. 15.4), so with the same
  replicates the CI excludes 0 exactly when p_zero < 1 - confidence. srft reports it for the two-level and
  cluster bootstraps, where the instance-level sign test ignores what the CI accounts for.
- The sign test is the exact McNemar test: a two-sided binomial test with p = 1/2 on the discordant instances
  (A solved and B did not, or the reverse). With several runs an instance is discordant when its solve
  fractions differ, and it counts for the system with the higher fraction.
- Minimum detectable effects and the projection to more runs live in `srft.compare.power`; CR2 and the wild
  cluster bootstrap (few clusters) in `srft.compare.clustered`.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

# Bootstrap work is done in blocks of at most this many (replicate x instance) cells: 10k x 500 runs in
# three blocks of ~80 MB of float64 at worst, and a 10k-instance data set does not blow up memory.
_BLOCK_CELLS = 1 << 21


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap percentile CI and standard errors (fractions, not percent)."""

    estimate: float
    low: float
    high: float
    se_boot: float  # standard deviation of the bootstrap replicates
    se: float | None  # analytic (CLT; cluster-robust when clustered) standard error; None for n < 2
    p_zero: float = 1.0  # bootstrap p of "the statistic is 0", inverting the percentile CI (`percentile_p`)


@dataclass(frozen=True)
class PairCounts:
    """Instances by who solved them; with several runs, on per-instance solve fractions (see module doc)."""

    a_only: int  # A's fraction > B's (with one run: A solved, B did not)
    b_only: int  # B's fraction > A's
    both: int  # equal fractions, above 0 (one run: both solved)
    neither: int  # both 0


@dataclass(frozen=True)
class RunSpread:
    """Per-run resolve rates of one system and their spread (sd is None with a single run)."""

    rates: tuple[float, ...]
    low: float
    high: float
    sd: float | None


def rng_for(seed: int, *keys: str) -> np.random.Generator:
    """A generator determined by the seed and the names of what it is for: each system/pair gets its own
    stream, so adding a third system does not change the CI of the first pair."""
    words = [seed & 0xFFFFFFFF, seed >> 32 & 0xFFFFFFFF] + [zlib.crc32(k.encode()) for k in keys]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(words)))


def cluster_codes(labels: list[str]) -> np.ndarray:
    """Integer code per instance (0..C-1, in sorted label order) from cluster labels such as repositories."""
    names = sorted(set(labels))
    index = {name: i for i, name in enumerate(names)}
    return np.fromiter((index[label] for label in labels), dtype=np.int64, count=len(labels))


def _row_counts(idx: np.ndarray, m: int) -> np.ndarray:
    """(rows, draws) indices in [0, m) -> (rows, m) counts of each index per row (vectorised bincount)."""
    rows = idx.shape[0]
    flat = idx + (np.arange(rows, dtype=np.int64) * m)[:, None]
    return np.bincount(flat.ravel(), minlength=rows * m).reshape(rows, m)


def _weights(rng: np.random.Generator, rows: int, n: int, codes: np.ndarray | None) -> np.ndarray:
    """Bootstrap weights (rows, n): how often each instance is drawn in each replicate."""
    if codes is None:
        return _row_counts(rng.integers(0, n, size=(rows, n)), n).astype(np.float64)
    n_clusters = int(codes.max()) + 1
    drawn = _row_counts(rng.integers(0, n_clusters, size=(rows, n_clusters)), n_clusters)
    return drawn[:, codes].astype(np.float64)


def _run_means(rng: np.random.Generator, x: np.ndarray, rows: int) -> np.ndarray:
    """Per-instance means over resampled runs (whole columns with replacement), (rows, n)."""
    k = x.shape[1]
    counts = _row_counts(rng.integers(0, k, size=(rows, k)), k).astype(np.float64)
    return counts @ x.T / k


def bootstrap(mats: list[np.ndarray], signs: list[float], *, n_boot: int, rng: np.random.Generator,
              confidence: float = 0.95, two_level: bool = False, clusters: np.ndarray | None = None) -> Interval:
    """Percentile bootstrap of sum_s sign_s * mean(mats[s]) with instances resampled jointly (paired).

    One system: mats=[x], signs=[1] (its resolve rate). A pair: mats=[a, b], signs=[1, -1] (A - B).
    """
    n = mats[0].shape[0]
    if n == 0:
        raise ValueError("no instances to bootstrap")
    if any(m.shape[0] != n for m in mats):
        raise ValueError("all systems must have the same instances (rows)")
    per_instance = sum(s * m.mean(axis=1) for s, m in zip(signs, mats))  # (n,)
    replicates = np.empty(n_boot)
    block = max(1, _BLOCK_CELLS // n)
    for start in range(0, n_boot, block):
        rows = min(block, n_boot - start)
        w = _weights(rng, rows, n, clusters)
        if two_level:
            values = sum(s * _run_means(rng, m, rows) for s, m in zip(signs, mats))
        else:
            values = per_instance[None, :]
        replicates[start:start + rows] = (w * values).sum(axis=1) / w.sum(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(replicates, [tail, 1.0 - tail])
    return Interval(estimate=float(per_instance.mean()), low=float(low), high=float(high),
                    se_boot=float(replicates.std(ddof=1)) if n_boot > 1 else 0.0,
                    se=analytic_se(per_instance, clusters), p_zero=percentile_p(replicates))


def _first_crossing(r: np.ndarray, i: int) -> float:
    """Fractional index where the linear interpolation of sorted r between positions i-1 and i reaches 0."""
    return (i - 1) + (-r[i - 1]) / (r[i] - r[i - 1])


def percentile_p(replicates: np.ndarray) -> float:
    """Two-sided p of "the statistic is 0" from bootstrap replicates: 2 t*, with t* the largest tail such that
    the percentile interval [Q(t), Q(1 - t)] (np.quantile's linear interpolation) still holds 0. The CI at
    level 1 - a excludes 0 exactly when p < a; p = 0 when every replicate lies on one side of 0."""
    r = np.sort(np.asarray(replicates, dtype=np.float64))
    last = r.size - 1
    if last < 1:
        return 1.0
    at_most = int(np.searchsorted(r, 0.0, side="right"))  # replicates <= 0
    below = int(np.searchsorted(r, 0.0, side="left"))  # replicates < 0
    if at_most == 0 or below == r.size:
        return 0.0
    t_low = 1.0 if at_most == r.size else _first_crossing(r, at_most) / last  # Q(t) <= 0 iff t <= t_low
    t_high = 1.0 if below == 0 else 1.0 - _first_crossing(r, below) / last  # Q(1 - t) >= 0 iff t <= t_high
    return min(1.0, 2.0 * min(t_low, t_high, 0.5))


def analytic_se(values: np.ndarray, clusters: np.ndarray | None = None) -> float | None:
    """Standard error of the mean of per-instance values: sd/sqrt(n), or the cluster-robust form
    sqrt(C/(C-1) * sum_c (sum_{i in c} (v_i - mean))^2) / n (Miller 2024, eq. 4, with the usual C/(C-1))."""
    n = values.shape[0]
    if n < 2:
        return None
    if clusters is None:
        return float(values.std(ddof=1) / math.sqrt(n))
    n_clusters = int(clusters.max()) + 1
    if n_clusters < 2:
        return None
    sums = np.bincount(clusters, weights=values - values.mean(), minlength=n_clusters)
    return float(math.sqrt(n_clusters / (n_clusters - 1) * float((sums ** 2).sum())) / n)


def pair_counts(a: np.ndarray, b: np.ndarray) -> PairCounts:
    """Concordant/discordant instance counts from (n, k) outcome matrices."""
    ma, mb = a.mean(axis=1), b.mean(axis=1)
    tie = ma == mb
    return PairCounts(a_only=int((ma > mb).sum()), b_only=int((mb > ma).sum()),
                      both=int((tie & (ma > 0)).sum()), neither=int((tie & (ma == 0)).sum()))


def sign_test(a_only: int, b_only: int) -> float:
    """Exact two-sided sign test (exact McNemar): P(as extreme a split of the discordant pairs | p = 1/2).

    Computed with exact integers, so it equals scipy.stats.binomtest(a_only, a_only + b_only).pvalue."""
    m = a_only + b_only
    if m == 0:
        return 1.0
    k = min(a_only, b_only)
    term, tail = 1, 1  # C(m, 0); accumulate C(m, i) for i <= k
    for i in range(k):
        term = term * (m - i) // (i + 1)
        tail += term
    return min(1.0, 2 * tail / 2 ** m)


def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (family-wise error control over all comparisons shown)."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def run_spread(x: np.ndarray) -> RunSpread:
    """Per-run resolve rates (column means) and their min, max and sample sd."""
    rates = tuple(float(r) for r in x.mean(axis=0))
    sd = float(np.std(rates, ddof=1)) if len(rates) > 1 else None
    return RunSpread(rates=rates, low=min(rates), high=max(rates), sd=sd)
