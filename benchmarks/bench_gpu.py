"""GPU training throughput and memory: `srft train` vs TRL `SFTTrainer` on the same rows, bf16, one GPU.

Prepared for a lent GPU machine and run there in one call (it has NOT run yet: no GPU was lent to the work that
wrote it; see benchmarks/README.md). Model: a random-init Qwen2 with Qwen2.5-0.5B's shape (hidden 896, 24 layers,
14/2 heads, FFN 4864) around the Qwen2.5-Coder tokenizer from ../shared, so nothing is downloaded. Rows: the
`--truncation windows` samples of real trajectories (../shared, mini-swe-agent Gemini 3 Pro) at --max-length 4096,
`--policy sft`; TRL gets the same rows as input_ids + labels (what `srft build --export trl` writes).

Cases (each in its own process, so peak GPU memory is the case's own), all bf16 weights and autocast, full
fine-tuning, lr 1e-5, 1 epoch over --rows rows:
  srft                   --batch-tokens T (length-grouped, padded)
  srft_ckpt              + --gradient-checkpointing
  srft_packed            --batch-tokens T --packing (flash-attention varlen when flash_attn is installed, else SDPA)
  srft_packed_ckpt       + --gradient-checkpointing
  trl                    SFTTrainer, per_device_train_batch_size --trl-batch, padded
  trl_ckpt               + gradient_checkpointing
  trl_padding_free       + padding_free=True (TRL's packing of a batch into one sequence with position_ids)
Reported: real (non-padding) tokens per second of `trainer.train()`, peak GPU memory (torch.cuda.max_memory_allocated),
final loss. `--smoke` runs every case on CPU in fp32 with a 2-layer model and 4 rows, to check the script.

    .venv/bin/python benchmarks/bench_gpu.py --out $OUT/bench_gpu.json       # on the GPU machine (~10 min on an H100)
    .venv/bin/python benchmarks/bench_gpu.py --smoke                          # here: the script runs end to end
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SRFT_SHARED", ROOT.parent / "shared"))
TRAJ = SHARED / "data" / "trajectories" / "mini-swe-agent_gemini-3-pro-preview_verified"
TOKENIZER = SHARED / "data" / "tokenizers" / "qwen2.5-coder-instruct"
QWEN2_05B = {"hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
             "intermediate_size": 4864}
SMOKE = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
         "intermediate_size": 128}
CASES = ("srft", "srft_ckpt", "srft_packed", "srft_packed_ckpt", "trl", "trl_ckpt", "trl_padding_free")


def prepare(work: Path, args) -> Path:
    import datasets

    from srft.train.models import InitConfig, init_model

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    files = sorted(TRAJ.glob("*.traj.json"))[:args.trajectories]
    for cmd in (["ingest", *map(str, files), "--out", str(work / "store")],
                ["build", str(work / "store"), "--tokenizer", str(TOKENIZER), "--out", str(work / "build"),
                 "--policy", "sft", "--max-length", str(args.max_length), "--truncation", "windows"]):
        done = subprocess.run([sys.executable, "-m", "srft", *cmd, "--json"], env=env, capture_output=True,
                              text=True, check=False)
        if done.returncode:
            raise SystemExit(f"srft {cmd[0]} failed:\n{done.stderr[-2000:]}")
    rows = datasets.load_from_disk(str(work / "build" / "dataset")).select_columns(["input_ids", "labels"])
    rows.select(range(min(args.rows, len(rows)))).save_to_disk(str(work / "rows" / "dataset"))
    init_model(TOKENIZER, work / "model", InitConfig(arch="qwen2", preset="base", seed=0,
                                                     overrides=SMOKE if args.smoke else QWEN2_05B))
    return work / "model"


class Clock:
    """Wall time of trainer.train() alone, the same way for both trainers."""

    def __init__(self):
        from transformers import TrainerCallback

        clock = self

        class _CB(TrainerCallback):
            def on_train_begin(self, *a, **k):
                _sync()
                clock.start = time.perf_counter()

            def on_train_end(self, *a, **k):
                _sync()
                clock.seconds = time.perf_counter() - clock.start

        self.callback, self.start, self.seconds = _CB(), 0.0, 0.0


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _attn() -> str:
    import importlib.util

    import torch

    return "flash_attention_2" if torch.cuda.is_available() and importlib.util.find_spec("flash_attn") else "sdpa"


def run_case(case: str, work: Path, args) -> dict:
    import datasets
    import torch

    gpu = torch.cuda.is_available() and not args.smoke
    rows = datasets.load_from_disk(str(work / "rows" / "dataset"))
    tokens = sum(len(r) for r in rows["input_ids"])
    clock, ckpt = Clock(), case.endswith("_ckpt")
    if case.startswith("srft"):
        from srft.train import TrainConfig, run_train

        config = TrainConfig(model=str(work / "model"), method="full", lr=1e-5, epochs=1, bf16=gpu,
                             model_dtype="bfloat16" if gpu else "float32", batch_tokens=args.batch_tokens,
                             packing="packed" in case, gradient_checkpointing=ckpt, attn_implementation=_attn())
        report = run_train(work / "rows", work / f"out-{case}", config, callbacks=[clock.callback])
        loss, padding = report["final_loss"], report["padding_share"]
        tokens = report["tokens_seen"]  # what srft trained on: rows it drops (nothing to train) do not count
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from trl import SFTConfig, SFTTrainer

        sft = SFTConfig(output_dir=str(work / f"out-{case}"), use_cpu=not gpu, bf16=gpu, num_train_epochs=1,
                        per_device_train_batch_size=args.trl_batch, learning_rate=1e-5, report_to="none",
                        save_strategy="no", logging_steps=1, disable_tqdm=True, gradient_checkpointing=ckpt,
                        padding_free=case.endswith("padding_free"), max_length=None, seed=0)
        model = AutoModelForCausalLM.from_pretrained(work / "model", dtype=torch.bfloat16 if gpu else torch.float32,
                                                     attn_implementation=_attn())
        trainer = SFTTrainer(model=model, args=sft, train_dataset=rows, callbacks=[clock.callback],
                             processing_class=AutoTokenizer.from_pretrained(work / "model"))
        trainer.train()
        loss, padding = [e["loss"] for e in trainer.state.log_history if "loss" in e][-1], None
    return {"case": case, "tokens": tokens, "seconds": round(clock.seconds, 2),
            "tokens_per_s": round(tokens / clock.seconds, 1), "padding_share": padding,
            "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if gpu else None,
            "final_loss": round(loss, 4), "attn": _attn(), "device": torch.cuda.get_device_name() if gpu else "cpu"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trajectories", type=int, default=20)
    parser.add_argument("--rows", type=int, default=64, help="first N windows of the build")
    parser.add_argument("--max-length", type=int, default=4096)
    parser.add_argument("--batch-tokens", type=int, default=16384)
    parser.add_argument("--trl-batch", type=int, default=4)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--smoke", action="store_true", help="CPU, fp32, 2-layer model, 4 rows: checks the script")
    parser.add_argument("--out", help="also write the JSON result here")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.smoke:
        args.trajectories, args.rows, args.batch_tokens = 2, 4, 8192
    if args.case:  # child process: one case
        print(json.dumps(run_case(args.case, Path(args.work), args)))
        return
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_gpu-") as tmp:
        work = Path(tmp)
        prepare(work, args)
        for case in args.cases.split(","):
            cmd = [sys.executable, __file__, "--case", case, "--work", str(work), *sys.argv[1:]]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode:
                results.append({"case": case, "error": done.stderr.strip().splitlines()[-1][:300]})
            else:
                results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(results[-1]), file=sys.stderr)
    print("| case | tokens/s | peak GPU MB | padding share | final loss |\n|---|---|---|---|---|")
    for r in results:
        if "error" in r:
            print(f"| {r['case']} | failed: {r['error']} | | | |")
        else:
            pad = "" if r["padding_share"] is None else f"{r['padding_share']:.1%}"
            print(f"| {r['case']} | {r['tokens_per_s']:,.0f} | {r['peak_gpu_mb']} | {pad} | {r['final_loss']} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
