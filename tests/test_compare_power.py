"""MDE, projections and small-cluster inference (srft.compare.power / clustered / designs) against independent
scipy and numpy-loop computations, on the real 24 systems x 500 Verified instances where it fits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
from compare_support import (
    CODEX,
    CSV,
    GEMINI,
    GPT5,
    O4_MINI,
    SONNET,
    cr2_reference,
    mcnemar_power,
    read_verified,
    repo_codes,
    wild_p_reference,
)

from srft.compare import clustered, power, stats
from srft.compare.harness import CompareConfig, Run, compare_runs, run_compare


@pytest.fixture(scope="module")
def verified(results_dir):
    return read_verified(results_dir)


def test_exact_mcnemar_mde_of_the_21pp_pair(verified, results_dir):
    """o4-mini vs gpt-5.1-codex (-21 pp, 145 discordant of 500): the exact test needs 6.89 pp for 80% power; the
    observed-spread MDE (6.24 pp) has only ~71% power."""
    _, cols = verified
    a, b = cols[O4_MINI], cols[CODEX]
    m = int((a != b).sum())
    result = run_compare({"o4": [f"{results_dir / CSV}:{O4_MINI}"], "codex": [f"{results_dir / CSV}:{CODEX}"]},
                         n_boot=500)
    (pair,) = result["comparisons"]
    assert pair["diff"] == pytest.approx(-0.21) and pair["n_discordant"] == m == 145
    mde = pair["mde"]["value"]
    assert pair["mde"]["method"] == "exact McNemar power"
    assert mcnemar_power(500, m / 500, mde) == pytest.approx(0.80, abs=2e-4)
    assert mcnemar_power(500, m / 500, mde - 5e-4) < 0.80
    assert mde == pytest.approx(0.0689, abs=1e-4)
    assert mcnemar_power(500, m / 500, 0.0624) == pytest.approx(0.714, abs=1e-3)
    assert power.mcnemar_power(500, m / 500, 0.0624) == pytest.approx(mcnemar_power(500, m / 500, 0.0624), rel=1e-9)
    # the null-variance SE behind the normal-approximation value, sqrt(q/n)
    assert pair["mde"]["se"] == pytest.approx(math.sqrt(145) / 500, rel=1e-12)


def test_mde_reaches_its_power_by_simulation():
    """At a true difference equal to the MDE, scipy's exact binomial test rejects 80% of simulated data sets."""
    n, q = 500, 0.12
    delta = power.mcnemar_mde(n, round(q * n))
    rng = np.random.default_rng(11)
    counts = rng.multinomial(n, [(q + delta) / 2, (q - delta) / 2, 1 - q], size=3_000)
    rejected = np.mean([scipy.stats.binomtest(int(c[0]), int(c[0] + c[1])).pvalue <= 0.05 for c in counts])
    assert rejected == pytest.approx(0.80, abs=0.025)  # Monte-Carlo SD 0.007


@pytest.mark.parametrize("n,m", [(500, 0), (23, 3), (23, 6), (12, 5)])
def test_mde_is_undefined_when_no_power_is_reachable(n, m):
    assert power.mcnemar_mde(n, m) is None
    if m:  # even when every discordant instance goes A's way the exact test rejects < 80% of the time
        assert mcnemar_power(n, m / n, m / n) < 0.8


def test_two_level_projection_includes_seed_variance():
    """Crossed instance x run data with a run (seed) effect: by_runs[k] / z equals the true SE of the difference
    with k runs per system, measured by simulating the whole estimator (numpy) under the null."""
    rng = np.random.default_rng(4)
    n, sd_seed = 300, 0.06
    p = rng.beta(0.7, 0.9, size=n)

    def system(k: int, gen: np.random.Generator) -> np.ndarray:
        shift = gen.normal(0, sd_seed, size=k)  # one shift per run: a good or bad training seed
        return (gen.random((n, k)) < np.clip(p[:, None] + shift[None, :], 0, 1)).astype(float)

    a, b = system(3, rng), system(3, rng)
    result = _in_memory({"a": a, "b": b}, two_level=True, n_boot=4_000)
    mde = result["comparisons"][0]["mde"]
    z = power.mde_multiplier()
    for k in (3, 10):
        sims = np.array([system(k, rng).mean() - system(k, rng).mean() for _ in range(2_000)])
        assert mde["by_runs"][str(k)] / z == pytest.approx(sims.std(), rel=0.2), k
    assert mde["run_var"] > 0
    # the design's own MDE and the projection at its run count describe the same spread
    assert mde["by_runs"]["3"] == pytest.approx(mde["value"], rel=0.2)
    plain = _in_memory({"a": a, "b": b}, n_boot=500)["comparisons"][0]["mde"]
    assert plain["by_runs"]["3"] < 0.7 * mde["by_runs"]["3"]  # without the seed variance: far too optimistic


def _in_memory(mats: dict[str, np.ndarray], **config):
    """compare_runs on (n, k) 0/1 matrices held in memory (one Run per column)."""
    runs = {name: [Run.from_resolved(f"r{j}", {f"t{i:04d}": bool(x[i, j]) for i in range(x.shape[0])})
                   for j in range(x.shape[1])] for name, x in mats.items()}
    return compare_runs(runs, config=CompareConfig(**config))


def test_percentile_p_equals_brute_force_level_search():
    """The bootstrap p is the smallest level at which np.quantile's percentile CI excludes 0 (grid search)."""
    rng = np.random.default_rng(0)
    levels = np.linspace(0.0005, 0.9995, 2_000)
    for trial in range(30):
        reps = rng.normal(rng.normal(0, 2), 1, size=int(rng.integers(50, 400)))
        if trial % 2:
            reps = np.round(reps * 3) / 500  # discrete replicates with ties at 0
        excluded = ~((np.quantile(reps, levels / 2) <= 0) & (0 <= np.quantile(reps, 1 - levels / 2)))
        p = stats.percentile_p(reps)
        assert np.array_equal(p < levels, excluded)  # the CI at level 1 - a excludes 0 exactly when p < a
        first = levels[np.argmax(excluded)] if excluded.any() else 1.0
        assert first - 5e-4 <= p <= first or (p == 0.0 and excluded.all())


def test_t_distribution_matches_scipy():
    for df in (1.0, 2.5, 3.33, 11.0, 200.0):
        for t in (-4.0, -0.3, 0.0, 1.1, 2.7, 30.0):
            assert clustered.t_cdf(t, df) == pytest.approx(scipy.stats.t.cdf(t, df), abs=1e-13)
        for p in (0.001, 0.2, 0.8, 0.975, 0.9995):
            assert clustered.t_ppf(p, df) == pytest.approx(scipy.stats.t.ppf(p, df), rel=1e-9)


def test_effective_clusters_and_cr2_on_verified(verified):
    ids, cols = verified
    codes = repo_codes(ids)
    sizes = np.bincount(codes)
    assert clustered.effective_clusters(sizes) == pytest.approx(500 ** 2 / (sizes ** 2).sum()) == \
        pytest.approx(3.87, abs=0.01)
    d = cols[GEMINI] - cols[GPT5]
    low, high, se, df = cr2_reference(d, codes)
    iv = clustered.cr2_interval(d, stats.cluster_codes([str(c) for c in codes]))
    assert (iv.low, iv.high, iv.se, iv.df) == pytest.approx((low, high, se, df), rel=1e-9)
    assert df == pytest.approx(3.33, abs=0.01)
    assert iv.p_value == pytest.approx(2 * scipy.stats.t.sf(abs(d.mean()) / se, df), rel=1e-9)


@pytest.mark.parametrize("other", [SONNET, GPT5, O4_MINI])
def test_wild_cluster_bootstrap_against_a_loop(verified, other):
    """p of 'no difference' and the CI ends (where the loop's p crosses 5%) match a per-instance loop with its
    own weight draws, within Monte-Carlo error; the CI excludes 0 exactly when p < 0.05."""
    ids, cols = verified
    codes = repo_codes(ids)
    d = cols[GEMINI] - cols[other]
    iv = clustered.wild_interval(d, codes, rng=stats.rng_for(0, "wild"), n_boot=9_999)
    assert iv.p_value == pytest.approx(wild_p_reference(d, codes, 0.0, 2_000, 1), abs=0.03)
    for end in (iv.low, iv.high):
        assert wild_p_reference(d, codes, end, 2_000, 2) == pytest.approx(0.05, abs=0.02)
    assert (iv.p_value < 0.05) == (not iv.low <= 0 <= iv.high)
    assert iv.low < d.mean() < iv.high
