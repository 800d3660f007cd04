"""Independent reference computations for the compare tests (scipy / plain numpy loops, no srft code)."""

from __future__ import annotations

import csv
import math

import numpy as np
import scipy.linalg
import scipy.stats

CSV = "derived/verified_mini-swe-agent_per_instance_resolved.csv"
GEMINI = "20251118_mini-v1.15.0_gemini-3-pro-preview-20251118"
SONNET = "20250929_mini-v1.13.3_sonnet-4-5-20250929"
GPT5 = "20250807_mini-v1.7.0_gpt-5"
O4_MINI = "20250726_mini-v1.0.0_o4-mini-2025-04-16"  # with CODEX: the -21 pp pair
CODEX = "20251124_mini-v1.16.0_gpt-5.1-codex"


def read_verified(results_dir) -> tuple[list[str], dict[str, np.ndarray]]:
    """(instance ids, {system: (500,) 0/1 vector}) parsed with the csv module."""
    with open(results_dir / CSV, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [r["instance_id"] for r in rows], {c: np.array([float(r[c]) for r in rows])
                                               for c in rows[0] if c != "instance_id"}


def repo_codes(ids: list[str]) -> np.ndarray:
    """Cluster code per id from 'owner__name-number' (the repository), in sorted repository order."""
    repos = [i.split("__")[0] + "/" + i.split("__")[1].rsplit("-", 1)[0] for i in ids]
    names = sorted(set(repos))
    return np.array([names.index(r) for r in repos])


def mcnemar_power(n: int, q: float, delta: float, alpha: float = 0.05) -> float:
    """Power of scipy's exact two-sided binomial test on the discordant pairs: m ~ Bin(n, q), then
    'A only' ~ Bin(m, 1/2 + delta/(2q)); reject when binomtest(k, m).pvalue <= alpha."""
    pi = 0.5 + delta / (2 * q)
    total = 0.0
    for m in range(1, n + 1):
        weight = scipy.stats.binom.pmf(m, n, q)
        if weight < 1e-15:
            continue
        k = np.arange(m + 1)
        p = np.minimum(1.0, 2 * scipy.stats.binom.cdf(np.minimum(k, m - k), m, 0.5))
        total += weight * scipy.stats.binom.pmf(k, m, pi)[p <= alpha].sum()
    return total


def cr2_reference(d: np.ndarray, codes: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float, float]:
    """(low, high, se, df) of the mean by CR2 with Bell-McCaffrey df, from explicit n x n matrices."""
    n = d.size
    x = np.ones((n, 1))
    hat = x @ x.T / n
    resid = d - d.mean()
    meat, cols = 0.0, []
    for g in np.unique(codes):
        idx = np.flatnonzero(codes == g)
        adj = np.real(scipy.linalg.inv(scipy.linalg.sqrtm(np.eye(idx.size) - hat[np.ix_(idx, idx)])))
        meat += (x[idx].T @ adj @ resid[idx]).item() ** 2
        col = np.zeros(n)  # the vector whose product with the residuals is this cluster's term
        col[idx] = (adj.T @ x[idx])[:, 0] / n
        cols.append((np.eye(n) - hat) @ col)
    gmat = np.array(cols)
    m = gmat @ gmat.T
    df = np.trace(m) ** 2 / np.trace(m @ m)
    se = math.sqrt(meat) / n
    t = scipy.stats.t.ppf(1 - (1 - confidence) / 2, df)
    return d.mean() - t * se, d.mean() + t * se, se, df


WEBB = np.array([-math.sqrt(1.5), -1.0, -math.sqrt(0.5), math.sqrt(0.5), 1.0, math.sqrt(1.5)])


def wild_p_reference(d: np.ndarray, codes: np.ndarray, mu0: float, n_boot: int, seed: int) -> float:
    """Restricted wild cluster bootstrap-t p of mean = mu0, instance by instance in a loop (CR1 SE)."""
    rng = np.random.default_rng(seed)
    groups = np.unique(codes)
    g, n = groups.size, d.size

    def t_stat(values: np.ndarray) -> float:
        mean = values.mean()
        sums = np.array([(values[codes == c] - mean).sum() for c in groups])
        return (mean - mu0) / (math.sqrt(g / (g - 1) * (sums ** 2).sum()) / n)

    observed = t_stat(d)
    exceed = 0
    for _ in range(n_boot):
        v = WEBB[rng.integers(0, 6, size=g)]
        star = mu0 + v[np.searchsorted(groups, codes)] * (d - mu0)
        exceed += abs(t_stat(star)) >= abs(observed)
    return exceed / n_boot
