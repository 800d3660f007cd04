"""verl export: srft's token ids and labels + the dataset class that hands them to verl's SFT trainer as they are.

verl's own multi-turn dataset renders each message alone with the chat template and trains whole assistant
messages (including the newline after the end-of-turn token), and it has no per-message loss flag: it cannot
train srft's mask. So `srft_verl.py` (a copy of `verl_dataset.py`) is a `data.custom_cls` dataset over
`train.parquet` (`input_ids`, `labels`), and `verl_overrides.txt` holds the Hydra overrides for verl's
`sft_trainer` (config `sft_trainer_engine`). With the stock dataset class the missing `messages` column fails.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from srft.dataset.exports import (ExportContext, final_dir, helper_source, longest, lost_in_export, model_dir,
                                  no_model_warning, tokenizer_check, write_tokens)
from srft.io import atomic_write_text

HELPER = Path(__file__).with_name("verl_dataset.py")


def export(ctx: ExportContext, out: Path) -> dict[str, Any]:
    rows = write_tokens(ctx, out / "train.parquet")
    atomic_write_text(out / "srft_verl.py", helper_source(HELPER, CHECK=tokenizer_check(ctx)))
    final = final_dir(out)
    overrides = [f"data.train_files={final / 'train.parquet'}",
                 f"data.custom_cls.path={final / 'srft_verl.py'}", "data.custom_cls.name=SrftSFTDataset",
                 f"data.max_length={max(longest(ctx.dataset), 1)}", "data.truncation=error"]
    if (model := model_dir(ctx)) is not None:
        overrides.append(f"model.path={model}")
    atomic_write_text(out / "verl_overrides.txt", "\n".join(overrides) + "\n")
    warnings = lost_in_export(ctx, "verl") + no_model_warning(ctx, "verl", "model.path", "verl_overrides.txt")
    return {"files": ["train.parquet", "srft_verl.py", "verl_overrides.txt"], "rows": rows, "warnings": warnings,
            "train": f"torchrun --standalone --nproc_per_node=N -m verl.trainer.sft_trainer "
                     f"$(cat {final / 'verl_overrides.txt'})"}
