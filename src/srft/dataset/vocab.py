"""What a build dataset's token ids mean, so `srft audit` and `srft train` can refuse a tokenizer or model that
does not match before decoding garbage or indexing past an embedding.

`srft build` records `tokenizer_facts` (a fingerprint of the token -> id map, added tokens included; its size;
the special tokens) and the dataset's largest token id in build_report.json under "vocab". Audit compares a
`--tokenizer` against them; train compares the model's vocabulary size and its tokenizer.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def tokenizer_facts(tok: Any) -> dict[str, Any]:
    """{fingerprint, vocab_size, special_tokens} of a Hugging Face tokenizer (two copies of one tokenizer in
    different folders have the same fingerprint)."""
    vocab = tok.get_vocab()
    pairs = sorted(vocab.items(), key=lambda kv: (kv[1], kv[0]))
    digest = hashlib.sha256(json.dumps(pairs, ensure_ascii=False).encode()).hexdigest()[:16]
    special = {k: v for k, v in sorted(tok.special_tokens_map.items()) if isinstance(v, str)}
    return {"fingerprint": digest, "vocab_size": len(vocab), "special_tokens": special}


def max_token_id(dataset: Any) -> int:
    """The largest id in a dataset's `input_ids` column (-1 when empty), without materialising the rows."""
    import pyarrow.compute as pc

    column = dataset.data.column("input_ids") if len(dataset) else None
    top = pc.max(pc.list_flatten(column)).as_py() if column is not None else None
    return -1 if top is None else int(top)


def tokenizer_problems(recorded: dict[str, Any] | None, facts: dict[str, Any], top_id: int, what: str) -> list[str]:
    """Why the tokenizer described by `facts` cannot read a dataset built with `recorded` (holding ids up to
    `top_id`); [] when it can."""
    if top_id >= facts["vocab_size"]:
        return [(f"{what}: the dataset holds token id {top_id} but this tokenizer has only {facts['vocab_size']} "
                 "tokens: it is not the tokenizer the dataset was built with")]
    if recorded and recorded.get("fingerprint") not in (None, facts["fingerprint"]):
        return [(f"{what}: not the tokenizer the dataset was built with ({_describe(facts)}; the build used "
                 f"{_describe(recorded)})")]
    return []


def _describe(facts: dict[str, Any]) -> str:
    eos = facts.get("special_tokens", {}).get("eos_token")
    return f"vocabulary {facts['vocab_size']}, eos {eos!r}, fingerprint {facts['fingerprint']}"


def model_problems(dataset_dir: Path, model_dir: Path) -> list[str]:
    """Why the model in `model_dir` cannot train on the build dataset in `dataset_dir`; [] when it can. Reads
    only config.json, the tokenizer and the dataset's ids: it runs before any weights load."""
    import datasets
    from transformers import AutoTokenizer

    report_file = dataset_dir.parent / "build_report.json"
    report = json.loads(report_file.read_text(encoding="utf-8")) if report_file.is_file() else {}
    recorded = report.get("vocab") or {}
    top_id = recorded["max_token_id"] if "max_token_id" in recorded else max_token_id(
        datasets.load_from_disk(str(dataset_dir)))
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    size = config.get("vocab_size") or (config.get("text_config") or {}).get("vocab_size")
    if isinstance(size, int) and top_id >= size:
        return [(f"--model {model_dir}: its vocabulary has {size} tokens but the dataset holds token id {top_id}; "
                 "train a model whose tokenizer built the dataset (or rebuild with --tokenizer MODEL_DIR)")]
    if not recorded.get("tokenizer"):
        return []
    facts = tokenizer_facts(AutoTokenizer.from_pretrained(str(model_dir)))
    return [p + "; rebuild with --tokenizer MODEL_DIR or train the model the dataset was built for"
            for p in tokenizer_problems(recorded["tokenizer"], facts, top_id, f"--model {model_dir}")]
