"""Exports, srft's side: every export holds exactly the built ids and labels, its config names real paths and the
model (no placeholders), and what a format cannot carry is warned with a count. Each trainer's own data code
runs on the exports in tests/test_consumers.py."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from srft.dataset.build import BuildConfig, run_build
from srft.dataset.exports import EXPORTERS, partial_weight_tokens
from srft.dataset.masks import IGNORE_INDEX
from srft.dataset.render import load_tokenizer
from srft.policy import PolicyConfig

from conftest import TOKENIZER_DIR
from test_build import store  # noqa: F401 (fixture)
from test_masks import real_trajs  # noqa: F401 (fixture)

QWEN = TOKENIZER_DIR / "qwen2.5-coder-instruct"
EXPORTS = sorted(EXPORTERS)
CONFIGS = {"trl": "trl.yaml", "axolotl": "axolotl.yaml", "llamafactory": "llamafactory.yaml",
           "verl": "verl_overrides.txt", "torchtune": "torchtune.yaml"}
MODEL_KEYS = {"trl": "model_name_or_path", "axolotl": "base_model", "llamafactory": "model_name_or_path",
              "verl": "model.path"}


def model_folder(tokenizer: Path, out: Path) -> Path:
    """What users pass as --tokenizer: a model folder (its tokenizer files + config.json)."""
    out.mkdir(parents=True)
    for f in tokenizer.iterdir():
        shutil.copy(f, out / f.name)
    (out / "config.json").write_text(json.dumps({"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"]}))
    return out


@pytest.fixture(scope="module")
def built(store, tmp_path_factory):  # noqa: F811
    """family of builds over the same store: `model` (--tokenizer is a model folder) and `bare` (tokenizer only)."""
    import datasets

    data, labels, _ = store
    root = tmp_path_factory.mktemp("built")
    out = {}
    for kind, tokenizer in (("model", model_folder(QWEN, root / "student")), ("bare", QWEN)):
        config = BuildConfig(tokenizer=str(tokenizer), exports=EXPORTS, policy=PolicyConfig(
            name="srft", mask_labels=["mistake", "unnecessary"], label_on_resolved=True))
        report = run_build(data, root / kind, config, annotations=labels)
        out[kind] = (root / kind, report, datasets.load_from_disk(str(root / kind / "dataset")), tokenizer)
    return out


def test_every_export_holds_exactly_the_built_ids_and_labels(built):
    import datasets
    import pyarrow.parquet as pq

    out, report, ds, _ = built["model"]
    want = {"input_ids": ds["input_ids"], "labels": ds["labels"]}
    assert any(IGNORE_INDEX in labels and any(x != IGNORE_INDEX for x in labels) for labels in ds["labels"])
    for name in ("trl", "axolotl", "verl", "torchtune"):
        table = pq.read_table(out / "exports" / name / "train.parquet")
        assert {k: table.column(k).to_pylist() for k in want} == want, name
    axolotl = pq.read_table(out / "exports/axolotl/train.parquet")
    assert [len(m) for m in axolotl.column("attention_mask").to_pylist()] == [len(x) for x in want["input_ids"]]
    assert all(set(m) == {1} for m in axolotl.column("attention_mask").to_pylist())
    lf = datasets.load_from_disk(str(out / "exports/llamafactory/tokenized"))["train"]
    assert {k: lf[k] for k in want} == want
    assert set(report["exports"]) == set(EXPORTS) and all(e["rows"] == len(ds) for e in report["exports"].values())


def test_configs_name_real_paths_and_the_model(built):
    for kind, (out, report, _, tokenizer) in built.items():
        for name, file in CONFIGS.items():
            text = (out / "exports" / name / file).read_text()
            body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
            assert "CHOOSE" not in body and not re.search(r"<[\w ,.]+>", body), (name, body)  # no placeholders
            for path in re.findall(r"(/[^\s:'\"]+\.(?:parquet|py|jsonl)|/\S+/tokenized)\b", text):
                assert Path(path).exists(), (name, path)
            key = MODEL_KEYS.get(name)
            if key is None:
                continue
            named = f"{key}: {Path(tokenizer).resolve()}" if file.endswith(".yaml") else f"{key}={Path(tokenizer).resolve()}"
            assert (named in text) == (kind == "model"), (kind, name, text)
            warned = any(w.startswith(f"{name}: --tokenizer") and f"`{key}`" in w for w in report["warnings"])
            assert warned == (kind == "bare"), (kind, name, report["warnings"])
    axolotl = yaml.safe_load((built["model"][0] / "exports/axolotl/axolotl.yaml").read_text())
    assert axolotl["tokenizer_config"] == str(built["model"][3].resolve())  # the tokenizer that made the ids
    assert axolotl["sequence_len"] == built["model"][1]["longest_sample"]
    assert "type" not in axolotl["datasets"][0]  # pre-tokenized: no prompt strategy


def load_helper(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_verl_helper_hands_over_srfts_mask_and_refuses_another_tokenizer(built):
    """The shipped dataset class (torch + pyarrow only) yields loss_mask == (labels != -100), refuses another
    tokenizer and any truncation. verl itself runs it in test_consumers."""
    out, _, ds, tokenizer = built["model"]
    helper = load_helper(out / "exports/verl/srft_verl.py", "srft_verl_export")
    assert helper.CHECK["probe_ids"] and helper.CHECK["special_ids"] == {"<|im_end|>": 151645}
    tok = load_tokenizer(str(tokenizer))
    data = helper.SrftSFTDataset(str(out / "exports/verl/train.parquet"), tok,
                                 {"pad_mode": "no_padding", "max_length": max(map(len, ds["input_ids"]))})
    for i in range(len(ds)):
        item = data[i]
        assert item["input_ids"].tolist() == ds[i]["input_ids"]
        assert item["loss_mask"].tolist() == [int(x != IGNORE_INDEX) for x in ds[i]["labels"]]
    longest = max(map(len, ds["input_ids"]))
    right = helper.SrftSFTDataset([str(out / "exports/verl/train.parquet")], tok,
                                  {"pad_mode": "right", "max_length": longest + 3})[0]
    n = len(ds[0]["input_ids"])
    assert right["input_ids"][:n].tolist() == ds[0]["input_ids"] and right["attention_mask"].sum() == n
    assert right["loss_mask"].tolist() == [int(x != IGNORE_INDEX) for x in ds[0]["labels"]] + [0] * (longest + 3 - n)
    with pytest.raises(ValueError, match="is not the one srft built"):
        helper.SrftSFTDataset(str(out / "exports/verl/train.parquet"),
                              load_tokenizer(str(TOKENIZER_DIR / "llama-3.1-instruct")), {})
    with pytest.raises(ValueError, match="longer than data.max_length=10"):
        helper.SrftSFTDataset(str(out / "exports/verl/train.parquet"), tok, {"max_length": 10})


def test_soft_weights_are_warned_with_the_count_of_tokens_they_change(store, tmp_path):  # noqa: F811
    import datasets

    data, labels, _ = store
    report = run_build(data, tmp_path, BuildConfig(
        tokenizer=str(QWEN), exports=EXPORTS, policy=PolicyConfig(name="srft", label_weights={"unnecessary": 0.5})),
        annotations=labels)
    ds = datasets.load_from_disk(str(tmp_path / "dataset"))
    partial = sum(1 for row in ds["loss_weights"] for w in row if w not in (0, 1))
    assert partial > 0 and partial_weight_tokens(ds) == partial
    for name in EXPORTS:
        assert any(w.startswith(f"{name}: {partial} trained token(s) have a soft weight other than 1")
                   for w in report["warnings"]), name
