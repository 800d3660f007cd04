"""What a training run leaves behind besides the weights: the report dict, the loss-curve PNG, resource peaks."""

from __future__ import annotations

import hashlib
import json
import resource
from pathlib import Path
from typing import Any

from srft.io import atomic_path


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def peak_gpu_mb() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    return round(torch.cuda.max_memory_allocated() / 2**20, 1)


def dataset_fingerprint(path: Path) -> str:
    """Fingerprint of a saved HF dataset: datasets' own fingerprint(s) from state.json plus the file sizes (cheap:
    no hashing of gigabytes of Arrow)."""
    parts = []
    for state in sorted(path.rglob("state.json")):
        data = json.loads(state.read_text(encoding="utf-8"))
        parts.append(f"{state.relative_to(path)}:{data.get('_fingerprint')}")
    for arrow in sorted(path.rglob("*.arrow")):
        parts.append(f"{arrow.relative_to(path)}:{arrow.stat().st_size}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def loss_curve(log_history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per logged optimizer step: step, loss, learning rate, grad norm, cumulative counts over every
    process (input tokens, trained tokens, rows)."""
    keep = ("step", "loss", "learning_rate", "grad_norm", "input_tokens", "trained_tokens", "rows", "epoch")
    return [{k: entry[k] for k in keep if k in entry} for entry in log_history if "loss" in entry]


def plot_loss(curve: list[dict[str, Any]], path: Path, title: str) -> None:
    """Training loss against optimizer step (and trained tokens on the top axis), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    steps = [e["step"] for e in curve]
    ax.plot(steps, [e["loss"] for e in curve], marker="o" if len(curve) < 40 else None, lw=1.5)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (per the loss_norm mode)")
    fig.suptitle(title, fontsize=9)
    ax.grid(alpha=0.3)
    if curve and curve[-1].get("trained_tokens"):
        top = ax.secondary_xaxis("top", functions=(
            lambda s: s * curve[-1]["trained_tokens"] / max(curve[-1]["step"], 1),
            lambda t: t * max(curve[-1]["step"], 1) / curve[-1]["trained_tokens"]))
        top.set_xlabel("trained tokens (approx.)", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    plt.close(fig)


def _numel(p) -> int:
    return int(getattr(p, "ds_numel", 0) or p.numel())  # ZeRO-3 leaves an empty placeholder in p itself


def build_report(prepared, config, out: Path, checkpoint: Path | None) -> dict[str, Any]:
    """train_report.json. Counts are sums over every process (equal to a one-process run on the same plan);
    tokens/s is the whole job's; `processes` lists each process's peaks. Every process must call this."""
    from accelerate.utils import gather_object

    import srft
    from srft.train.launch import describe

    trainer, check = prepared.trainer, prepared.check
    curve = loss_curve(trainer.state.log_history)
    params = list(trainer.model.parameters())
    seconds, seen = trainer.session_seconds, trainer.seen
    processes = gather_object([{"rank": trainer.args.process_index, "peak_rss_mb": peak_rss_mb(),
                                "peak_gpu_mb": peak_gpu_mb()}])
    step = prepared.record["plan"]
    batch = {"micro_batches": step["micro_batches_per_step"], "grad_accum": trainer.args.gradient_accumulation_steps,
             "batch_size": step["batch_size"], "batch_tokens": step["batch_tokens"], "packing": step["packing"],
             "rows": step["micro_batches_per_step"] * step["batch_size"] if step["batch_size"] else None}
    return {
        "srft_version": srft.__version__, "out_dir": str(out), "config": config.model_dump(mode="json"),
        "resolved": {"lr": config.resolved_lr(), "max_steps": trainer.state.max_steps,
                     "world_size": trainer.args.world_size, "device": str(trainer.args.device),
                     "grad_accum": trainer.args.gradient_accumulation_steps,
                     "micro_batches_per_step": step["micro_batches_per_step"],
                     "micro_batches_per_epoch": len(trainer.plan),
                     "launch": describe(trainer.accelerator, trainer.args)},
        "dataset": {"path": str(prepared.dataset_dir), "fingerprint": step["dataset"],
                    "rows": prepared.rows_total, "rows_trained": len(check.kept),
                    "drops": dict(sorted(check.drops.items())), "drop_examples": check.examples,
                    "truncated_rows": check.truncated, "tokens": sum(check.lengths),
                    "trained_tokens": sum(check.trained)},
        "model": {"path": str(Path(config.model).resolve()), "method": config.method,
                  "parameters": sum(_numel(p) for p in params),
                  "trainable_parameters": sum(_numel(p) for p in params if p.requires_grad)},
        "budget": prepared.budget, "resumed_from": str(checkpoint) if checkpoint else None,
        "world_size": trainer.args.world_size, "global_batch": batch,
        "steps": trainer.state.global_step, "epochs": trainer.state.epoch,
        "rows_seen": seen["n_rows"], "tokens_seen": seen["n_input"], "trained_tokens": seen["n_trained"],
        "padding_share": round(1 - seen["n_input"] / seen["n_positions"], 4) if seen["n_positions"] else None,
        "train_seconds": round(seconds, 3),
        "tokens_per_s": round(trainer.session_tokens / seconds, 1) if seconds else None,
        "peak_rss_mb": max(p["peak_rss_mb"] for p in processes),
        "peak_gpu_mb": max((p["peak_gpu_mb"] for p in processes if p["peak_gpu_mb"] is not None), default=None),
        "processes": processes,
        "first_loss": curve[0]["loss"] if curve else None, "final_loss": curve[-1]["loss"] if curve else None,
        "loss_curve": curve,
    }


def summary_line(report: dict[str, Any], out: str | Path) -> str:
    """The console's closing line: what was trained, by how many processes, how fast."""
    data, batch = report["dataset"], report["global_batch"]
    unit = f"{batch['rows']} rows" if batch["rows"] else f"{batch['micro_batches']} micro-batches"
    procs = report["world_size"]
    rss = ", ".join(f"{p['peak_rss_mb']:.0f}" for p in report["processes"])
    gpu = [p["peak_gpu_mb"] for p in report["processes"] if p["peak_gpu_mb"] is not None]
    return (f"trained {report['steps']} steps on {data['rows_trained']}/{data['rows']} rows with {procs} "
            f"process{'es' if procs > 1 else ''} (global batch {unit}): loss {report['first_loss']:.4f} -> "
            f"{report['final_loss']:.4f}, {report['trained_tokens']} trained of {report['tokens_seen']} tokens, "
            f"{report['tokens_per_s']} tokens/s, peak RSS {rss} MB"
            + (f", peak GPU {', '.join(f'{g:.0f}' for g in gpu)} MB" if gpu else "") + f" -> {out}")


def print_summary(report: dict[str, Any], out: str | Path, console) -> None:
    """The closing line, then one line per reason rows were dropped (in colour when it fails the run)."""
    from srft.console import say
    from srft.train.config import bad_drops

    data = report["dataset"]
    say(console, summary_line(report, out))
    for reason, count in data["drops"].items():
        say(console, f"dropped {count} row(s): {reason} (e.g. rows {data['drop_examples'][reason]})",
            "yellow" if reason in bad_drops(report) else None)


def json_summary(report: dict[str, Any], out: str | Path) -> dict[str, Any]:
    """The `--json` object: the report without its loss curve (that is in train_report.json)."""
    return {**{k: v for k, v in report.items() if k != "loss_curve"}, "report": str(Path(out) / "train_report.json")}
