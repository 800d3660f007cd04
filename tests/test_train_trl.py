"""Interop: TRL's SFTTrainer, fed the same pre-tokenized rows (`input_ids` + `labels`), computes the same first-step
loss and gradients as `srft train` on the same model and seed: on synthetic rows, and end to end on trajectories
built by `srft.dataset.build` (mask engine + the `trl` export's train.parquet and sft_config.json).

Tolerance: loss rel 1e-5, every gradient rtol 1e-4 / atol 1e-6 (fp32 on CPU; the two differ only in summation
order: TRL sees one batch of 4 rows, we see 2 micro-batches of 2 with gradient accumulation, and TRL scores
tokens with its fused log-prob kernel, we with a plain cross-entropy on the selected positions).
"""

from __future__ import annotations

import pytest
import torch
from test_train import GradCapture, config, save_build, synthetic_rows, tiny_model  # noqa: F401 (fixture)

from srft.train import build_trainer


def _trl_columns(rows):
    """The rows as TRL reads them: pre-tokenized input_ids + labels (-100 on masked steps and non-assistant text)."""
    return [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows]


def test_trl_sfttrainer_matches_first_step_loss_and_gradients(tiny_model, tmp_path):  # noqa: F811
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    rows = synthetic_rows(4, seed=11)
    ours = GradCapture()
    trainer = build_trainer(save_build(tmp_path / "b", rows), tmp_path / "w",
                            config(tiny_model, batch_size=2, grad_accum=2, max_steps=1, lr=1e-3),
                            callbacks=[ours.callback]).trainer
    trainer.train()
    our_loss = trainer.state.log_history[0]["loss"]

    theirs = GradCapture()
    args = SFTConfig(output_dir=str(tmp_path / "trl"), use_cpu=True, bf16=False, max_steps=1,
                     per_device_train_batch_size=4, learning_rate=1e-3, max_grad_norm=0.0, logging_steps=1,
                     report_to="none", save_strategy="no", seed=0, dataloader_num_workers=0)
    trl = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32), args=args,
                     train_dataset=datasets.Dataset.from_list(_trl_columns(rows)),
                     processing_class=AutoTokenizer.from_pretrained(tiny_model), callbacks=[theirs.callback])
    trl.train()
    trl_loss = trl.state.log_history[0]["loss"]

    assert our_loss == pytest.approx(trl_loss, rel=1e-5)
    assert set(theirs.grads) == set(ours.grads) and len(ours.grads) > 5
    for name, grad in theirs.grads.items():
        torch.testing.assert_close(ours.grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    # Sanity: the loss is a real masked loss (not the full-sequence one TRL would compute without labels).
    assert abs(trl_loss - _unmasked_first_loss(tiny_model, rows)) > 1e-3


def _unmasked_first_loss(model_dir, rows):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    total, count = 0.0, 0
    with torch.no_grad():
        for r in rows:
            ids = torch.tensor([r["input_ids"]])
            n = ids.shape[1] - 1
            total += model(input_ids=ids, labels=ids).loss.item() * n
            count += n
    return total / count


# -- end to end: trajectories -> srft.dataset.build (mask engine + `trl` export) -> both trainers ------------------------

def _trajectories():
    from srft.model import FunctionCall, Message, Outcome, Source, ToolCall, Trajectory, steps_from_messages, \
        trajectory_id

    def bash(cid, cmd):
        return [ToolCall(id=cid, function=FunctionCall(name="bash", arguments=f'{{"command": "{cmd}"}}'))]

    out = []
    for k, (status, cmds) in enumerate([("unresolved", ["ls", "rm -rf tests", "git checkout tests", "pytest"]),
                                        ("resolved", ["cat setup.py", "sed -i s/1/2/ setup.py", "pytest -q"])]):
        messages = [Message(role="system", content="You are a coding agent."),
                    Message(role="user", content=f"Fix issue {k}: the tests fail.")]
        for j, cmd in enumerate(cmds):
            messages.append(Message(role="assistant", content=f"Step {j}: run {cmd}.", tool_calls=bash(f"c{j}", cmd)))
            messages.append(Message(role="tool", content=f"output of {cmd}", tool_call_id=f"c{j}", name="bash"))
        instance = f"toy__repo-{k}"
        out.append(Trajectory(id=trajectory_id(instance, messages), instance_id=instance, repo="toy/repo",
                              source=Source(format="test", path="mem", sha256="0" * 64), messages=messages,
                              steps=steps_from_messages(messages), outcome=Outcome.from_status(status, "test")))
    return out


def test_build_trl_export_trains_identically(tokenizer_dir, tmp_path):
    import datasets
    import json
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from srft.dataset.build import BuildConfig, run_build
    from srft.io import write_trajectories
    from srft.labels import StepLabel, write_labels
    from srft.train.models import InitConfig, init_model

    trajectories = _trajectories()
    write_trajectories(tmp_path / "store" / "trajectories.parquet", trajectories)
    write_labels(tmp_path / "labels.jsonl", [StepLabel(trajectory_id=trajectories[0].id, step=2, label="mistake")])
    tok_dir = tokenizer_dir / "qwen2.5-coder-instruct"
    run_build(tmp_path / "store", tmp_path / "build", BuildConfig(tokenizer=str(tok_dir), exports=["trl"]),
              annotations=tmp_path / "labels.jsonl")
    built = datasets.load_from_disk(str(tmp_path / "build" / "dataset"))
    masked = [s for row in built for s in row["step_spans"] if s["weight"] == 0]
    assert len(built) == 2 and len(masked) == 1  # the mistake step is in context, at weight 0
    init_model(tok_dir, tmp_path / "model", InitConfig(arch="qwen2", preset="tiny", seed=1))

    ours = GradCapture()
    trainer = build_trainer(tmp_path / "build", tmp_path / "w", config(tmp_path / "model", batch_size=1,
                                                                      grad_accum=2, max_steps=1),
                            callbacks=[ours.callback]).trainer
    trainer.train()

    settings = json.loads((tmp_path / "build" / "exports" / "trl" / "sft_config.json").read_text())
    theirs = GradCapture()
    trl_data = datasets.load_dataset("parquet", data_files=str(tmp_path / "build" / "exports" / "trl" /
                                                               "train.parquet"))["train"]
    args = SFTConfig(output_dir=str(tmp_path / "trl"), use_cpu=True, bf16=False, max_steps=1,
                     per_device_train_batch_size=2, learning_rate=1e-3, max_grad_norm=0.0, logging_steps=1,
                     report_to="none", save_strategy="no", **settings)
    trl = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(tmp_path / "model"), args=args,
                     train_dataset=trl_data, processing_class=AutoTokenizer.from_pretrained(tmp_path / "model"),
                     callbacks=[theirs.callback])
    trl.train()
    assert trainer.state.log_history[0]["loss"] == pytest.approx(trl.state.log_history[0]["loss"], rel=1e-5)
    for name, grad in theirs.grads.items():
        torch.testing.assert_close(ours.grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
