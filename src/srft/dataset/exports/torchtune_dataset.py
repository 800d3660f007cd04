"""srft -> torchtune: srft's token ids and labels as a torchtune SFTDataset, used as they are (never re-rendered).

`srft build --export torchtune` copies this file next to train.parquet as srft_torchtune.py (with CHECK and
DATA_FILES filled in). In a recipe config (recipes call the dataset component with their tokenizer first):

    dataset:
      _component_: srft_torchtune.srft_dataset
      packed: false

and run with PYTHONPATH=<this folder>. torchtune's own message transforms and model tokenizers render chat turns
with Python templates that differ from the HF chat template srft used (tool schemas, tool calls, trained role
headers), so the rows go through torchtune's SFTDataset as tokens + mask: labels = tokens where srft trains, else
-100. The recipe's tokenizer is only checked to be srft's (same ids for a probe text and the end-of-turn tokens).
"""

from __future__ import annotations

import pyarrow.compute as pc
import pyarrow.parquet as pq
from torchtune.datasets import PackedDataset, SFTDataset

# The tokenizer srft built train.parquet with, and where train.parquet is (written by srft build).
CHECK = {}
DATA_FILES = ""

IGNORE_INDEX = -100


def check_tokenizer(tokenizer) -> None:
    """Refuse a tokenizer other than srft's: the ids would mean other text."""
    if not CHECK:
        return
    probe = tokenizer.encode(CHECK["probe"], add_bos=False, add_eos=False)
    special = {t: getattr(tokenizer, "special_tokens", {}).get(t) for t in CHECK["special_ids"]}
    if probe != CHECK["probe_ids"] or special != CHECK["special_ids"]:
        raise ValueError(
            f"the recipe's tokenizer ({type(tokenizer).__name__}) is not the one srft built train.parquet with "
            f"({CHECK['tokenizer']}): use that model's tokenizer, or rebuild with `srft build --tokenizer <your "
            "model> --export torchtune`")


class SrftTokens:
    """Message transform: a train.parquet row -> tokens + mask (True = no loss), with no `messages` to re-render."""

    def __call__(self, sample):
        return {"tokens": list(sample["input_ids"]), "mask": [label == IGNORE_INDEX for label in sample["labels"]]}


class Unchanged:
    """Model transform: the tokens are final (SFTDataset needs one to turn the mask into labels)."""

    def __call__(self, sample):
        return sample


def srft_dataset(tokenizer, *, data_files: str = DATA_FILES, packed: bool = False, split: str = "train"):
    """The dataset a torchtune recipe builds with `config.instantiate(cfg.dataset, tokenizer)`."""
    check_tokenizer(tokenizer)
    ds = SFTDataset(source="parquet", data_files=data_files, split=split, message_transform=SrftTokens(),
                    model_transform=Unchanged())
    if not packed:  # the tokens are final: unpacked rows are never cut, whatever tokenizer.max_seq_len says
        return ds
    limit = getattr(tokenizer, "max_seq_len", None)
    if limit is None:
        raise ValueError("packed=True needs tokenizer.max_seq_len (the pack size)")
    files = [data_files] if isinstance(data_files, str) else list(data_files)
    longest = max((pc.max(pc.list_value_length(pq.read_table(f, columns=["input_ids"]).column(0))).as_py() or 0
                   for f in files), default=0)
    if longest > limit:  # a sample that fits no pack: say which option to change
        raise ValueError(f"srft's longest sample has {longest} tokens > tokenizer.max_seq_len={limit} (the pack "
                         f"size): raise tokenizer.max_seq_len, or rebuild with `srft build --max-length {limit}`")
    return PackedDataset(ds, max_seq_len=limit, split_across_pack=False)
