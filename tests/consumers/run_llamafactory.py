"""LLaMA-Factory's own SFT data path on srft's export (runs in .venv-consumers/llamafactory, never imports srft).

    python run_llamafactory.py JOB.json OUT.json

As `llamafactory-cli train llamafactory.yaml` does it (train/sft/workflow.py `run_sft`): get_train_args parses
the export's YAML (only output_dir is overridden), load_tokenizer, get_template_and_fix_tokenizer,
get_dataset(stage="sft"), and the SFTDataCollatorWith4DAttentionMask it trains with. Then the setting that must
fail: the same config without `tokenized_path` (LLaMA-Factory's own preprocessing of the named dataset), and
settings that must change nothing (`cutoff_len: 16`, `mask_history: true`).
"""

import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

import yaml
from llamafactory.data import SFTDataCollatorWith4DAttentionMask, get_dataset, get_template_and_fix_tokenizer
from llamafactory.extras.constants import IGNORE_INDEX
from llamafactory.hparams import get_train_args
from llamafactory.model import load_tokenizer

from consumer_io import failure, run_cases


def load(args: dict):
    model_args, data_args, training_args, _, _ = get_train_args({**args, "output_dir": tempfile.mkdtemp()})
    tokenizer_module = load_tokenizer(model_args)
    tokenizer = tokenizer_module["tokenizer"]
    vocab = len(tokenizer)
    template = get_template_and_fix_tokenizer(tokenizer, data_args)
    if len(tokenizer) != vocab:  # a template that adds tokens would shift nothing, but the model needs resizing
        raise ValueError(f"the template added {len(tokenizer) - vocab} token(s)")
    module = get_dataset(template, model_args, data_args, training_args, stage="sft", **tokenizer_module)
    collate = SFTDataCollatorWith4DAttentionMask(template=template, pad_to_multiple_of=8,
                                                 label_pad_token_id=IGNORE_INDEX, **tokenizer_module)
    return module["train_dataset"], collate


def case(spec: dict) -> dict:
    args = yaml.safe_load((Path(spec["export"]) / "llamafactory.yaml").read_text())
    dataset, collate = load(args)
    rows = []
    for i in range(len(dataset)):  # one sample per batch; cut the padding to a multiple of 8 off again
        batch = collate([dataset[i]])
        n = int(batch["attention_mask"][0].sum())
        rows.append({"input_ids": batch["input_ids"][0, :n].tolist(),
                     "trained": (batch["labels"][0, :n] != IGNORE_INDEX).int().tolist()})
    stock = {k: v for k, v in args.items() if k != "tokenized_path"}
    checks = {"without_tokenized_path": failure(lambda: load(stock))}
    # settings that re-cut or re-mask LLaMA-Factory's own preprocessing must leave the tokenized data alone
    cut, _ = load({**args, "cutoff_len": 16, "mask_history": True})
    rows_cut = [{"input_ids": r["input_ids"], "trained": [int(x != IGNORE_INDEX) for x in r["labels"]]} for r in cut]
    return {"rows": rows, "rows_cutoff_mask_history": rows_cut, "checks": checks}


if __name__ == "__main__":
    run_cases(sys.argv[1], sys.argv[2], case,
              {"llamafactory": version("llamafactory"), "transformers": version("transformers")})
