"""The training configuration: one pydantic model, recorded verbatim in every output directory.

Pure (no torch): `srft --help` and recipe validation import this without loading the training stack.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

LossNorm = Literal["token", "sequence", "step"]

# Defaults when `lr` is left unset: LoRA adapters start at zero and tolerate ~10x the full fine-tuning rate.
DEFAULT_LR = {"lora": 2e-4, "full": 2e-5}


class TrainConfig(BaseModel):
    """Everything `srft train` needs besides the build dir and the output dir."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(..., description="Base model: a local Hugging Face model directory (weights + tokenizer).")
    method: Literal["lora", "full"] = Field("lora", description="Train LoRA adapters (PEFT) or every weight.")
    lora_r: int = Field(16, ge=1, description="LoRA rank.")
    lora_alpha: float = Field(32.0, gt=0, description="LoRA scaling numerator (effective scale alpha / r).")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    lora_targets: str | list[str] = Field("all-linear", description="PEFT target_modules: 'all-linear' or names.")

    epochs: float = Field(1.0, gt=0, description="Passes over the dataset (ignored when max_steps is set).")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps.")
    budget_tokens: int | None = Field(None, ge=1, description="Stop at the first optimizer step reaching this "
                                      "many tokens (see budget_unit); sets max_steps from the batch plan.")
    budget_unit: Literal["trained", "input"] = Field("trained", description="What budget_tokens counts: trained "
                                                     "(loss-bearing) tokens or all input tokens.")

    lr: float | None = Field(None, gt=0, description="Peak learning rate; unset: 2e-4 for LoRA, 2e-5 for full.")
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = Field(
        "cosine", description="Learning-rate schedule after warmup.")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="Fraction of steps spent warming up linearly.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, ge=0, description="Gradient clipping norm; 0 turns clipping off.")

    batch_size: int = Field(1, ge=1, description="Rows per micro-batch (when batch_tokens is unset).")
    batch_tokens: int | None = Field(None, ge=1, description="Padded tokens per micro-batch: rows are grouped by "
                                     "length and packed up to this budget (replaces batch_size).")
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step (per process).")
    global_batch: int | None = Field(None, ge=1, description="Rows per optimizer step over all processes "
                                     "(micro-batches with batch_tokens); sets grad_accum from the process count, "
                                     "so one config trains identically on 1 or N processes.")
    packing: bool = Field(False, description="Concatenate each micro-batch's rows into one sequence of at most "
                          "batch_tokens (no padding; positions restart and attention stays inside each row).")
    max_length: int | None = Field(None, ge=2, description="Truncate longer rows to this many tokens (counted).")

    loss_norm: LossNorm = Field("token", description="What the loss averages over in the global batch: trained "
                                "tokens, sequences, or steps (see docs/training.md).")
    skip_untrained_logits: bool = Field(True, description="Project through the LM head only at positions that "
                                        "carry loss (same loss; saves the logits of masked tokens).")
    loss_chunk_tokens: int = Field(4096, ge=1, description="Above this many trained tokens per micro-batch, the "
                                   "LM head + cross-entropy run in recomputed chunks (bounds logits memory).")

    bf16: bool = Field(False, description="bf16 mixed precision (autocast).")
    model_dtype: Literal["float32", "bfloat16", "auto"] = Field("float32", description="dtype the weights load in.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward to save memory.")
    attn_implementation: str = Field("sdpa", description="transformers attention backend (sdpa, eager, "
                                     "flash_attention_2).")
    seed: int = Field(0, description="Seed for data order, LoRA init and dropout: same seed, same losses.")

    save_steps: int | None = Field(None, ge=1, description="Checkpoint every N optimizer steps (for resume).")
    save_total_limit: int | None = Field(2, ge=1, description="Keep at most this many checkpoints.")

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.max_steps is not None and self.budget_tokens is not None:
            raise ValueError("set either max_steps or budget_tokens, not both")
        if self.global_batch is not None and self.grad_accum != 1:
            raise ValueError("set either grad_accum or global_batch, not both (global_batch derives grad_accum)")
        if self.global_batch is not None and self.global_batch % self.rows_per_micro_batch():
            raise ValueError(f"global_batch {self.global_batch} is not a multiple of batch_size {self.batch_size}")
        if self.packing and self.batch_tokens is None:
            raise ValueError("packing needs batch_tokens (the length of one packed sequence)")
        return self

    def rows_per_micro_batch(self) -> int:
        """What one micro-batch counts toward global_batch: batch_size rows, or 1 micro-batch with batch_tokens."""
        return 1 if self.batch_tokens is not None else self.batch_size

    def step_shape(self, world_size: int) -> tuple[int, int]:
        """(grad_accum per process, micro-batches per optimizer step over all processes) for `world_size`
        processes; ValueError (one line, saying what to set) when the processes cannot split global_batch."""
        if self.global_batch is None:
            return self.grad_accum, self.grad_accum * world_size
        slots = self.global_batch // self.rows_per_micro_batch()
        if slots % world_size:
            of = "" if self.batch_tokens is not None else \
                f" of {self.batch_size} row{'s' if self.batch_size > 1 else ''}"
            raise ValueError(f"global_batch {self.global_batch} cannot be split over {world_size} processes: its "
                             f"{slots} micro-batches{of} per step are not a multiple of {world_size}; set "
                             f"global_batch to a multiple of {world_size * self.rows_per_micro_batch()} or launch a "
                             f"process count that divides {slots}")
        return slots // world_size, slots

    def resolved_lr(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.method]


def parse_lora(spec: str) -> dict[str, float]:
    """`--lora r,alpha,dropout` (e.g. '16,32,0.05'; alpha and dropout optional) -> TrainConfig fields."""
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if not 1 <= len(parts) <= 3:
        raise ValueError(f"--lora expects 'r[,alpha[,dropout]]', got {spec!r}")
    try:
        out: dict[str, float] = {"lora_r": int(parts[0])}
        if len(parts) > 1:
            out["lora_alpha"] = float(parts[1])
        if len(parts) > 2:
            out["lora_dropout"] = float(parts[2])
    except ValueError as exc:
        raise ValueError(f"--lora expects numbers 'r[,alpha[,dropout]]', got {spec!r}") from exc
    return out


def config_from_cli(config_file: str | None, flags: dict[str, Any], sets: list[str] | None = None) -> TrainConfig:
    """`srft train`'s options merged in order: a --config file (YAML or JSON), then the flags given (None = not
    given; `lora` is 'r,alpha,dropout', `full` a bool, `lora_targets` comma-separated), then `--set key=value`."""
    from pathlib import Path

    from srft.config import apply_overrides, load_yaml, validate

    fields = load_yaml(Path(config_file).read_text(encoding="utf-8")) if config_file else {}
    if not isinstance(fields, dict):
        raise ValueError(f"--config {config_file}: expected a mapping of TrainConfig fields, got "
                         f"{type(fields).__name__}")
    flags = {k: v for k, v in flags.items() if v is not None}
    lora, full, targets = flags.pop("lora", None), flags.pop("full", False), flags.get("lora_targets")
    if full and lora:
        raise ValueError("--full and --lora exclude each other; give one")
    if targets and targets != "all-linear":
        flags["lora_targets"] = [t.strip() for t in targets.split(",") if t.strip()]
    fields.update(flags)
    if full:
        fields["method"] = "full"
    if lora:
        fields.update(method="lora", **parse_lora(lora))
    return validate(TrainConfig, apply_overrides(fields, sets or [], option="--set"))


def train_ok(report: dict[str, Any], skip_bad: bool = False) -> bool:
    """Full success: no dataset row was dropped as malformed (rows with nothing to train are fine), unless the
    user accepts drops with --skip-bad."""
    return skip_bad or not bad_drops(report)


def bad_drops(report: dict[str, Any]) -> dict[str, int]:
    """Dropped rows by reason, leaving out rows that simply had no trained tokens."""
    return {k: v for k, v in report["dataset"]["drops"].items() if k != "no_trained_tokens"}
