"""TRL export: the exact token ids and labels, as a Parquet file `SFTTrainer` uses as is.

TRL treats a dataset with an `input_ids` column as pre-tokenized and keeps a `labels` column unchanged (-100 =
no loss); its collator only pads. What TRL cannot take: per-token soft weights (trained at full weight; warned),
and its default `max_length=1024` would truncate our samples, so `sft_config.json` lists the settings to use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from srft.dataset.exports import ExportContext
from srft.dataset.exports import longest as longest_sample
from srft.io import atomic_write_json


def export(ctx: ExportContext, out: Path) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = ctx.dataset.select_columns(["input_ids", "labels"]).data.table
    table = pa.table({"input_ids": table.column("input_ids"), "labels": table.column("labels")})
    pq.write_table(table, out / "train.parquet")
    longest = longest_sample(ctx.dataset)
    atomic_write_json(out / "sft_config.json", {
        "max_length": longest,        # >= the longest sample: TRL truncates to max_length (default 1024)
        "packing": False,             # packing keeps labels, but bfd packing truncates overflowing rows
        "assistant_only_loss": False,  # the labels already hold the step masks
        "completion_only_loss": None,
        "dataset_kwargs": {},         # keep preparation: it reads `labels` as is
    })
    warnings = []
    if ctx.config.policy.soft:
        warnings.append("trl: soft label weights cannot be represented (TRL has no per-token weights); steps "
                        "with weight > 0 are trained at full weight. `srft train` uses loss_weights.")
    return {"files": ["train.parquet", "sft_config.json"], "rows": table.num_rows, "warnings": warnings,
            "load": "datasets.load_dataset('parquet', data_files='train.parquet')['train'] -> SFTTrainer"}
