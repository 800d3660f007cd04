"""verl's own SFT data path on srft's verl export (runs in .venv-consumers/verl, never imports srft).

    python run_verl.py JOB.json OUT.json

As verl.trainer.sft_trainer does it: Hydra composes `sft_trainer_engine` with the export's verl_overrides.txt,
HFModelConfig loads the tokenizer from model.path, create_sft_dataset builds the dataset (the export's
data.custom_cls), and verl's SFTTensorCollator batches it. Then the settings that must fail: verl's stock
dataset class, another model's tokenizer, a data.max_length that would truncate.
"""

import sys
from importlib.metadata import version
from pathlib import Path

from hydra import compose, initialize_config_module
from verl.trainer.sft_trainer import create_sft_dataset
from verl.utils.config import omega_conf_to_dataclass
from verl.utils.dataset.dataset_utils import SFTTensorCollator

from consumer_io import failure, run_cases


def compose_config(export: Path, extra: list[str]):
    overrides = (export / "verl_overrides.txt").read_text().split()
    with initialize_config_module("verl.trainer.config", version_base=None):
        return compose("sft_trainer_engine", overrides=overrides + extra)


def load(export: Path, extra: list[str] = ()):
    cfg = compose_config(export, list(extra))
    model = omega_conf_to_dataclass(cfg.model)  # HFModelConfig: loads the tokenizer from model.path
    dataset = create_sft_dataset(cfg.data.train_files, cfg.data, model.tokenizer, model.processor)
    return cfg, dataset


def case(spec: dict) -> dict:
    export = Path(spec["export"])
    cfg, dataset = load(export)
    batch = SFTTensorCollator(cfg.data.pad_mode)([dataset[i] for i in range(len(dataset))])
    rows = [{"input_ids": ids.tolist(), "trained": mask.tolist()}
            for ids, mask in zip(batch["input_ids"].unbind(), batch["loss_mask"].unbind())]
    longest = max(len(r["input_ids"]) for r in rows)
    checks = {
        "stock_dataset_class": failure(lambda: load(export, ["data.custom_cls.path=null"])[1][0]),
        "other_tokenizer": failure(lambda: load(export, [f"model.path={spec['other_model']}"])),
        "truncating_max_length": failure(lambda: load(export, [f"data.max_length={longest - 1}"])),
    }
    return {"rows": rows, "checks": checks, "dataset_class": type(dataset).__name__}


if __name__ == "__main__":
    run_cases(sys.argv[1], sys.argv[2], case, {"verl": version("verl"), "transformers": version("transformers")})
