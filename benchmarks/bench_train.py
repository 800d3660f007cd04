"""Training throughput on CPU, all cases in one run on the same data and model:

  srft masked            srft train on SRFT-masked rows (defaults: LM head only at trained positions)
  srft masked full head  the same with skip_untrained_logits=False (logits for every position)
  srft unmasked          the same rows with every token trained (and again with the full head)
  trl defaults masked    TRL SFTTrainer, SFTConfig defaults (bf16 autocast, activation checkpointing), same rows

Each case runs one epoch in its own process (so peak RSS is that case's own) and reports non-padding input
tokens per second of `trainer.train()` (wall clock, and per CPU-second of the process, which other jobs on a shared
machine disturb far less); cases are repeated in interleaved rounds and ratios are medians of per-round ratios.
Goals: masked >= 0.97x unmasked; srft >= 2x TRL defaults; the selective LM head is kept only if it pays.

    .venv/bin/python benchmarks/bench_train.py                     # tiny Llama (preset small, vocab 8192)
    .venv/bin/python benchmarks/bench_train.py --model .cache/models/smollm2-135m-instruct --rows 16 --max-len 512
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

import numpy as np

CASES = ("srft_masked", "srft_masked_full_head", "srft_unmasked", "srft_unmasked_full_head", "trl_defaults_masked")


def make_rows(n: int, vocab: int, min_len: int, max_len: int, seed: int = 0) -> list[dict]:
    """SRFT-shaped rows: untrained prompt (~15%), then steps of assistant text (trained, or masked with p=0.3)
    alternating with untrained observations; about 40% of tokens end up trained."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        length = int(rng.integers(min_len, max_len + 1))
        ids = rng.integers(4, vocab, length).tolist()
        labels = [-100] * length
        pos = int(length * 0.15)
        while pos < length:
            step = int(rng.integers(20, 80))
            if rng.random() > 0.3:
                labels[pos:pos + step] = ids[pos:pos + step]
            pos += step + int(rng.integers(20, 80))
        rows.append({"input_ids": ids, "labels": labels[:length]})
    return rows


def prepare(work: Path, args) -> Path:
    import datasets

    from srft.train.models import InitConfig, init_model, make_word_tokenizer

    if args.model:
        model = Path(args.model)
        from transformers import AutoConfig

        vocab = AutoConfig.from_pretrained(model).vocab_size
    else:
        make_word_tokenizer(work / "tok", args.vocab - 4)
        init_model(work / "tok", work / "model", InitConfig(preset=args.preset, seed=0))
        model, vocab = work / "model", args.vocab
    rows = make_rows(args.rows, vocab, args.min_len, args.max_len)
    datasets.Dataset.from_list(rows).save_to_disk(str(work / "masked" / "dataset"))
    unmasked = [{"input_ids": r["input_ids"], "labels": list(r["input_ids"])} for r in rows]
    datasets.Dataset.from_list(unmasked).save_to_disk(str(work / "unmasked" / "dataset"))
    return model


class Clock:
    """Times trainer.train() alone (not model loading or saving) the same way for both trainers: wall seconds
    and CPU seconds of this process (all threads). CPU time is far less disturbed by other jobs on a shared box."""

    def __init__(self):
        from transformers import TrainerCallback

        clock = self

        class _CB(TrainerCallback):
            def on_train_begin(self, *a, **k):
                clock.wall, clock.cpu = time.perf_counter(), time.process_time()

            def on_train_end(self, *a, **k):
                clock.wall, clock.cpu = time.perf_counter() - clock.wall, time.process_time() - clock.cpu

        self.callback, self.wall, self.cpu = _CB(), 0.0, 0.0


def run_case(case: str, work: Path, model: Path, args) -> dict:
    """One case in this process; returns tokens/s (wall and CPU), peak RSS, final loss."""
    import resource

    import datasets

    tokens = sum(len(r) for r in datasets.load_from_disk(str(work / "masked" / "dataset"))["input_ids"])
    clock = Clock()
    if case.startswith("srft"):
        from srft.train import TrainConfig, run_train

        build = work / ("unmasked" if case.startswith("srft_unmasked") else "masked")
        config = TrainConfig(model=str(model), method=args.method, batch_size=args.batch, epochs=1, lr=1e-4,
                             skip_untrained_logits=not case.endswith("full_head"))
        loss = run_train(build, work / f"out-{case}", config, callbacks=[clock.callback])["final_loss"]
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from trl import SFTConfig, SFTTrainer

        sft = SFTConfig(output_dir=str(work / f"out-{case}"), use_cpu=True, per_device_train_batch_size=args.batch,
                        num_train_epochs=1, learning_rate=1e-4, report_to="none", save_strategy="no",
                        logging_steps=1, disable_tqdm=True)
        model_obj = AutoModelForCausalLM.from_pretrained(model)
        if args.method == "lora":
            from peft import LoraConfig, get_peft_model

            model_obj = get_peft_model(model_obj, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05,
                                                             target_modules="all-linear", task_type="CAUSAL_LM"))
        trainer = SFTTrainer(model=model_obj, args=sft, processing_class=AutoTokenizer.from_pretrained(model),
                             train_dataset=datasets.load_from_disk(str(work / "masked" / "dataset")),
                             callbacks=[clock.callback])
        trainer.train()
        loss = [e["loss"] for e in trainer.state.log_history if "loss" in e][-1]
    return {"case": case, "tokens": tokens, "seconds": round(clock.wall, 2), "cpu_seconds": round(clock.cpu, 2),
            "tokens_per_s": round(tokens / clock.wall, 1), "tokens_per_cpu_s": round(tokens / clock.cpu, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "final_loss": round(loss, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--min-len", type=int, default=256)
    parser.add_argument("--max-len", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--preset", default="small", help="random student size when --model is not given")
    parser.add_argument("--vocab", type=int, default=8192, help="random student vocabulary")
    parser.add_argument("--model", help="an existing HF model dir instead of a random student")
    parser.add_argument("--method", default="full", choices=["full", "lora"])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (every case once per round)")
    parser.add_argument("--out", help="also write the JSON result here")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.case:  # child process: one case
        print(json.dumps(run_case(args.case, Path(args.work), Path(args.model_dir), args)))
        return
    with tempfile.TemporaryDirectory(prefix="bench_train-") as tmp:
        work = Path(tmp)
        model = prepare(work, args)
        runs: dict[str, list[dict]] = {}
        for _ in range(args.repeats):  # interleaved, so a burst of load on a shared machine hits every case
            for case in args.cases.split(","):
                cmd = [sys.executable, __file__, "--case", case, "--work", str(work), "--model-dir", str(model),
                       "--batch", str(args.batch), "--method", args.method]
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode:
                    sys.exit(f"case {case} failed:\n{done.stderr[-3000:]}")
                runs.setdefault(case, []).append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(json.dumps(runs[case][-1]), file=sys.stderr)
    summary = _summary(runs, args)
    print(json.dumps(summary, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")


PAIRS = {"masked_vs_unmasked": ("srft_masked", "srft_unmasked"),
         "masked_vs_unmasked_both_full_head": ("srft_masked_full_head", "srft_unmasked_full_head"),
         "srft_vs_trl_defaults": ("srft_masked", "trl_defaults_masked"),
         "selective_head_vs_full_head": ("srft_masked", "srft_masked_full_head")}


def _summary(runs: dict[str, list[dict]], args) -> dict:
    """Ratios are taken within each round (cases of a round ran back to back) and the median over rounds is
    reported, for wall-clock and for CPU-time throughput."""
    import statistics

    import torch

    ratios = {}
    for name, (a, b) in PAIRS.items():
        if a in runs and b in runs:
            for key in ("tokens_per_s", "tokens_per_cpu_s"):
                per_round = [ra[key] / rb[key] for ra, rb in zip(runs[a], runs[b])]
                ratios.setdefault(name, {})[key] = {"median": round(statistics.median(per_round), 3),
                                                   "rounds": [round(r, 3) for r in per_round]}
    goals = {}
    for name, floor in (("masked_vs_unmasked", 0.97), ("srft_vs_trl_defaults", 2.0)):
        if name in ratios:
            goals[f"{name} >= {floor}"] = {k: v["median"] >= floor for k, v in ratios[name].items()}
    results = {case: {"median_tokens_per_s": statistics.median(r["tokens_per_s"] for r in rs),
                      "median_tokens_per_cpu_s": statistics.median(r["tokens_per_cpu_s"] for r in rs),
                      "peak_rss_mb": max(r["peak_rss_mb"] for r in rs), "final_loss": rs[0]["final_loss"],
                      "rounds": rs} for case, rs in runs.items()}
    setup = {k: getattr(args, k) for k in ("rows", "min_len", "max_len", "batch", "preset", "vocab", "model",
                                           "method", "repeats")}
    setup.update(torch_threads=torch.get_num_threads(), cpus=os.cpu_count())
    return {"setup": setup, "results": results, "ratios": ratios, "goals": goals}


if __name__ == "__main__":
    main()
