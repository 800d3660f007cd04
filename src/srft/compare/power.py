"""Minimum detectable effects (MDE) and their projection to more runs (pure: numbers in, numbers out).

The MDE of a comparison is the smallest true difference that the test srft reports detects with probability
`power` at two-sided level `alpha`. It is a property of the design (instances, runs, discordance), so it is
computed under the null variance: the spread the difference would have if the systems were equally good. The
spread around the observed difference is smaller by about diff^2/n, and an MDE built on it is too optimistic
for a large observed gap (a -21 pp pair: 6.24 pp from the observed spread, 6.75 from the null variance).

- One run per system, plain design: the reported test is the exact sign test (exact McNemar), so the MDE comes
  from its exact power. With n instances and discordant fraction q, a true difference delta puts each instance
  in "A only" with probability (q + delta)/2 and "B only" with (q - delta)/2; the number of discordant
  instances m is Binomial(n, q) and, given m, "A only" is Binomial(m, 1/2 + delta/(2q)). Power sums the
  test's rejection region over both (`mcnemar_power`); the MDE is the smallest delta with that power.
- Otherwise, normal approximation: MDE = (c_alpha + c_power) * SE0, with SE0 the null-variance standard error
  of the design and c the quantiles of the test's reference distribution (z for the bootstrap tests).

Projection to k runs per system (`VarianceSplit`, `projected_se`): per instance the difference
d_i = mean_runs(a_i) - mean_runs(b_i) has, under the null, second moment
    E[d_i^2] = between + w_A/k_A + w_B/k_B
with w the within-instance run noise of each system (mean over instances of the ddof=1 variance across runs).
A run effect (a training seed that moves every instance) adds a shared shift per run. Its variance s_run is
estimated from the spread of the per-run rates beyond what instance noise explains:
    Var_j(rate_j) = s_run + (w - s_run)/n        ->  s_run = (Var_j(rate_j) - w/n) / (1 - 1/n)
The plain design treats runs as exchangeable rollouts (no run effect), the two-level design resamples runs and
so keeps it:
    plain:      SE0(n, k)^2 = (between + (w_A + w_B)/k) / n
    two-level:  SE0(n, k)^2 = (between + (w_A - s_A + w_B - s_B)/k) / n + (s_A + s_B)/k
Assumptions: instances exchangeable (clustering ignored in the projection), runs independent, the additive
variance decomposition above (a method-of-moments approximation for 0/1 outcomes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

# Above this many instances the exact power sum (a band of m values x m outcomes each) gets slow; the normal
# approximation is then within a few hundredths of a pp of it anyway.
EXACT_MAX_N = 5_000
_NORMAL = NormalDist()


def mde_multiplier(alpha: float = 0.05, power: float = 0.8) -> float:
    """z_{1-alpha/2} + z_{power}: 1.960 + 0.842 = 2.802 for the defaults."""
    return _NORMAL.inv_cdf(1.0 - alpha / 2.0) + _NORMAL.inv_cdf(power)


def mde(se: float | None, alpha: float = 0.05, power: float = 0.8) -> float | None:
    """Normal-approximation MDE from a (null-variance) SE; None when the SE is missing, zero or not finite."""
    if se is None or not math.isfinite(se) or se <= 0.0:
        return None
    return mde_multiplier(alpha, power) * se


# -- exact McNemar ------------------------------------------------------------------------------------------

def _log_choose(m: np.ndarray, k: np.ndarray, log_fact: np.ndarray) -> np.ndarray:
    return log_fact[m] - log_fact[k] - log_fact[np.maximum(m - k, 0)]


def _critical(ms: np.ndarray, alpha: float, log_fact: np.ndarray) -> np.ndarray:
    """Per discordant count m, the largest c with 2 * P(Bin(m, 1/2) <= c) <= alpha (-1: never rejects)."""
    out = np.full(ms.shape, -1, dtype=np.int64)
    for idx, m in enumerate(ms):
        k = np.arange(m // 2 + 1)
        log_cdf = np.logaddexp.accumulate(_log_choose(np.full_like(k, m), k, log_fact)) - m * math.log(2.0)
        ok = np.flatnonzero(log_cdf + math.log(2.0) <= math.log(alpha) + 1e-12)
        out[idx] = ok[-1] if ok.size else -1
    return out


@dataclass(frozen=True)
class _McNemarDesign:
    """What `mcnemar_power` reuses across deltas: the likely discordant counts m, their log-probabilities under
    Binomial(n, q), and each m's critical value."""

    q: float
    ms: np.ndarray
    log_weight: np.ndarray
    crit: np.ndarray
    log_fact: np.ndarray

    @classmethod
    def build(cls, n: int, q: float, alpha: float) -> _McNemarDesign:
        log_fact = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, n + 1, dtype=np.float64)))])
        ms = np.arange(n + 1)
        if q < 1.0:
            log_weight = _log_choose(np.full_like(ms, n), ms, log_fact) + ms * math.log(q) + (n - ms) * math.log1p(-q)
        else:
            log_weight = np.where(ms == n, 0.0, -np.inf)
        keep = log_weight > -60.0  # the rest weighs < 1e-26 in total
        ms, log_weight = ms[keep], log_weight[keep]
        crit = _critical(ms, alpha, log_fact)
        rejects = crit >= 0
        return cls(q, ms[rejects], log_weight[rejects], crit[rejects], log_fact)

    def power(self, delta: float) -> float:
        pi = min(max(0.5 + delta / (2.0 * self.q), 1e-300), 1.0 - 1e-16)  # P(A only | discordant)
        total = 0.0
        rows = max(1, (1 << 20) // (int(self.ms[-1]) + 1)) if self.ms.size else 1
        for start in range(0, self.ms.size, rows):  # blocks of (m values x outcomes) cells, ~8 MB each
            m, c = self.ms[start:start + rows, None], self.crit[start:start + rows, None]
            k = np.arange(int(m.max()) + 1)[None, :]
            valid = k <= m
            log_pmf = (_log_choose(m, np.minimum(k, m), self.log_fact) + k * math.log(pi)
                       + (m - k) * math.log1p(-pi))
            reject = valid & ((k <= c) | (k >= m - c))
            inside = np.where(reject, np.exp(np.where(reject, log_pmf, -np.inf)), 0.0).sum(axis=1)
            total += float((np.exp(self.log_weight[start:start + rows]) * inside).sum())
        return min(1.0, total)


def mcnemar_power(n: int, q: float, delta: float, alpha: float = 0.05) -> float:
    """Power of the exact two-sided sign test (McNemar) at level alpha, n instances, discordant fraction q,
    true difference delta (0 <= |delta| <= q); unconditional over the number of discordant instances."""
    if not 0.0 < q <= 1.0 or abs(delta) > q:
        raise ValueError(f"need 0 < q <= 1 and |delta| <= q (q={q}, delta={delta})")
    return _McNemarDesign.build(n, q, alpha).power(abs(delta))


def mcnemar_mde(n: int, n_discordant: int, alpha: float = 0.05, power: float = 0.8) -> float | None:
    """Smallest delta the exact sign test detects with `power`, at the observed discordance q = n_discordant/n.
    None when undefined: no discordant instance, or too few for the test to ever reach that power."""
    if n_discordant <= 0 or n < 2:
        return None
    q = n_discordant / n
    if n > EXACT_MAX_N:
        return mde(math.sqrt(q / n), alpha, power)
    design = _McNemarDesign.build(n, q, alpha)
    high, f_high = q, design.power(q) - power
    if f_high < 0:
        return None
    # Illinois regula falsi on power(delta) - power (increasing in delta), from a bracket around the normal
    # approximation (the exact MDE is within a few percent of it): ~8 power sums instead of ~20 for bisection
    low, f_low, side = 0.0, design.power(0.0) - power, 0
    guess = mde(math.sqrt(q / n), alpha, power)
    for x in (0.85 * guess, 1.2 * guess):
        if low < x < high:
            f_x = design.power(x) - power
            low, f_low, high, f_high = (x, f_x, high, f_high) if f_x < 0 else (low, f_low, x, f_x)
    while high - low > 1e-6:  # 0.0001 pp
        mid = high - f_high * (high - low) / (f_high - f_low)
        if not low < mid < high:
            mid = (low + high) / 2.0
        f_mid = design.power(mid) - power
        if f_mid < 0:
            low, f_low = mid, f_mid
            f_high, side = (f_high / 2.0, -1) if side == -1 else (f_high, -1)
        else:
            high, f_high = mid, f_mid
            f_low, side = (f_low / 2.0, 1) if side == 1 else (f_low, 1)
        if f_mid == 0.0:
            return mid
    return high


# -- variance components and the projection to more runs ----------------------------------------------------

def within_run_variance(x: np.ndarray) -> float | None:
    """Mean over instances of the across-run variance (ddof=1): unbiased for E[p_i (1 - p_i)] when runs are
    independent Bernoulli(p_i) draws. None with a single run (not identifiable)."""
    if x.shape[1] < 2:
        return None
    return float(x.var(axis=1, ddof=1).mean())


def run_variance(x: np.ndarray) -> float | None:
    """Variance of a run-level effect (seed variance, see module doc), floored at 0; None with one run."""
    w = within_run_variance(x)
    n = x.shape[0]
    if w is None or n < 2:
        return None
    rates = x.mean(axis=0)
    return max(0.0, (float(rates.var(ddof=1)) - w / n) / (1.0 - 1.0 / n))


@dataclass(frozen=True)
class VarianceSplit:
    """Null-variance components of a paired difference (fractions^2; see module doc)."""

    between: float  # mean(d_i^2) minus the run noise it holds: what more runs cannot remove
    within: float  # w_A + w_B: within-instance run noise (includes any run effect)
    runs: float  # s_A + s_B: run-level (seed) variance, part of `within`


def variance_split(a: np.ndarray, b: np.ndarray) -> VarianceSplit | None:
    """Components of the per-instance difference, or None unless both systems have >= 2 runs."""
    wa, wb = within_run_variance(a), within_run_variance(b)
    if wa is None or wb is None or a.shape[0] < 2:
        return None
    d = a.mean(axis=1) - b.mean(axis=1)
    between = float(np.mean(d ** 2)) - wa / a.shape[1] - wb / b.shape[1]
    return VarianceSplit(max(0.0, between), wa + wb, run_variance(a) + run_variance(b))


def projected_se(split: VarianceSplit, n: int, runs: int, two_level: bool = False) -> float:
    """Null-variance SE of the paired difference with n instances and `runs` runs per system."""
    if not two_level:
        return math.sqrt((split.between + split.within / runs) / n)
    return math.sqrt((split.between + (split.within - split.runs) / runs) / n + split.runs / runs)


def paired_se(n: int, runs: int, between_var: float, within_var: float, run_var: float = 0.0) -> float:
    """SE for planning without data: n instances, `runs` runs per system, the components of `VarianceSplit`
    (run_var > 0 keeps a seed effect, as the two-level design does)."""
    return projected_se(VarianceSplit(between_var, within_var, run_var), n, runs, two_level=run_var > 0)
