"""Training throughput across processes and with sequence packing, on real-length rows, all cases in one run:

  1 process          srft train, --batch-size 2 --global-batch 4 (grad_accum 2)
  2 processes        accelerate launch (configs/accelerate/ddp.yaml, --num_processes 2, gloo on CPU), the same
                     global batch (grad_accum 1 per process): the same rows per optimizer step
  padded, random     --batch-size 4: a seeded permutation, padded to the longest row of each micro-batch
  padded, grouped    --batch-tokens T: rows grouped by length, rows x longest <= T
  packed             --batch-tokens T --packing: rows concatenated, sum of lengths <= T, no padding

Rows: the `--truncation windows` samples of real trajectories from ../shared (mini-swe-agent, Gemini 3 Pro on
SWE-bench Verified) at --max-length 4096, Qwen2.5-Coder tokenizer, `--policy sft`. Model: a random-init 1-layer
Qwen2 (hidden 64) around that tokenizer. fp32, full fine-tuning, one epoch per case, each case its own process(es).
tokens/s = real (non-padding) input tokens per second of training, summed over processes; padding share = padded
positions / all positions the model ran.

    .venv/bin/python benchmarks/bench_scale.py                  # 6 trajectories -> ~65 windows, first 24 rows
    .venv/bin/python benchmarks/bench_scale.py --rows 64 --batch-tokens 16384
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SRFT_SHARED", ROOT.parent / "shared"))
TRAJ = SHARED / "data" / "trajectories" / "mini-swe-agent_gemini-3-pro-preview_verified"
TOKENIZER = SHARED / "data" / "tokenizers" / "qwen2.5-coder-instruct"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def srft(*args: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "srft", *args, "--json"], env=ENV, capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise SystemExit(f"srft {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def prepare(work: Path, n_traj: int, rows: int, max_length: int) -> tuple[Path, Path]:
    import datasets

    files = sorted(TRAJ.glob("*.traj.json"))[:n_traj]
    srft("ingest", *map(str, files), "--out", str(work / "store"))
    srft("build", str(work / "store"), "--tokenizer", str(TOKENIZER), "--out", str(work / "build"), "--policy",
         "sft", "--max-length", str(max_length), "--truncation", "windows")
    ds = datasets.load_from_disk(str(work / "build" / "dataset"))
    ds.select(range(min(rows, len(ds)))).save_to_disk(str(work / "rows" / "dataset"))
    srft("models", "init", "--tokenizer", str(TOKENIZER), "--out", str(work / "model"), "--arch", "qwen2",
         "--preset", "tiny", "--set", "num_hidden_layers=1")
    return work / "rows", work / "model"


def train(work: Path, name: str, rows: Path, model: Path, flags: list[str], processes: int = 1) -> dict:
    out = work / "out" / name
    args = ["train", str(rows), "--model", str(model), "--out", str(out), "--full", "--seed", "0", "--lr", "1e-3",
            "--set", "loss_chunk_tokens=1024", *flags]  # [1024, 152k] logits chunks: 0.6 GB, 2 processes fit
    if processes == 1:
        cmd = [sys.executable, "-m", "srft", *args, "--json"]
    else:
        from srft.train.launch import free_port

        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(ROOT / "configs" / "accelerate" / "ddp.yaml"), "--num_processes", str(processes),
               "--mixed_precision", "no", "--main_process_port", str(free_port()), "-m", "srft", *args, "--json"]
    done = subprocess.run(cmd, env={**ENV, **({"OMP_NUM_THREADS": "1"} if processes > 1 else {})},
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    report = json.loads((out / "train_report.json").read_text())
    return {"case": name, "processes": report["world_size"], "steps": report["steps"],
            "tokens": report["tokens_seen"], "trained": report["trained_tokens"],
            "tokens_per_s": report["tokens_per_s"], "padding_share": report["padding_share"],
            "seconds": report["train_seconds"], "peak_rss_mb": [p["peak_rss_mb"] for p in report["processes"]],
            "final_loss": report["final_loss"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trajectories", type=int, default=6)
    parser.add_argument("--rows", type=int, default=24, help="first N windows of the build")
    parser.add_argument("--max-length", type=int, default=4096)
    parser.add_argument("--batch-tokens", type=int, default=8192)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
        work = Path(tmp)
        rows, model = prepare(work, args.trajectories, args.rows, args.max_length)
        t = str(args.batch_tokens)
        cases = [("1 process", ["--batch-size", "2", "--global-batch", "4"], 1),
                 ("2 processes", ["--batch-size", "2", "--global-batch", "4"], 2),
                 ("padded, random (--batch-size 4)", ["--batch-size", "4"], 1),
                 (f"padded, grouped (--batch-tokens {t})", ["--batch-tokens", t], 1),
                 (f"packed (--batch-tokens {t} --packing)", ["--batch-tokens", t, "--packing"], 1)]
        results = [train(work, f"case{i}", rows, model, flags, n) | {"case": name}
                   for i, (name, flags, n) in enumerate(cases)]
    print("| case | processes | steps | tokens | tokens/s | padding share | peak RSS (MB) | final loss |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['case']} | {r['processes']} | {r['steps']} | {r['tokens']:,} | {r['tokens_per_s']:,.0f} | "
              f"{r['padding_share']:.1%} | {', '.join(f'{m:,.0f}' for m in r['peak_rss_mb'])} | "
              f"{r['final_loss']:.4f} |")
    by = {r["case"]: r for r in results}
    one, two = by["1 process"], by["2 processes"]
    print(f"\n2 processes / 1 process tokens/s: {two['tokens_per_s'] / one['tokens_per_s']:.2f} "
          f"(same rows and losses: final loss {two['final_loss']:.6f} vs {one['final_loss']:.6f})")
    packed = results[-1]
    for r in results[2:4]:
        print(f"packed / {r['case']} tokens/s: {packed['tokens_per_s'] / r['tokens_per_s']:.2f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
