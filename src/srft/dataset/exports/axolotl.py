"""axolotl export: srft's token ids and labels as a pre-tokenized dataset, plus a config that trains on it.

axolotl uses a dataset whose rows hold `input_ids`, `attention_mask` and `labels` as they are: that check comes
before any prompt strategy, so no `type:`, `train_on_inputs` or chat-template setting can re-render the rows or
re-derive the labels. `tokenizer_config` names srft's tokenizer, the one these ids belong to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from srft.dataset.exports import (ExportContext, final_dir, longest, lost_in_export, model_dir, no_model_warning,
                                  write_tokens)
from srft.io import atomic_write_text

HEADER = """\
# srft build export for axolotl: srft's token ids and labels, pre-tokenized (axolotl keeps them as they are).
# Train: axolotl train axolotl.yaml  (the hyperparameters below are a starting point: tune them)
"""


def export(ctx: ExportContext, out: Path) -> dict[str, Any]:
    rows = write_tokens(ctx, out / "train.parquet", attention_mask=True)
    tokenizer = str(Path(ctx.config.tokenizer).resolve())
    config: dict[str, Any] = {}
    if (model := model_dir(ctx)) is not None:
        config["base_model"] = str(model)
    config.update({
        "tokenizer_config": tokenizer,
        "sequence_len": max(longest(ctx.dataset), 1),  # axolotl drops rows longer than this
        "datasets": [{"path": str(final_dir(out) / "train.parquet"), "ds_type": "parquet", "split": "train"}],
        "micro_batch_size": 1, "gradient_accumulation_steps": 8, "num_epochs": 1, "learning_rate": 1.0e-5,
        "output_dir": "./outputs/srft-axolotl",
    })
    atomic_write_text(out / "axolotl.yaml", HEADER + yaml.safe_dump(config, sort_keys=False))
    return {"files": ["train.parquet", "axolotl.yaml"], "rows": rows,
            "warnings": lost_in_export(ctx, "axolotl") + no_model_warning(ctx, "axolotl", "base_model", "axolotl.yaml"),
            "train": f"axolotl train {final_dir(out) / 'axolotl.yaml'}"}
