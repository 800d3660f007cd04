"""axolotl's own data path on srft's axolotl export (runs in .venv-consumers/axolotl, never imports srft).

    python run_axolotl.py JOB.json OUT.json

As `axolotl train axolotl.yaml` does it: load_cfg reads and validates the export's YAML (only the scratch
output paths are overridden), load_datasets loads the tokenizer from `tokenizer_config` and prepares the
datasets, and axolotl's DataCollatorForSeq2Seq pads them. A second run adds the settings a chat-template user
would have (`type: chat_template`, `train_on_inputs: true`, `roles_to_train`): they must not change the labels.
"""

import sys
import tempfile
from importlib.metadata import version

from consumer_io import run_cases

IGNORE_INDEX = -100


def prepared(config: str, **overrides):
    from axolotl.cli.config import load_cfg
    from axolotl.common.datasets import load_datasets
    from axolotl.loaders import load_tokenizer
    from axolotl.utils.collators import DataCollatorForSeq2Seq

    tmp = tempfile.mkdtemp()
    cfg = load_cfg(config, output_dir=f"{tmp}/out", dataset_prepared_path=f"{tmp}/prepared", **overrides)
    data = load_datasets(cfg=cfg).train_dataset
    collate = DataCollatorForSeq2Seq(load_tokenizer(cfg), padding=True, label_pad_token_id=IGNORE_INDEX)
    rows = []
    for i in range(len(data)):  # one sample per batch: no padding to strip
        batch = collate([{k: data[i][k] for k in ("input_ids", "attention_mask", "labels")}])
        rows.append({"input_ids": batch["input_ids"][0].tolist(),
                     "trained": (batch["labels"][0] != IGNORE_INDEX).int().tolist()})
    return rows


def case(spec: dict) -> dict:
    config = f"{spec['export']}/axolotl.yaml"
    rows = prepared(config)
    import yaml

    raw = yaml.safe_load(open(config))
    raw["datasets"][0].update({"type": "chat_template", "roles_to_train": ["assistant"], "field_messages": "messages"})
    chat = prepared(config, datasets=raw["datasets"], train_on_inputs=True, chat_template="tokenizer_default")
    return {"rows": rows, "rows_chat_template_settings": chat, "checks": {}}


if __name__ == "__main__":
    run_cases(sys.argv[1], sys.argv[2], case, {"axolotl": version("axolotl"), "transformers": version("transformers")})
