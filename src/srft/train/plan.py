"""Batch plans: which rows form each micro-batch and each optimizer step, on one process or on N.

The *global plan* depends on the row lengths, the seed and the epoch only: a list of micro-batches (lists of
dataset row indices) per epoch. Optimizer step k takes micro-batches [k*S, (k+1)*S) of it, S = micro-batches per
step = grad_accum x processes, so step k trains the same rows whether one process accumulates S micro-batches or
N processes accumulate S/N each. `ProcessPlan` is one process's view: in step k, process p takes slots
p, p+N, p+2N, ... of the step's S slots. The last step of an epoch may have fewer micro-batches than slots; the
empty slots get FILLER micro-batches (two padding tokens, no loss), so every process runs the same number of
forward passes (DDP, FSDP and ZeRO-3 communicate inside each one) and no row is trained twice. (accelerate's own
sharding evens the processes out by repeating rows from the start of the epoch instead.)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from srft.train.data import DatasetError

FILLER = -1  # the one index of a filler micro-batch: [FILLER]
PLAN_FILE = "srft_plan.json"  # in every checkpoint: the plan and launch it belongs to (checked on --resume)


class BatchPlan:
    """The global plan: deterministic micro-batches of dataset indices.

    batch_size mode: a fresh seeded permutation per epoch, cut into batch_size rows.
    batch_tokens mode: rows sorted by length (seeded tie-break) and grouped greedily while the micro-batch's
    tokens stay within batch_tokens: rows x longest when padded, the sum of lengths when `packed` (a longer row is
    a micro-batch alone). The grouping is fixed, so every epoch has the same number of micro-batches (the Trainer
    sizes its schedule from that), and only their order is reshuffled.
    """

    def __init__(self, lengths: Sequence[int], *, batch_size: int = 1, batch_tokens: int | None = None,
                 seed: int = 0, packed: bool = False):
        self.lengths, self.batch_size, self.batch_tokens, self.seed = list(lengths), batch_size, batch_tokens, seed
        self.packed = packed
        self.epoch = 0
        self._fixed = self._group() if batch_tokens is not None else None

    def _group(self) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, 1 << 20])
        order = sorted(range(len(self.lengths)), key=lambda i: (self.lengths[i], rng.random()))
        batches, current, longest, total = [], [], 0, 0
        for i in order:
            n = self.lengths[i]
            cost = total + n if self.packed else max(longest, n) * (len(current) + 1)
            if current and cost > self.batch_tokens:
                batches.append(current)
                current, longest, total = [], 0, 0
            current.append(i)
            longest, total = max(longest, n), total + n
        if current:
            batches.append(current)
        return batches

    def batches(self, epoch: int) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, epoch])
        if self._fixed is not None:
            return [self._fixed[j] for j in rng.permutation(len(self._fixed))]
        perm = rng.permutation(len(self.lengths)).tolist()
        return [perm[k:k + self.batch_size] for k in range(0, len(perm), self.batch_size)]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches(self.epoch))

    def __len__(self) -> int:
        return len(self._fixed) if self._fixed is not None else -(-len(self.lengths) // self.batch_size)


class ProcessPlan:
    """One process's micro-batches (a DataLoader batch_sampler): `grad_accum` per optimizer step, fillers in the
    empty slots of an epoch's last step. `per_step` = grad_accum x world_size."""

    def __init__(self, plan: BatchPlan, per_step: int, world_size: int = 1, rank: int = 0):
        if per_step % world_size:
            raise ValueError(f"{per_step} micro-batches per step cannot be split over {world_size} processes")
        self.plan, self.per_step, self.world_size, self.rank = plan, per_step, world_size, rank
        self.epoch = 0

    @property
    def steps_per_epoch(self) -> int:
        return -(-len(self.plan) // self.per_step)

    def batches(self, epoch: int) -> list[list[int]]:
        batches = self.plan.batches(epoch)
        mine = []
        for step in range(self.steps_per_epoch):
            for slot in range(self.rank, self.per_step, self.world_size):
                k = step * self.per_step + slot
                mine.append(batches[k] if k < len(batches) else [FILLER])
        return mine

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches(self.epoch))

    def __len__(self) -> int:
        return self.steps_per_epoch * self.per_step // self.world_size


def steps_for_budget(plan: BatchPlan, tokens: Sequence[int], budget: int, batches_per_step: int,
                     max_epochs: int = 100_000) -> tuple[int, int]:
    """Optimizer steps until the cumulative `tokens` (per dataset row) first reach `budget`, walking the plan's
    epochs in order; returns (steps, tokens those steps consume). Exact because the plan is deterministic."""
    total, steps = 0, 0
    for epoch in range(max_epochs):
        batches = plan.batches(epoch)
        for k in range(0, len(batches), batches_per_step):
            total += sum(tokens[i] for b in batches[k:k + batches_per_step] for i in b)
            steps += 1
            if total >= budget:
                return steps, total
    raise DatasetError(f"budget of {budget} tokens not reached in {max_epochs} epochs")
