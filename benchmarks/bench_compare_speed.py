"""Speed of srft compare's statistics on 500 real Verified instances (gemini-3-pro vs sonnet-4.5), best of 5.

    .venv/bin/python benchmarks/bench_compare_speed.py

Times: 10,000 paired bootstrap resamples (plain, clustered by repository, two-level with 3 simulated runs per
system), the wild cluster bootstrap with 10,000 weight draws (inverted for its CI), CR2, and the exact McNemar MDE.
"""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SRFT_SHARED", ROOT.parent / "shared")).resolve()
TABLE = SHARED / "data/swebench_results/derived/verified_mini-swe-agent_per_instance_resolved.csv"
GEMINI = "20251118_mini-v1.15.0_gemini-3-pro-preview-20251118"
SONNET = "20250929_mini-v1.13.3_sonnet-4-5-20250929"


def best(fn, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    from srft.compare import clustered, power, stats
    from srft.model import repo_from_instance_id

    with open(TABLE, newline="") as fh:
        rows = list(csv.DictReader(fh))
    codes = stats.cluster_codes([repo_from_instance_id(r["instance_id"]) for r in rows])
    a = np.array([[float(r[GEMINI])] for r in rows])
    b = np.array([[float(r[SONNET])] for r in rows])
    rng = np.random.default_rng(0)
    a3, b3 = (rng.random((500, 3)) < 0.7).astype(float), (rng.random((500, 3)) < 0.6).astype(float)
    d = (a - b)[:, 0]
    cases = {
        "paired bootstrap, 10k": lambda: stats.bootstrap([a, b], [1, -1], n_boot=10_000, rng=stats.rng_for(0, "x")),
        "cluster bootstrap, 10k": lambda: stats.bootstrap([a, b], [1, -1], n_boot=10_000, rng=stats.rng_for(0, "x"),
                                                          clusters=codes),
        "two-level bootstrap (3 runs), 10k": lambda: stats.bootstrap([a3, b3], [1, -1], n_boot=10_000,
                                                                     rng=stats.rng_for(0, "x"), two_level=True),
        "wild cluster bootstrap-t, 10k, inverted": lambda: clustered.wild_interval(d, codes, rng=stats.rng_for(0, "x"),
                                                                                  n_boot=10_000),
        "CR2 + Bell-McCaffrey": lambda: clustered.cr2_interval(d, codes),
        "exact McNemar MDE (70 of 500 discordant)": lambda: power.mcnemar_mde(500, 70),
    }
    print(f"load average {os.getloadavg()[0]:.1f}")
    for name, fn in cases.items():
        print(f"| {name} | {best(fn) * 1000:.1f} ms |")


if __name__ == "__main__":
    main()
