"""TRL export: the exact token ids and labels, as a Parquet file `SFTTrainer` uses as is.

TRL treats a dataset with an `input_ids` column as pre-tokenized and keeps a `labels` column unchanged (-100 =
no loss); its collator only pads (packing and `completion_only_loss` keep the labels too; `assistant_only_loss`
refuses a tokenized dataset). Its default `max_length=1024` would truncate our samples, so both configs set it.
Files: `train.parquet`; `sft_config.json` (SFTConfig keyword arguments, for Python); `trl.yaml` (for the CLI:
`trl sft --config trl.yaml`, the dataset named through TRL's `datasets` list).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from srft.dataset.exports import (ExportContext, final_dir, longest, lost_in_export, model_dir, no_model_warning,
                                  write_tokens)
from srft.io import atomic_write_json, atomic_write_text


def export(ctx: ExportContext, out: Path) -> dict[str, Any]:
    rows = write_tokens(ctx, out / "train.parquet")
    settings = {
        "max_length": max(longest(ctx.dataset), 1),  # >= the longest sample: TRL truncates to max_length (default 1024)
        "packing": False,                    # bfd packing keeps labels but truncates rows longer than max_length
        "assistant_only_loss": False,        # the labels already hold the step masks
        "completion_only_loss": None,
        "dataset_kwargs": {},                # keep preparation: it reads `labels` as is
    }
    atomic_write_json(out / "sft_config.json", settings)
    cli: dict[str, Any] = {}
    if (model := model_dir(ctx)) is not None:
        cli["model_name_or_path"] = str(model)
    cli["datasets"] = [{"path": "parquet", "data_files": str(final_dir(out) / "train.parquet"), "split": "train"}]
    cli.update({k: v for k, v in settings.items() if k != "dataset_kwargs"})
    cli["output_dir"] = "srft-trl"
    atomic_write_text(out / "trl.yaml", "# srft build export for TRL: srft's token ids and labels, used as they are.\n"
                      "# Train: trl sft --config trl.yaml  (add your own hyperparameters)\n"
                      + yaml.safe_dump(cli, sort_keys=False))
    return {"files": ["train.parquet", "sft_config.json", "trl.yaml"], "rows": rows,
            "warnings": lost_in_export(ctx, "trl") + no_model_warning(ctx, "trl", "model_name_or_path", "trl.yaml"),
            "train": f"trl sft --config {final_dir(out) / 'trl.yaml'}"}
