"""LLaMA-Factory export: srft's token ids and labels as a tokenized dataset (`tokenized_path`), plus a config.

LLaMA-Factory loads a dataset saved at `tokenized_path` as it is and skips its own preprocessing (its Python chat
templates, `mask_history`, `cutoff_len`, the alternation rules): the only way it trains exactly srft's tokens, since
its templates render tool calls, tool results and end-of-turn tokens differently from the HF chat template srft
used. No `template:` is written: LLaMA-Factory then parses the tokenizer's own chat template (for inference),
adding no token. Without the tokenized data the named dataset does not exist: the config fails instead of
re-rendering.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from srft.dataset.exports import ExportContext, final_dir, lost_in_export, model_dir, no_model_warning, token_table
from srft.io import atomic_write_text

DATASET = "srft_pretokenized"
HEADER = """\
# srft build export for LLaMA-Factory: srft's token ids and labels, loaded as they are from tokenized_path
# (LLaMA-Factory then ignores dataset, template and cutoff_len for the training data).
# Train: llamafactory-cli train llamafactory.yaml  (the hyperparameters below are a starting point: tune them)
"""


def export(ctx: ExportContext, out: Path) -> dict[str, Any]:
    import datasets

    table = token_table(ctx, attention_mask=True)
    data = datasets.Dataset(datasets.table.InMemoryTable(table), split=datasets.Split.TRAIN,
                            fingerprint=f"{ctx.dataset._fingerprint}-llamafactory")
    datasets.DatasetDict({"train": data}).save_to_disk(str(out / "tokenized"), num_shards={"train": 1})
    config: dict[str, Any] = {}
    if (model := model_dir(ctx)) is not None:
        config["model_name_or_path"] = str(model)
    config.update({
        "stage": "sft", "do_train": True, "finetuning_type": "lora", "lora_target": "all",
        "tokenized_path": str(final_dir(out) / "tokenized"),
        # LLaMA-Factory wants a dataset name to train; with tokenized_path it never reads it, and without the
        # tokenized data it fails on this folder's missing dataset_info.json instead of re-rendering anything
        "dataset": DATASET, "dataset_dir": str(final_dir(out)),
        "output_dir": "saves/srft-llamafactory",
        "per_device_train_batch_size": 1, "gradient_accumulation_steps": 8, "learning_rate": 1.0e-5,
        "num_train_epochs": 1.0,
    })
    atomic_write_text(out / "llamafactory.yaml", HEADER + yaml.safe_dump(config, sort_keys=False))
    warnings = lost_in_export(ctx, "llamafactory") + no_model_warning(ctx, "llamafactory", "model_name_or_path",
                                                                      "llamafactory.yaml")
    return {"files": ["tokenized/", "llamafactory.yaml"], "rows": table.num_rows, "warnings": warnings,
            "train": f"llamafactory-cli train {final_dir(out) / 'llamafactory.yaml'}"}
