"""`transformers.Trainer` with our batch plan, our collator and an exact loss normalisation.

The one idea: a micro-batch returns sum_p c[p] * CE_p divided by the number of units (tokens, sequences or steps,
see data.py) in the *whole optimizer step*: every micro-batch of the accumulation and every process. The Trainer
counts that denominator before the step's first forward (`_get_num_items_in_batch`, the hook HF uses for
`num_items_in_batch`), so the accumulated gradient equals the gradient of one big batch, whatever the split.
Which rows a process sees is ours too (plan.py): accelerate's sharding would repeat rows to even out processes.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from transformers import Trainer, TrainerCallback

from srft.train.loss import HeadInputs, select_positions
from srft.train.plan import PLAN_FILE

MODEL_KEYS = ("input_ids", "attention_mask", "position_ids")
COUNTS = ("n_input", "n_trained", "n_positions", "n_rows")  # summed over processes in every training log


class SRFTTrainer(Trainer):
    """Trainer whose loss is already normalised over the global batch (so it must not be divided again)."""

    loss_is_scaled_for_ga = True

    def __init__(self, *args: Any, plan, per_step: int, full_logits: bool = False, loss_chunk_tokens: int = 4096,
                 **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.plan, self.per_step = plan, per_step
        self.full_logits, self.loss_chunk_tokens = full_logits, loss_chunk_tokens
        self._pending = torch.zeros(len(COUNTS), dtype=torch.float64)  # COUNTS since the last log, this process
        self.seen = dict.fromkeys(COUNTS, 0)                              # cumulative, all processes (resumable)
        self.session_tokens, self.session_seconds = 0, 0.0
        self._session_start: float | None = None

    @property
    def tokens_seen(self) -> int:
        return self.seen["n_input"]

    @property
    def trained_seen(self) -> int:
        return self.seen["n_trained"]

    def get_train_dataloader(self):
        from accelerate.data_loader import DataLoaderShard

        from srft.train.data import PlanRows
        from srft.train.plan import ProcessPlan

        # Not `accelerator.prepare(loader)`: that re-shards the batch sampler round-robin and repeats rows.
        sampler = ProcessPlan(self.plan, self.per_step, self.args.world_size, self.args.process_index)
        return DataLoaderShard(PlanRows(self.train_dataset), device=self.args.device, batch_sampler=sampler,
                               collate_fn=self.data_collator, num_workers=self.args.dataloader_num_workers)

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device) -> torch.Tensor | None:
        if not batch_samples:
            return None
        units = torch.stack([b["n_units"].to(device) for b in batch_samples]).sum()
        if self.args.world_size > 1:
            units = self.accelerator.reduce(units, reduction="sum")
        return units

    def compute_loss(self, model, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: torch.Tensor | None = None):
        rows, cols, targets, coef = select_positions(inputs["labels"], inputs["loss_coef"])
        head = HeadInputs(rows=rows, cols=cols, targets=targets, coef=coef, full_logits=self.full_logits,
                          chunk=self.loss_chunk_tokens)
        outputs = model(**{k: inputs[k] for k in MODEL_KEYS if k in inputs}, srft_head=head)
        denom = num_items_in_batch if num_items_in_batch is not None else inputs["n_units"]
        loss = outputs.loss / torch.as_tensor(denom, dtype=torch.float32, device=outputs.loss.device).clamp(min=1)
        if self.args.world_size > 1:
            # The denominator counts every process's units, and DDP/FSDP/ZeRO average gradients over processes.
            loss = loss * self.args.world_size
        if model.training:
            self._pending += torch.tensor([float(inputs[k]) for k in COUNTS], dtype=torch.float64)
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training log: add global cumulative token counts
            pending = self._pending.to(self.args.device)
            if self.args.world_size > 1:
                pending = self.accelerator.reduce(pending, reduction="sum")
            for key, value in zip(COUNTS, pending.tolist(), strict=True):
                self.seen[key] += int(value)
            self.session_tokens += int(pending[0].item())
            self._pending.zero_()
            logs["input_tokens"], logs["trained_tokens"] = self.seen["n_input"], self.seen["n_trained"]
            logs["positions"], logs["rows"] = self.seen["n_positions"], self.seen["n_rows"]
        super().log(logs, start_time)


class SessionClock(TrainerCallback):
    """Restores the cumulative counts on resume and times this session's training (for tokens/s)."""

    def __init__(self, trainer: SRFTTrainer):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        for entry in reversed(state.log_history):
            if "trained_tokens" in entry:
                self.trainer.seen.update(n_input=int(entry["input_tokens"]), n_trained=int(entry["trained_tokens"]),
                                         n_positions=int(entry.get("positions", 0)), n_rows=int(entry.get("rows", 0)))
                break
        self.trainer._session_start = time.perf_counter()

    def on_train_end(self, args, state, control, **kwargs):
        if self.trainer._session_start is not None:
            self.trainer.session_seconds = time.perf_counter() - self.trainer._session_start


class ConsoleProgress(TrainerCallback):
    """One line per optimizer step on the given rich console (stderr in --json mode; HF's own printers write
    to stdout, which --json reserves for the result object). Only the main process prints."""

    def __init__(self, console, every: int = 1):
        self.console, self.every = console, max(1, every)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs or state.global_step % self.every or not state.is_world_process_zero:
            return
        self.console.print(f"step {state.global_step}/{state.max_steps}  loss {logs['loss']:.4f}  "
                           f"lr {logs.get('learning_rate', 0):.2e}  trained tokens {logs.get('trained_tokens', 0)}")


class PlanRecord(TrainerCallback):
    """Writes the batch plan and launch into every checkpoint (`srft_plan.json`), so `--resume` can refuse a
    checkpoint that this run would not continue exactly, before any model loads."""

    def __init__(self, record: dict[str, Any]):
        self.record = record

    def on_save(self, args, state, control, **kwargs):
        from pathlib import Path

        from srft.io import atomic_write_json

        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and folder.is_dir():
            atomic_write_json(folder / PLAN_FILE, self.record)

