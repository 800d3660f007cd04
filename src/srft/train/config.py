"""The training configuration: one pydantic model, recorded verbatim in every output directory.

Pure (no torch): `srft --help` and recipe validation import this without loading the training stack.
"""

from __future__ import annotations

from typing import Literal

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
        return self

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
