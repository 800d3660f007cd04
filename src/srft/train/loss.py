"""The masked, weighted cross-entropy, computed inside the model's forward.

`add_selective_head(model)` patches the causal LM's forward (once, before PEFT wraps it) so that
`model(input_ids, attention_mask, srft_head=HeadInputs(...))` runs the backbone, projects through the LM head only
the hidden states of positions that carry loss, and returns their summed weighted cross-entropy as `.loss`.
Doing this *inside* forward (TRL's fused-head idea, without its CPU-slow kernel) keeps DDP, FSDP and ZeRO-3
correct: the head is called as a module during the root forward, where sharded parameters are gathered.
Without `srft_head` the forward is the original one, so `generate` and saving are untouched.

Shapes: B rows, T positions, H hidden, V vocab, K selected positions.
  rows, cols [K]   prediction positions (cols in 0..T-2 predicts token cols+1 of row `rows`)
  targets    [K]   the token ids to predict;  coef [K] their loss coefficients (see data.py)
"""

from __future__ import annotations

import functools
import types
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint
from transformers.modeling_outputs import CausalLMOutput

from srft.dataset.masks import IGNORE_INDEX


@dataclass
class HeadInputs:
    """Which positions to score and how (see the module docstring for shapes)."""

    rows: torch.Tensor
    cols: torch.Tensor
    targets: torch.Tensor
    coef: torch.Tensor
    full_logits: bool = False  # True: logits and CE at every position (the reference path the benchmark times)
    chunk: int = 4096          # above this K, score in recomputed chunks so [K, V] logits never coexist


def select_positions(labels: torch.Tensor, coef: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Unshifted labels/coef [B, T] -> (rows, cols, targets, coef) of every position that carries loss."""
    shifted_coef = coef[:, 1:]
    rows, cols = (shifted_coef != 0).nonzero(as_tuple=True)
    return rows, cols, labels[:, 1:][rows, cols], shifted_coef[rows, cols]


def _weighted_ce(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor,
                 coef: torch.Tensor) -> torch.Tensor:
    logits = head(hidden).float()  # CE in fp32 even under bf16 autocast, like HF's ForCausalLMLoss
    return (F.cross_entropy(logits, targets, reduction="none") * coef.float()).sum()


def _dense_loss(logits: torch.Tensor, h: HeadInputs) -> torch.Tensor:
    """The no-skipping reference: CE over every position of logits [B, T-1, V] (ignored ones skipped by the
    kernel's ignore_index), as HF's own loss computes it; coefficients scattered back to [B, T-1]."""
    targets = torch.full(logits.shape[:2], IGNORE_INDEX, dtype=torch.long, device=logits.device)
    targets[h.rows, h.cols] = h.targets
    coef = torch.zeros(logits.shape[:2], dtype=torch.float32, device=logits.device)
    coef[h.rows, h.cols] = h.coef.float()
    ce = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="none")
    return (ce * coef.flatten()).sum()


def head_loss(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor, coef: torch.Tensor,
              chunk: int) -> torch.Tensor:
    """sum_k coef[k] * CE(head(hidden[k]), targets[k]); hidden [K, H]."""
    if hidden.shape[0] <= chunk:
        return _weighted_ce(head, hidden, targets, coef)
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, hidden.shape[0], chunk):
        sl = slice(start, start + chunk)
        # Non-reentrant checkpoint: this chunk's [chunk, V] logits are freed after forward and rebuilt in backward.
        total = total + checkpoint(_weighted_ce, head, hidden[sl], targets[sl], coef[sl], use_reentrant=False)
    return total


def add_selective_head(model: torch.nn.Module) -> None:
    """Patch `model.forward` to accept `srft_head=HeadInputs(...)` (idempotent)."""
    if getattr(model, "_srft_selective_head", False):
        return
    original_forward = model.forward
    # Heads that scale or soft-cap their logits (Gemma 2, Cohere, Granite, ...) are left to the model's own forward:
    # we then take its full logits and select, which is exact for any architecture.
    text_config = model.config.get_text_config()
    own_head = any(getattr(text_config, key, None) not in (None, 1.0) for key in (
        "final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling"))

    @functools.wraps(type(model).forward)
    def forward(self, *args, srft_head: HeadInputs | None = None, **kwargs):
        if srft_head is None:
            return original_forward(*args, **kwargs)
        if kwargs.pop("labels", None) is not None:
            raise ValueError("pass targets through srft_head, not labels")
        for key in ("num_items_in_batch", "logits_to_keep"):
            kwargs.pop(key, None)
        kwargs["use_cache"] = False
        h = srft_head
        if own_head:
            loss = _dense_loss(original_forward(*args, **kwargs).logits[:, :-1], h)
        elif h.full_logits:
            hidden = self.base_model(*args, **kwargs).last_hidden_state  # [B, T, H]
            loss = _dense_loss(self.get_output_embeddings()(hidden[:, :-1]), h)
        else:
            hidden = self.base_model(*args, **kwargs).last_hidden_state
            loss = head_loss(self.get_output_embeddings(), hidden[h.rows, h.cols], h.targets, h.coef, h.chunk)
        return CausalLMOutput(loss=loss)

    model.forward = types.MethodType(forward, model)
    model._srft_selective_head = True
