"""srft.compare.stats against scipy and against simulation: bootstrap CIs, sign test, clustering, two-level, MDE."""

from __future__ import annotations

import csv
import math
import time

import numpy as np
import pytest
import scipy.stats

from srft.compare import power, stats

CSV = "derived/verified_mini-swe-agent_per_instance_resolved.csv"
GEMINI = "20251118_mini-v1.15.0_gemini-3-pro-preview-20251118"
SONNET = "20250929_mini-v1.13.3_sonnet-4-5-20250929"


@pytest.fixture(scope="module")
def verified(results_dir):
    """(instance ids, {system: (500, 1) 0/1 matrix}) from the real leaderboard table."""
    with open(results_dir / CSV, newline="") as fh:
        rows = list(csv.DictReader(fh))
    ids = [r["instance_id"] for r in rows]
    cols = {c: np.array([[float(r[c])] for r in rows]) for c in rows[0] if c != "instance_id"}
    return ids, cols


def _diff(x, y, axis=-1):
    return x.mean(axis=axis) - y.mean(axis=axis)


def test_paired_bootstrap_agrees_with_scipy(verified):
    _, cols = verified
    a, b = cols[GEMINI], cols[SONNET]
    ours = stats.bootstrap([a, b], [1.0, -1.0], n_boot=10_000, rng=stats.rng_for(0, "t"))
    ref = scipy.stats.bootstrap((a[:, 0], b[:, 0]), _diff, paired=True, vectorized=True, method="percentile",
                                n_resamples=10_000, rng=1)
    assert ours.estimate == pytest.approx(a.mean() - b.mean(), abs=1e-15)
    # Monte-Carlo tolerance: quantile noise is ~0.04 pp here, and outcomes move the mean in 0.2 pp steps.
    assert ours.low == pytest.approx(ref.confidence_interval.low, abs=0.004)
    assert ours.high == pytest.approx(ref.confidence_interval.high, abs=0.004)
    assert ours.se_boot == pytest.approx(ref.standard_error, rel=0.05)
    assert ours.se == pytest.approx(np.std(a[:, 0] - b[:, 0], ddof=1) / math.sqrt(500))
    assert ours.low < ours.estimate < ours.high


def test_single_system_rate_ci_agrees_with_scipy(verified):
    _, cols = verified
    x = cols[SONNET]
    ours = stats.bootstrap([x], [1.0], n_boot=10_000, rng=stats.rng_for(3, "rate"))
    ref = scipy.stats.bootstrap((x[:, 0],), np.mean, vectorized=True, method="percentile", n_resamples=10_000, rng=2)
    assert ours.estimate == 353 / 500
    assert ours.low == pytest.approx(ref.confidence_interval.low, abs=0.004)
    assert ours.high == pytest.approx(ref.confidence_interval.high, abs=0.004)


@pytest.mark.parametrize("a_only,b_only", [(0, 0), (1, 0), (28, 29), (20, 53), (44, 26), (3, 17), (300, 260)])
def test_sign_test_equals_binomtest(a_only, b_only):
    expected = scipy.stats.binomtest(a_only, a_only + b_only).pvalue if a_only + b_only else 1.0
    assert stats.sign_test(a_only, b_only) == pytest.approx(expected, rel=1e-12, abs=1e-300)


def test_identical_systems_give_exact_zero_and_degenerate_ci(verified):
    _, cols = verified
    x = cols[GEMINI]
    for clusters in (None, stats.cluster_codes([str(i % 7) for i in range(500)])):
        iv = stats.bootstrap([x, x.copy()], [1.0, -1.0], n_boot=2_000, rng=stats.rng_for(0, "same"),
                             clusters=clusters)
        assert (iv.estimate, iv.low, iv.high, iv.se_boot, iv.se) == (0.0, 0.0, 0.0, 0.0, 0.0)
    counts = stats.pair_counts(x, x)
    assert (counts.a_only, counts.b_only, counts.both, counts.neither) == (0, 0, 371, 129)


def test_pair_counts_on_real_systems(verified):
    _, cols = verified
    a, b = cols[GEMINI][:, 0], cols[SONNET][:, 0]
    counts = stats.pair_counts(cols[GEMINI], cols[SONNET])
    assert counts.a_only == int(((a == 1) & (b == 0)).sum())
    assert counts.b_only == int(((a == 0) & (b == 1)).sum())
    assert counts.both + counts.neither + counts.a_only + counts.b_only == 500
    assert counts.both == int(((a == 1) & (b == 1)).sum())


def test_seeded_and_stream_per_key(verified):
    _, cols = verified
    args = ([cols[GEMINI], cols[SONNET]], [1.0, -1.0])
    one = stats.bootstrap(*args, n_boot=1_000, rng=stats.rng_for(7, "pair", "a", "b"))
    two = stats.bootstrap(*args, n_boot=1_000, rng=stats.rng_for(7, "pair", "a", "b"))
    other = stats.bootstrap(*args, n_boot=1_000, rng=stats.rng_for(8, "pair", "a", "b"))
    assert one == two
    assert one.se_boot != other.se_boot


def test_cluster_bootstrap_matches_cluster_robust_se(verified):
    ids, cols = verified
    from srft.model import repo_from_instance_id

    codes = stats.cluster_codes([repo_from_instance_id(i) for i in ids])
    assert int(codes.max()) + 1 == 12  # the 12 Verified repositories
    a, b = cols[GEMINI], cols["20250807_mini-v1.7.0_gpt-5"]
    clustered = stats.bootstrap([a, b], [1.0, -1.0], n_boot=4_000, rng=stats.rng_for(0, "c"), clusters=codes)
    # The bootstrap spread and the analytic cluster-robust SE estimate the same thing (12 clusters: loose).
    assert clustered.se_boot == pytest.approx(clustered.se, rel=0.25)
    # Singleton clusters are the plain instance bootstrap, and the robust SE then equals sd/sqrt(n).
    singletons = stats.cluster_codes(ids)
    plain = stats.bootstrap([a, b], [1.0, -1.0], n_boot=4_000, rng=stats.rng_for(0, "p"))
    single = stats.bootstrap([a, b], [1.0, -1.0], n_boot=4_000, rng=stats.rng_for(0, "s"), clusters=singletons)
    assert single.se == pytest.approx(plain.se, rel=1e-12)
    assert single.se_boot == pytest.approx(plain.se_boot, rel=0.06)


def _two_level_reference(a, b, n_boot, rng):
    """Loop version of the pigeonhole bootstrap: instances jointly, each system's runs independently."""
    n = a.shape[0]
    out = np.empty(n_boot)
    for r in range(n_boot):
        rows = rng.integers(0, n, n)
        ca, cb = rng.integers(0, a.shape[1], a.shape[1]), rng.integers(0, b.shape[1], b.shape[1])
        out[r] = a[np.ix_(rows, ca)].mean() - b[np.ix_(rows, cb)].mean()
    return out


def test_two_level_resamples_runs():
    rng = np.random.default_rng(5)
    p = rng.beta(0.6, 0.9, size=(120, 1))
    a = (rng.random((120, 4)) < p).astype(float)
    a[:, 3] = 0.0  # one bad seed: a run-level effect the one-level bootstrap cannot see
    b = (rng.random((120, 3)) < p).astype(float)
    one = stats.bootstrap([a, b], [1.0, -1.0], n_boot=3_000, rng=stats.rng_for(0, "x"))
    two = stats.bootstrap([a, b], [1.0, -1.0], n_boot=3_000, rng=stats.rng_for(0, "x"), two_level=True)
    ref = _two_level_reference(a, b, 3_000, np.random.default_rng(9))
    assert two.estimate == one.estimate
    assert two.se_boot > 1.3 * one.se_boot
    assert two.se_boot == pytest.approx(ref.std(ddof=1), rel=0.08)
    assert two.low == pytest.approx(np.quantile(ref, 0.025), abs=0.02)
    # With one run per system there is nothing to resample: the same replicates exactly.
    single = [a[:, :1], b[:, :1]]
    assert stats.bootstrap(single, [1.0, -1.0], n_boot=500, rng=stats.rng_for(1, "y"), two_level=True) == \
        stats.bootstrap(single, [1.0, -1.0], n_boot=500, rng=stats.rng_for(1, "y"))


def test_mde_formula_and_worked_example():
    z = scipy.stats.norm.ppf(0.975) + scipy.stats.norm.ppf(0.8)
    assert power.mde_multiplier() == pytest.approx(z, rel=1e-12)
    # anchors.md: 60 discordant of 500 -> SE ~ sqrt(60)/500 ~ 1.5 pp -> MDE ~ 4.3 pp: +1.3 pp is not detectable.
    assert power.mde(math.sqrt(60) / 500) == pytest.approx(0.0434, abs=5e-4)
    assert power.mde(0.0) is None and power.mde(None) is None
    assert power.paired_se(500, 1, 0.12, 0.0) == pytest.approx(math.sqrt(0.12 / 500))
    assert power.paired_se(500, 4, 0.02, 0.4) == pytest.approx(math.sqrt((0.02 + 0.1) / 500))
    # a seed effect (run_var) shrinks with runs, not with instances
    assert power.paired_se(500, 4, 0.02, 0.4, 0.01) == pytest.approx(math.sqrt((0.02 + 0.39 / 4) / 500 + 0.01 / 4))


def test_variance_split_recovers_simulated_components():
    rng = np.random.default_rng(2)
    n, k = 4_000, 5
    p = rng.uniform(0.1, 0.9, size=(n, 1))
    shift = rng.choice([-0.1, 0.1], size=(n, 1))  # systems treat tasks differently: E[shift^2] = 0.01
    a = (rng.random((n, k)) < p).astype(float)
    b = (rng.random((n, k)) < np.clip(p + shift, 0, 1)).astype(float)
    split = power.variance_split(a, b)
    expected_within = float(np.mean(p * (1 - p)) + np.mean(np.clip(p + shift, 0, 1) * (1 - np.clip(p + shift, 0, 1))))
    assert split.within == pytest.approx(expected_within, rel=0.03)
    assert split.between == pytest.approx(0.01, abs=0.004)
    assert split.runs == pytest.approx(0.0, abs=2e-4)  # no run effect simulated
    assert power.variance_split(a[:, :1], b) is None
    assert power.within_run_variance(a[:, :1]) is None


def test_run_variance_recovers_a_seed_effect():
    """x_ij = Bernoulli(p_i + s_j) with a per-run shift s_j of sd 0.05: run_variance estimates Var(s) = 0.0025
    (averaged over 200 simulated systems of 8 runs; one system's 8 runs give a noisy estimate)."""
    rng = np.random.default_rng(3)
    p = rng.uniform(0.2, 0.8, size=(2_000, 1))
    estimates = []
    for _ in range(200):
        shift = rng.normal(0, 0.05, size=(1, 8))
        estimates.append(power.run_variance((rng.random((2_000, 8)) < p + shift).astype(float)))
    assert np.mean(estimates) == pytest.approx(0.0025, rel=0.15)
    assert power.run_variance(np.ones((10, 1))) is None


def test_bootstrap_p_agrees_with_its_ci_on_real_pairs(verified):
    """Cluster bootstrap over the 12 repositories: for every pair against Gemini, p_zero < 0.05 exactly when the
    95% CI excludes 0 (and both come from the same replicates)."""
    ids, cols = verified
    from srft.model import repo_from_instance_id

    codes = stats.cluster_codes([repo_from_instance_id(i) for i in ids])
    significant = 0
    for name, x in cols.items():
        if name == GEMINI:
            continue
        iv = stats.bootstrap([cols[GEMINI], x], [1.0, -1.0], n_boot=2_000, rng=stats.rng_for(0, name), clusters=codes)
        assert (iv.p_zero < 0.05) == (not iv.low <= 0 <= iv.high), name
        significant += iv.p_zero < 0.05
    assert 0 < significant < 23  # both outcomes occur


def test_holm_and_run_spread():
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    spread = stats.run_spread(np.array([[1, 1, 0], [0, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=float))
    assert spread.rates == (0.5, 0.5, 0.0) and spread.low == 0.0 and spread.high == 0.5
    assert spread.sd == pytest.approx(np.std([0.5, 0.5, 0.0], ddof=1))


def test_bootstrap_is_vectorised_fast():
    rng = np.random.default_rng(0)
    a, b = (rng.random((500, 1)) < 0.4).astype(float), (rng.random((500, 1)) < 0.35).astype(float)
    start = time.perf_counter()
    stats.bootstrap([a, b], [1.0, -1.0], n_boot=10_000, rng=stats.rng_for(0, "speed"))
    elapsed = time.perf_counter() - start
    # ~0.2 s on the 2-core project machine under load; a per-resample Python loop takes far longer.
    assert elapsed < 5.0
