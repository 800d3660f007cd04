"""torchtune's own SFT data path on srft's torchtune export (runs in .venv-consumers/torchtune, never imports srft).

    python run_torchtune.py JOB.json OUT.json

As torchtune's recipes do it (recipes/full_finetune_single_device.py `_setup_data`): the tokenizer and the
dataset are built with `config.instantiate` (the dataset section read from the export's torchtune.yaml, the
export folder on sys.path as PYTHONPATH would put it), batches come from `padded_collate_sft`, and packed
batches from `PackedDataset` + `padded_collate_packed`. Job cases carry "tokenizer"/"other_tokenizer": the
`tokenizer:` config sections of the model and of a model with another tokenizer.
"""

import sys
from importlib.metadata import version
from pathlib import Path

from omegaconf import OmegaConf
from torchtune import config
from torchtune.data import padded_collate_packed, padded_collate_sft

from consumer_io import failure, run_cases

IGNORE_INDEX = -100


def dataset_section(export: Path, **changes):
    section = OmegaConf.load(export / "torchtune.yaml").dataset
    return OmegaConf.merge(section, changes)


def rows_of(tokens, labels) -> list[dict]:
    return [{"input_ids": t.tolist(), "trained": (lab != IGNORE_INDEX).int().tolist()} for t, lab in zip(tokens, labels)]


def case(spec: dict) -> dict:
    export = Path(spec["export"])
    sys.path.insert(0, str(export))  # what PYTHONPATH=<export> does for `tune run`
    sys.modules.pop("srft_torchtune", None)  # each case's export has its own copy
    tokenizer = config.instantiate(OmegaConf.create(spec["tokenizer"]))
    dataset = config.instantiate(dataset_section(export), tokenizer)
    rows = []
    for i in range(len(dataset)):  # one sample per batch: no padding to strip
        batch = padded_collate_sft([dataset[i]], padding_idx=tokenizer.pad_id, ignore_idx=IGNORE_INDEX)
        rows += rows_of(batch["tokens"], batch["labels"])
    longest = max(len(r["input_ids"]) for r in rows)
    packed_tok = config.instantiate(OmegaConf.create({**spec["tokenizer"], "max_seq_len": longest}))
    packs = config.instantiate(dataset_section(export, packed=True), packed_tok)
    packed = []  # each pack with its sample lengths (a last one is the padding)
    for i in range(len(packs)):
        batch = padded_collate_packed([packs[i]])
        packed.append({**rows_of(batch["tokens"], batch["labels"])[0], "seq_lens": packs[i]["seq_lens"].tolist()})
    short_tok = config.instantiate(OmegaConf.create({**spec["tokenizer"], "max_seq_len": longest - 1}))
    checks = {
        "stock_chat_dataset": failure(lambda: config.instantiate(OmegaConf.create({
            "_component_": "torchtune.datasets.chat_dataset", "source": "parquet",
            "data_files": str(export / "train.parquet"), "split": "train", "conversation_column": "messages",
            "conversation_style": "openai"}), tokenizer)[0]),
        "other_tokenizer": failure(lambda: config.instantiate(
            dataset_section(export), config.instantiate(OmegaConf.create(spec["other_tokenizer"])))),
        "pack_smaller_than_a_sample": failure(lambda: config.instantiate(dataset_section(export, packed=True),
                                                                         short_tok)),
    }
    short = config.instantiate(dataset_section(export), short_tok)  # unpacked: max_seq_len cuts nothing
    rows_short = []
    for i in range(len(short)):
        batch = padded_collate_sft([short[i]], padding_idx=tokenizer.pad_id, ignore_idx=IGNORE_INDEX)
        rows_short += rows_of(batch["tokens"], batch["labels"])
    sys.path.remove(str(export))
    return {"rows": rows, "rows_short_max_seq_len": rows_short, "packed": packed, "checks": checks}


if __name__ == "__main__":
    run_cases(sys.argv[1], sys.argv[2], case, {"torchtune": version("torchtune"), "torchao": version("torchao")})
