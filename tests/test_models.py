"""`srft models`: the SmolLM2 GGUF becomes a plain, cached HF model that answers sensibly; random students are
deterministic, sized around their tokenizer, and reject config typos."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from typer.testing import CliRunner

from srft.cli import app
from srft.train.models import InitConfig, ModelError, init_model, make_word_tokenizer, prepare_model


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def word_tok(tmp_path_factory):
    return make_word_tokenizer(tmp_path_factory.mktemp("tok") / "tok", 60)


def test_init_is_deterministic_under_a_seed(word_tok, tmp_path):
    a = init_model(word_tok, tmp_path / "a", InitConfig(seed=3))
    init_model(word_tok, tmp_path / "b", InitConfig(seed=3))
    init_model(word_tok, tmp_path / "c", InitConfig(seed=4))
    weights = [_sha(tmp_path / d / "model.safetensors") for d in "abc"]
    assert weights[0] == weights[1] != weights[2]
    assert a["vocab_size"] == 64 and a["parameters"] > 0
    assert json.loads((tmp_path / "a" / "srft_model.json").read_text())["preset"] == "tiny"


def test_init_overrides_are_checked(word_tok, tmp_path):
    from transformers import AutoModelForCausalLM

    init_model(word_tok, tmp_path / "q", InitConfig(arch="qwen2", overrides={"num_hidden_layers": 3}))
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "q")
    assert type(model).__name__ == "Qwen2ForCausalLM" and model.config.num_hidden_layers == 3
    with pytest.raises(ModelError, match="num_hidden_layer"):
        init_model(word_tok, tmp_path / "x", InitConfig(overrides={"num_hidden_layer": 3}))
    assert not (tmp_path / "x").exists()


def test_init_around_a_real_tokenizer(tokenizer_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    info = init_model(tokenizer_dir / "qwen2.5-coder-instruct", tmp_path / "m", InitConfig(arch="qwen2"))
    tok = AutoTokenizer.from_pretrained(tmp_path / "m")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    assert info["vocab_size"] == model.config.vocab_size >= len(tok)
    assert model.config.eos_token_id == tok.eos_token_id and tok.chat_template
    ids = tok.apply_chat_template([{"role": "user", "content": "hi"}], return_tensors="pt", return_dict=True)
    assert model(**ids).logits.shape[-1] == model.config.vocab_size


def test_prepare_smollm2_is_a_plain_cached_model(smollm2_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = json.loads((smollm2_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and "quantization_config" not in config
    again = prepare_model("smollm2", smollm2_dir)  # same source hash: no second conversion
    assert again["cached"] and again["parameters"] == 134_515_008
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir)
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                     add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert "Paris" in tok.decode(out[0, prompt["input_ids"].shape[1]:])  # the dequantized weights are right


def test_cli_models(word_tok, tmp_path):
    result = CliRunner().invoke(app, ["models", "init", "--tokenizer", str(word_tok), "--out", str(tmp_path / "m"),
                                      "--preset", "small", "--set", "num_hidden_layers=1", "--json"])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["preset"] == "small" and data["config"]["overrides"] == {"num_hidden_layers": 1}
    bad = CliRunner().invoke(app, ["models", "prepare", "gpt5", "--json"])
    assert bad.exit_code == 2 and "known: smollm2" in json.loads(bad.stdout)["error"]
