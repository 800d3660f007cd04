"""torchtune export: srft's token ids and labels + the dataset builder that hands them to a torchtune recipe.

torchtune tokenizes message by message with Python templates (not the HF chat template srft rendered): its
Qwen2.5 tokenizer drops the tool schemas from the system prompt, writes tool calls differently and trains the
role header and the newline after the end-of-turn token of every trained message, and its message validation
refuses tool results followed by an assistant turn. So `srft_torchtune.py` (a copy of `torchtune_dataset.py`)
builds a torchtune `SFTDataset` over `train.parquet` (`input_ids`, `labels`) that passes srft's tokens and mask
through, and `torchtune.yaml` is the `dataset:` section of a recipe config. torchtune's stock chat datasets find
no messages in `train.parquet` and fail.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from srft.dataset.exports import (ExportContext, final_dir, helper_source, lost_in_export, tokenizer_check,
                                  write_tokens)
from srft.io import atomic_write_text

HELPER = Path(__file__).with_name("torchtune_dataset.py")


def export(ctx: ExportContext, out: Path) -> dict[str, Any]:
    rows = write_tokens(ctx, out / "train.parquet")
    final = final_dir(out)
    atomic_write_text(out / "srft_torchtune.py", helper_source(
        HELPER, CHECK=tokenizer_check(ctx), DATA_FILES=str(final / "train.parquet")))
    section = {"dataset": {"_component_": "srft_torchtune.srft_dataset", "packed": False}}
    atomic_write_text(out / "torchtune.yaml", (
        "# srft build export for torchtune: the `dataset:` section of your recipe config (srft's token ids and\n"
        "# labels, used as they are; the recipe's tokenizer must be the model's own, which srft_dataset checks).\n"
        f"# Train: PYTHONPATH={final} tune run <recipe> --config <your config with this section>\n"
        + yaml.safe_dump(section, sort_keys=False)))
    return {"files": ["train.parquet", "srft_torchtune.py", "torchtune.yaml"], "rows": rows,
            "warnings": lost_in_export(ctx, "torchtune"),
            "train": f"PYTHONPATH={final} tune run <recipe> --config <your config, its dataset: section from "
                     "torchtune.yaml>"}
