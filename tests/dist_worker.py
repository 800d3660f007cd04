"""Run by tests/test_train_dist.py under `accelerate launch` (2 CPU processes over gloo): every case of a JSON
spec in turn, in one process group, so one launch checks many configurations.

A case: {"build": dir, "out": dir, "config": TrainConfig fields, "resume": bool, "crash_after": step or null,
"grads": file or null}. `crash_after` raises in every process at the start of that step (the run leaves
OUT.partial with its checkpoints); `grads` saves the first optimizer step's full gradients (rank 0 writes).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from transformers import TrainerCallback

from srft.train import TrainConfig, run_train


class SimulatedCrash(RuntimeError):
    pass


class CrashAt(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise SimulatedCrash(f"simulated crash at step {self.step}")


class FirstGrads(TrainerCallback):
    """The gradients the optimizer sees in step 1 (after the all-reduce; FSDP2 shards are gathered)."""

    def __init__(self, path: str):
        self.path, self.done = path, False

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        import torch

        if self.done:
            return
        self.done = True
        grads = {}
        for name, p in model.named_parameters():
            if p.grad is not None:
                g = p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad
                grads[name] = g.detach().clone()
        if state.is_world_process_zero:
            torch.save(grads, self.path)


def main(spec_path: str) -> None:
    for case in json.loads(Path(spec_path).read_text())["cases"]:
        callbacks = []
        if case.get("crash_after"):
            callbacks.append(CrashAt(case["crash_after"]))
        if case.get("grads"):
            callbacks.append(FirstGrads(case["grads"]))
        try:
            run_train(case["build"], case["out"], TrainConfig(**case["config"]), resume=case.get("resume", False),
                      callbacks=callbacks)
        except SimulatedCrash:
            pass
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    # Every case is written and the group is gone: leave without the interpreter's teardown. DeepSpeed 0.19.8 on
    # CPU aborted once ("terminate called without an active exception", SIGABRT) in C++ destructors at exit,
    # after a run whose outputs were all complete; that says nothing about training.
    print("dist_worker: all cases done", flush=True)
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1])
