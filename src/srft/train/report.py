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
    """One entry per logged optimizer step: step, loss, learning rate, grad norm, cumulative token counts."""
    keep = ("step", "loss", "learning_rate", "grad_norm", "input_tokens", "trained_tokens", "epoch")
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
