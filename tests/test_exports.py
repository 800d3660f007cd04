"""Exports: each is a file its trainer loads (TRL, run here) or that matches the trainer's documented schema, and
each carries exactly the steps srft trains."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from srft.dataset.build import BuildConfig, run_build
from srft.dataset.masks import IGNORE_INDEX
from srft.policy import PolicyConfig
from srft.dataset.render import load_tokenizer

from conftest import TOKENIZER_DIR
from test_build import store  # noqa: F401 (fixture)
from test_masks import real_trajs  # noqa: F401 (fixture)

QWEN = str(TOKENIZER_DIR / "qwen2.5-coder-instruct")
EXPORTS = ["trl", "axolotl", "verl", "torchtune", "llamafactory"]


@pytest.fixture(scope="module")
def built(store, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("built")
    data, labels, trajs = store
    config = BuildConfig(tokenizer=QWEN, exports=EXPORTS, policy=PolicyConfig(
        name="srft", mask_labels=["mistake", "unnecessary"], label_on_resolved=True))
    report = run_build(data, out, config, annotations=labels)
    import datasets

    return out, report, datasets.load_from_disk(str(out / "dataset")), {t.id: t for t in trajs}


def trained_messages(ds, trajs) -> list[set[int]]:
    """Per row: the message indices of the steps srft trains (weight > 0)."""
    return [{trajs[tid].steps[s["step"] - 1].message_index for s in spans if s["weight"] > 0}
            for tid, spans in zip(ds["trajectory_id"], ds["step_spans"])]


def assistant_positions(messages) -> list[int]:
    return [i for i, m in enumerate(messages) if m["role"] == "assistant"]


def test_trl_sfttrainer_yields_exactly_our_labels(built, tmp_path):
    import datasets
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from trl import SFTConfig, SFTTrainer

    out, report, ds, _ = built
    hints = json.loads((out / "exports/trl/sft_config.json").read_text())
    assert hints["max_length"] == report["longest_sample"]
    train = datasets.load_dataset("parquet", data_files=str(out / "exports/trl/train.parquet"),
                                  cache_dir=str(tmp_path / "cache"))["train"]
    tok = load_tokenizer(QWEN)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok), hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1))
    args = SFTConfig(output_dir=str(tmp_path / "o"), max_length=hints["max_length"], report_to="none",
                     use_cpu=True, bf16=False, per_device_train_batch_size=2, dataset_num_proc=None,
                     **{k: v for k, v in hints.items() if k in ("packing", "assistant_only_loss",
                                                                "completion_only_loss")})
    trainer = SFTTrainer(model=model, args=args, train_dataset=train, processing_class=tok)
    prepared = trainer.train_dataset
    assert prepared["input_ids"] == ds["input_ids"] and prepared["labels"] == ds["labels"]
    batch = trainer.data_collator([prepared[i] for i in range(2)])
    for i in range(2):
        n = len(ds[i]["labels"])
        assert batch["labels"][i, :n].tolist() == ds[i]["labels"]
        assert (batch["labels"][i, n:] == IGNORE_INDEX).all()
    loss = model(**{k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "labels")}).loss
    assert torch.isfinite(loss)


def test_axolotl_jsonl_and_yaml(built):
    out, report, ds, trajs = built
    rows = [json.loads(line) for line in (out / "exports/axolotl/train.jsonl").read_text().splitlines()]
    config = yaml.safe_load((out / "exports/axolotl/axolotl.yaml").read_text())
    d = config["datasets"][0]
    assert (d["type"], d["message_field_training"], d["roles_to_train"], d["train_on_eos"]) == (
        "chat_template", "train", [], "turn")
    assert Path(d["path"]) == (out / "exports/axolotl/train.jsonl").resolve()
    def paths(obj, pre=""):  # every key path of a JSON object
        return {p for k, v in obj.items() for p in (pre + k, *paths(v, pre + k + "."))} if isinstance(obj, dict) \
            else set()

    mixed = [t for t in trajs.values() if t.tools and len({frozenset(paths(x)) for x in t.tools}) > 1]
    assert bool(mixed) == any("tool schemas with different keys" in w for w in report["warnings"])
    tok = load_tokenizer(QWEN)
    for row, want, ids in zip(rows, trained_messages(ds, trajs), ds["input_ids"]):
        assert {i for i, m in enumerate(row["messages"]) if m["train"]} == want
        assert all(m["role"] == "assistant" for m in row["messages"] if m["train"])
        for m in row["messages"]:
            for tc in m.get("tool_calls") or []:
                assert isinstance(tc["function"]["arguments"], str)
        # what axolotl feeds the template (arguments parsed back into dicts) renders exactly our tokens
        msgs = [{**{k: v for k, v in m.items() if k != "train"}, "tool_calls": [
            {**tc, "function": {**tc["function"], "arguments": json.loads(tc["function"]["arguments"])}}
            for tc in m["tool_calls"]]} if m.get("tool_calls") else {k: v for k, v in m.items() if k != "train"}
            for m in row["messages"]]
        rendered = tok.apply_chat_template(msgs, tools=row.get("tools"), tokenize=True)
        rendered = rendered["input_ids"] if hasattr(rendered, "keys") else rendered
        assert ids[:len(rendered)] == rendered


def test_verl_parquet_and_dataset_helper(built):
    import pyarrow.parquet as pq

    out, _, ds, trajs = built
    table = pq.read_table(out / "exports/verl/train.parquet")
    assert table.column_names == ["messages", "tools_json", "trajectory_id"]
    helper_path = out / "exports/verl/srft_verl.py"
    spec = importlib.util.spec_from_file_location("srft_verl_export", helper_path)
    helper = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helper)  # runs without verl: the subclass is only defined where verl is installed
    assert helper.ARGUMENTS_AS_DICT is True  # Qwen2.5's template wants dicts
    overrides = (out / "exports/verl/verl_overrides.txt").read_text()
    assert "data.multiturn.enable=true" in overrides and "data.custom_cls.name=SrftMultiTurnSFTDataset" in overrides
    tok = load_tokenizer(QWEN)
    for row, want, ids in zip(table.to_pylist(), trained_messages(ds, trajs), ds["input_ids"]):
        assert {i for i, m in enumerate(row["messages"]) if m["loss_mask"] == 1} == want
        assert all(m["trainable"] == bool(m["loss_mask"]) for m in row["messages"])
        msgs = helper.decode_messages(row["messages"])
        rendered = tok.apply_chat_template(msgs, tools=helper.decode_tools(row["tools_json"]), tokenize=True)
        rendered = rendered["input_ids"] if hasattr(rendered, "keys") else rendered
        assert ids[:len(rendered)] == rendered


def test_torchtune_messages(built):
    out, _, ds, trajs = built
    rows = [json.loads(line) for line in (out / "exports/torchtune/train.jsonl").read_text().splitlines()]
    assert len(rows) == len(ds)
    for row, want in zip(rows, trained_messages(ds, trajs)):
        for m in row["messages"]:
            assert set(m) == {"role", "content", "masked", "ipython", "eot"}  # torchtune.data.Message fields
            assert m["role"] in ("system", "user", "assistant", "ipython") and isinstance(m["content"], str)
        assert {i for i, m in enumerate(row["messages"]) if not m["masked"]} == want
    assert "class SrftMessages" in (out / "exports/torchtune/srft_torchtune.py").read_text()


def test_llamafactory_sharegpt(built):
    out, _, ds, trajs = built
    info = json.loads((out / "exports/llamafactory/dataset_info.json").read_text())["srft_train"]
    assert info["formatting"] == "sharegpt" and info["columns"]["messages"] == "conversations"
    assert "mask_history: true" in (out / "exports/llamafactory/llamafactory.yaml").read_text()
    rows = [json.loads(line) for line in (out / "exports/llamafactory" / info["file_name"]).read_text().splitlines()]
    assert len(rows) == sum(len(w) for w in trained_messages(ds, trajs))  # one conversation per trained step
    for row in rows:
        turns = row["conversations"]
        for i, turn in enumerate(turns):  # LLaMA-Factory's alternation: prompt side at even positions
            assert turn["from"] in (("human", "observation") if i % 2 == 0 else ("gpt", "function_call"))
        assert len(turns) % 2 == 0 and isinstance(json.loads(row["tools"]), list)
        if turns[-1]["from"] == "function_call":
            call = json.loads(turns[-1]["value"])
            assert "name" in (call if isinstance(call, dict) else call[0])


def test_exports_warn_about_what_they_cannot_carry(store, tmp_path):  # noqa: F811
    data, labels, _ = store
    report = run_build(data, tmp_path, BuildConfig(
        tokenizer=str(TOKENIZER_DIR / "qwen3"), exports=EXPORTS,
        policy=PolicyConfig(name="srft", label_weights={"unnecessary": 0.5})), annotations=labels)
    warnings = "\n".join(report["warnings"])
    for name in EXPORTS:
        assert f"{name}: soft label weights cannot be represented" in warnings
    assert "not prefix-preserving" in warnings and "ignore_input_ids_mismatch" in warnings
