"""Training with step masks: `transformers.Trainer` + our collator + exact loss normalisation.

    from srft.train import TrainConfig, run_train
    report = run_train("runs/x/build", "runs/x/train", TrainConfig(model=".cache/models/smollm2-135m-instruct"))

Modules: `config` (TrainConfig, pure), `data` (validation, loss coefficients, collator, packing), `plan` (the
global batch plan and each process's share of it), `launch` (what `accelerate launch` asked for, checked before the
model loads), `loss` (masked weighted cross-entropy inside the model's forward), `trainer` (the Trainer subclass),
`report` (report, loss-curve PNG), `run` (run_train). `accelerate launch -m srft train ...` runs `srft train`
on every process (`python -m srft` is the `srft` command). Importing this package loads no torch.
"""

from __future__ import annotations

from typing import Any

from srft.train.config import LossNorm, TrainConfig, parse_lora

__all__ = ["LossNorm", "TrainConfig", "TrainError", "build_trainer", "parse_lora", "run_train"]


def __getattr__(name: str) -> Any:  # torch-heavy names load on first use
    if name in ("run_train", "build_trainer", "TrainError"):
        from srft.train import run

        return getattr(run, name)
    raise AttributeError(f"module 'srft.train' has no attribute {name!r}")
