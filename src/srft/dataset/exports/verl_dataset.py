"""srft -> verl: srft's token ids and labels as a verl SFT dataset, used as they are (never re-rendered).

`srft build --export verl` copies this file next to train.parquet as srft_verl.py (with CHECK filled in), and
verl_overrides.txt points verl's SFT trainer at it:
    data.custom_cls.path=<this file> data.custom_cls.name=SrftSFTDataset
verl's stock MultiTurnSFTDataset renders each message alone and trains every assistant turn (plus the newline
after its end-of-turn token); train.parquet has no `messages` column, so that setting fails at once instead of
training srft's masked steps. Items have MultiTurnSFTDataset's layout: with `data.pad_mode=no_padding` (verl's
default) input_ids, position_ids and loss_mask; with `right` also attention_mask, padded to data.max_length.
loss_mask[t] = 1 exactly where srft trains token t (verl's loss shifts it). Needs only torch and pyarrow.
"""

from __future__ import annotations

import pyarrow.parquet as pq
import torch
from torch.utils.data import Dataset

# The tokenizer srft built train.parquet with (written by srft build): ids of a probe text and of end-of-turn tokens.
CHECK = {}

IGNORE_INDEX = -100


def check_tokenizer(tokenizer) -> None:
    """Refuse a tokenizer other than srft's: the ids would mean other text."""
    if not CHECK:
        return
    probe = tokenizer.encode(CHECK["probe"], add_special_tokens=False)
    special = {t: tokenizer.convert_tokens_to_ids(t) for t in CHECK["special_ids"]}
    if probe != CHECK["probe_ids"] or special != CHECK["special_ids"]:
        raise ValueError(
            f"verl's tokenizer ({getattr(tokenizer, 'name_or_path', type(tokenizer).__name__)}) is not the one srft "
            f"built train.parquet with ({CHECK['tokenizer']}): set model.path to a model with that tokenizer, or "
            "rebuild with `srft build --tokenizer <your model> --export verl`")


class SrftSFTDataset(Dataset):
    """verl's custom dataset signature (see verl.trainer.sft_trainer.create_sft_dataset)."""

    def __init__(self, parquet_files, tokenizer, config=None, processor=None, max_samples: int = -1):
        config = config or {}
        check_tokenizer(tokenizer)
        files = [parquet_files] if isinstance(parquet_files, str) else list(parquet_files)
        self.input_ids, self.labels = [], []
        for path in files:
            table = pq.read_table(path, columns=["input_ids", "labels"])
            self.input_ids += table.column("input_ids").to_pylist()
            self.labels += table.column("labels").to_pylist()
        if max_samples is not None and 0 < max_samples < len(self.input_ids):
            self.input_ids, self.labels = self.input_ids[:max_samples], self.labels[:max_samples]
        self.pad_mode = str(config.get("pad_mode", "right"))
        self.max_length = int(config.get("max_length", 1024))
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        too_long = [len(ids) for ids in self.input_ids if len(ids) > self.max_length]
        if too_long:  # any truncation would change which of srft's tokens are trained: refuse it
            raise ValueError(
                f"{len(too_long)} srft sample(s) are longer than data.max_length={self.max_length} (longest "
                f"{max(too_long)}): set data.max_length={max(too_long)}, or rebuild with `srft build --max-length "
                f"{self.max_length}`")
        if self.pad_mode not in ("right", "no_padding"):
            raise ValueError(f"data.pad_mode={self.pad_mode}: SrftSFTDataset supports right and no_padding")

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        input_ids = torch.tensor(self.input_ids[item], dtype=torch.long)
        loss_mask = torch.tensor([int(label != IGNORE_INDEX) for label in self.labels[item]], dtype=torch.long)
        n = len(input_ids)
        if self.pad_mode == "no_padding":
            return {"input_ids": input_ids, "position_ids": torch.arange(n, dtype=torch.long), "loss_mask": loss_mask}
        pad = self.max_length - n
        return {
            "input_ids": torch.cat([input_ids, torch.full((pad,), self.pad_token_id, dtype=torch.long)]),
            "attention_mask": torch.cat([torch.ones(n, dtype=torch.long), torch.zeros(pad, dtype=torch.long)]),
            "position_ids": torch.cat([torch.arange(n, dtype=torch.long), torch.zeros(pad, dtype=torch.long)]),
            "loss_mask": torch.cat([loss_mask, torch.zeros(pad, dtype=torch.long)]),
        }
