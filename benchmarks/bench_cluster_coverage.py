"""Coverage of clustered CIs on SWE-bench Verified's 12 repositories: percentile cluster bootstrap vs the wild
cluster bootstrap-t vs CR2/Bell-McCaffrey (srft's own implementations), by simulation.

    .venv/bin/python benchmarks/bench_cluster_coverage.py [--sims 2000] [--n-boot 999] [--tau-scale 1] [--delta 0]

The data-generating process is calibrated on the 24 real systems x 500 Verified instances in ../shared:
- the 12 repositories keep their real sizes (django 231, sympy 75, ..., flask 1);
- a pair's per-instance difference d_i is +1 / -1 / 0 (A only / B only / neither or both); repository g has the
  discordant fraction q_g averaged over the 276 real pairs;
- each repository gets its own true difference delta_g = delta + tau * z_g (z_g standard normal, clipped to
  [-q_g, q_g]): the repository effect a cluster-robust CI has to account for. tau is the square root of the
  between-repository variance of the per-repo differences (one-way random-effects ANOVA estimate), averaged
  over the 276 real pairs (tau = 6.1 pp); --tau-scale multiplies it.
The target is the superpopulation difference sum_g n_g E[delta_g] / n (= delta when nothing is clipped). Each
simulated data set gets every method's 95% CI; coverage = how often the CI holds the target.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SRFT_SHARED", ROOT.parent / "shared")).resolve()
TABLE = SHARED / "data/swebench_results/derived/verified_mini-swe-agent_per_instance_resolved.csv"


def calibrate() -> tuple[np.ndarray, np.ndarray, float]:
    """(sizes n_g, discordant fractions q_g, tau) from the real per-instance table."""
    from srft.compare.stats import cluster_codes
    from srft.model import repo_from_instance_id

    with open(TABLE, newline="") as fh:
        rows = list(csv.DictReader(fh))
    codes = cluster_codes([repo_from_instance_id(r["instance_id"]) for r in rows])
    sizes = np.bincount(codes).astype(float)
    n, g = sizes.sum(), sizes.size
    cols = [np.array([float(r[c]) for r in rows]) for c in rows[0] if c != "instance_id"]
    qs, taus = [], []
    for a, b in itertools.combinations(cols, 2):
        d = a - b
        qs.append(np.bincount(codes, weights=d != 0) / sizes)
        means = np.bincount(codes, weights=d) / sizes
        msb = (sizes * (means - d.mean()) ** 2).sum() / (g - 1)
        msw = ((d - means[codes]) ** 2).sum() / (n - g)
        n0 = (n - (sizes ** 2).sum() / n) / (g - 1)
        taus.append(max(0.0, (msb - msw) / n0))
    return sizes, np.mean(qs, axis=0), math.sqrt(float(np.mean(taus)))


def simulate(sims: int, n_boot: int, tau: float, delta: float, seed: int) -> dict[str, tuple[float, float]]:
    from srft.compare import clustered, stats

    sizes, q, _ = calibrate()
    codes = np.repeat(np.arange(sizes.size), sizes.astype(int))
    n = codes.size
    rng = np.random.default_rng(seed)
    draws = np.clip(delta + tau * np.random.default_rng(seed + 1).standard_normal((200_000, 1)), -q, q)
    target = float((sizes * draws.mean(axis=0)).sum() / n)
    hits = {"cluster bootstrap (percentile)": [], "wild cluster bootstrap-t (Webb)": [], "CR2 + Bell-McCaffrey t": [],
            "instance bootstrap (ignores clusters)": []}
    widths = {k: [] for k in hits}
    for s in range(sims):
        dg = np.clip(delta + tau * rng.standard_normal(sizes.size), -q, q)[codes]
        u = rng.random(n)
        up, down = (q[codes] + dg) / 2, (q[codes] - dg) / 2
        d = np.where(u < up, 1.0, np.where(u < up + down, -1.0, 0.0))
        boot = stats.bootstrap([d[:, None]], [1.0], n_boot=n_boot, rng=stats.rng_for(s, "cluster"), clusters=codes)
        plain = stats.bootstrap([d[:, None]], [1.0], n_boot=n_boot, rng=stats.rng_for(s, "plain"))
        wild = clustered.wild_interval(d, codes, rng=stats.rng_for(s, "wild"), n_boot=n_boot)
        cr2 = clustered.cr2_interval(d, codes)
        for key, iv in zip(hits, (boot, wild, cr2, plain)):
            hits[key].append(iv.low <= target <= iv.high)
            widths[key].append(iv.high - iv.low)
    return {k: (float(np.mean(v)), float(np.mean(widths[k]))) for k, v in hits.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sims", type=int, default=2000)
    parser.add_argument("--n-boot", type=int, default=999)
    parser.add_argument("--tau-scale", type=float, default=1.0)
    parser.add_argument("--delta", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from srft.compare import clustered

    sizes, _, tau = calibrate()
    print(f"{sizes.size} clusters, effective {clustered.effective_clusters(sizes):.2f}, Bell-McCaffrey df "
          f"{clustered.bell_mccaffrey_df(sizes):.2f}, tau {tau:.4f} x {args.tau_scale}, delta {args.delta}")
    start = time.perf_counter()
    result = simulate(args.sims, args.n_boot, tau * args.tau_scale, args.delta, args.seed)
    print(f"{args.sims} simulated data sets in {time.perf_counter() - start:.0f} s; nominal 95%, Monte-Carlo SE of a "
          f"coverage near 95%: {100 * math.sqrt(0.95 * 0.05 / args.sims):.1f} pp")
    print("| method | coverage | mean CI width (pp) |\n|---|---:|---:|")
    for key, (coverage, width) in result.items():
        print(f"| {key} | {100 * coverage:.1f}% | {100 * width:.1f} |")


if __name__ == "__main__":
    main()
