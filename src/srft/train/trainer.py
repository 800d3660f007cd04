"""`transformers.Trainer` with our batch plan, our collator and an exact loss normalisation.

The one idea: a micro-batch returns sum_p c[p] * CE_p divided by the number of units (tokens, sequences or steps,
see data.py) in the *whole optimizer step*: every micro-batch of the accumulation and every process. The Trainer
counts that denominator before the step's first forward (`_get_num_items_in_batch`, the hook HF uses for
`num_items_in_batch`), so the accumulated gradient equals the gradient of one big batch, whatever the split.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch.utils.data import DataLoader
from transformers import Trainer, TrainerCallback

from srft.train.loss import HeadInputs, select_positions

BATCH_KEYS = ("labels", "loss_coef", "n_units", "n_trained", "n_input")


class SRFTTrainer(Trainer):
    """Trainer whose loss is already normalised over the global batch (so it must not be divided again)."""

    loss_is_scaled_for_ga = True

    def __init__(self, *args: Any, plan, full_logits: bool = False, loss_chunk_tokens: int = 4096, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.plan = plan
        self.full_logits, self.loss_chunk_tokens = full_logits, loss_chunk_tokens
        self._pending = torch.zeros(2, dtype=torch.float64)  # [input tokens, trained tokens] since the last log
        self.tokens_seen, self.trained_seen = 0, 0            # cumulative over all processes (restored on resume)
        self.session_tokens, self.session_seconds = 0, 0.0
        self._session_start: float | None = None

    def get_train_dataloader(self) -> DataLoader:
        loader = DataLoader(self.train_dataset, batch_sampler=self.plan, collate_fn=self.data_collator,
                            num_workers=self.args.dataloader_num_workers)
        return self.accelerator.prepare(loader)

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
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], srft_head=head)
        denom = num_items_in_batch if num_items_in_batch is not None else inputs["n_units"]
        loss = outputs.loss / torch.as_tensor(denom, dtype=torch.float32, device=outputs.loss.device).clamp(min=1)
        if self.args.world_size > 1:
            # The denominator counts every process's units, and DDP/FSDP/ZeRO average gradients over processes.
            loss = loss * self.args.world_size
        if model.training:
            self._pending += torch.tensor([float(inputs["n_input"]), float(inputs["n_trained"])], dtype=torch.float64)
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training log: add global cumulative token counts
            pending = self._pending.to(self.args.device)
            if self.args.world_size > 1:
                pending = self.accelerator.reduce(pending, reduction="sum")
            self.tokens_seen += int(pending[0].item())
            self.trained_seen += int(pending[1].item())
            self.session_tokens += int(pending[0].item())
            self._pending.zero_()
            logs["input_tokens"], logs["trained_tokens"] = self.tokens_seen, self.trained_seen
        super().log(logs, start_time)


class SessionClock(TrainerCallback):
    """Restores the cumulative token counts on resume and times this session's training (for tokens/s)."""

    def __init__(self, trainer: SRFTTrainer):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        for entry in reversed(state.log_history):
            if "trained_tokens" in entry:
                self.trainer.tokens_seen = int(entry["input_tokens"])
                self.trainer.trained_seen = int(entry["trained_tokens"])
                break
        self.trainer._session_start = time.perf_counter()

    def on_train_end(self, args, state, control, **kwargs):
        if self.trainer._session_start is not None:
            self.trainer.session_seconds = time.perf_counter() - self.trainer._session_start


class ConsoleProgress(TrainerCallback):
    """One line per optimizer step on the given rich console (stderr in --json mode; HF's own printers write
    to stdout, which --json reserves for the result object)."""

    def __init__(self, console, every: int = 1):
        self.console, self.every = console, max(1, every)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs or state.global_step % self.every:
            return
        self.console.print(f"step {state.global_step}/{state.max_steps}  loss {logs['loss']:.4f}  "
                           f"lr {logs.get('learning_rate', 0):.2e}  trained tokens {logs.get('trained_tokens', 0)}")
