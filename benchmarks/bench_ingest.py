"""Ingest benchmark: a 100k-row SWE-smith-style Parquet data set built from the real trajectories.

    .venv/bin/python benchmarks/bench_ingest.py [--rows 100000] [--keep DIR]

Generates the data set in batches (each row: one of the real trajectories in ../shared, as OpenAI messages in a
JSON string, contents capped at --max-chars, with a unique instance id so no row collapses as a duplicate), then
runs `srft ingest DATA --out OUT --json` in a child process and prints rows/s and the child's peak RSS. The goal
is bounded memory: peak RSS < 2 GB whatever the row count (Parquet read in batches, external sort by id).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SRFT_SHARED", ROOT.parent / "shared")).resolve()


def base_rows(max_chars: int, max_messages: int) -> list[dict]:
    from srft.formats.ingest import ingest

    result = ingest([SHARED / "data" / "trajectories"])
    rows = []
    for traj in result.trajectories:
        messages = []
        for m in traj.messages[:max_messages]:
            msg = m.to_openai()
            msg["content"] = msg["content"][:max_chars]
            messages.append(msg)
        if not any(m["role"] == "assistant" for m in messages):
            continue
        rows.append({"instance_id": traj.instance_id or "unknown__unknown-0", "messages": messages,
                     "resolved": traj.outcome.resolved, "model": traj.metadata.model or "unknown",
                     "patch": (traj.metadata.submission or "")[:max_chars]})
    return rows


def generate(path: Path, n_rows: int, base: list[dict], batch: int = 2000) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("instance_id", pa.string()), ("messages", pa.string()), ("resolved", pa.bool_()),
                        ("model", pa.string()), ("traj_id", pa.string()), ("patch", pa.string())])
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for start in range(0, n_rows, batch):
            rows = []
            for i in range(start, min(start + batch, n_rows)):
                src = base[i % len(base)]
                iid = f"{src['instance_id']}.bench{i:06d}"  # unique: every row is its own trajectory
                rows.append({"instance_id": iid, "messages": json.dumps(src["messages"]),
                             "resolved": bool(src["resolved"]) if src["resolved"] is not None else None,
                             "model": src["model"], "traj_id": f"{iid}.t", "patch": src["patch"]})
            writer.write_table(pa.Table.from_pylist(rows, schema=schema))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--max-chars", type=int, default=400, help="cap on each message's content")
    ap.add_argument("--max-messages", type=int, default=40, help="cap on messages per trajectory")
    ap.add_argument("--keep", type=Path, help="work in this folder and keep the files")
    args = ap.parse_args()
    if not (SHARED / "data" / "trajectories").exists():
        sys.exit(f"needs the real trajectories at {SHARED}/data/trajectories (set SRFT_SHARED)")
    work = args.keep or Path(tempfile.mkdtemp(prefix="srft-bench-ingest-"))
    work.mkdir(parents=True, exist_ok=True)
    data, out = work / "swe_smith_rows.parquet", work / "out"

    t0 = time.perf_counter()
    base = base_rows(args.max_chars, args.max_messages)
    generate(data, args.rows, base)
    gen_s = time.perf_counter() - t0
    print(f"generated {args.rows} rows from {len(base)} real trajectories in {gen_s:.1f}s "
          f"({data.stat().st_size / 2**20:.1f} MiB Parquet)", file=sys.stderr)

    cmd = [sys.executable, "-c", "from srft.cli import app; app()", "ingest", str(data), "--out", str(out), "--json"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "COLUMNS": "100"})
    wall = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # Linux reports KiB
    if proc.returncode != 0:
        sys.exit(f"srft ingest failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    summary = json.loads(proc.stdout)
    result = {"rows": args.rows, "trajectories": summary["trajectories"], "steps": summary["steps"],
              "ingest_s": round(wall, 1), "rows_per_s": round(args.rows / wall, 1),
              "peak_rss_mb": round(peak_mb, 1), "goal_peak_rss_mb": 2048, "within_goal": peak_mb < 2048,
              "store_mib": round((out / "trajectories.parquet").stat().st_size / 2**20, 1),
              "input_mib": round(data.stat().st_size / 2**20, 1)}
    print(json.dumps(result, indent=2))
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
