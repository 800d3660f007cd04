"""verl export: multi-turn SFT Parquet (`data.multiturn.enable=true`) with a per-message loss mask.

Each message carries `loss_mask` (1 = train this assistant turn, 0 = not) and `trainable` (the same as a bool),
the two spellings verl's per-message flag has had (verl-project/verl#5316, PR #5472). `srft_verl.py` is a
`MultiTurnSFTDataset` subclass that applies that flag on any verl version, and decodes what Parquet cannot hold
as nested dicts: the tool schemas (column `tools_json`) and, for templates that want them, argument dicts.
verl renders every message separately and asserts the concatenation equals the whole render: templates that are
not prefix-preserving (Qwen3) need `ignore_input_ids_mismatch=true` there. Soft weights cannot be represented.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from srft.dataset.exports import ExportContext, common_warnings, conversations, tools_json
from srft.dataset.exports import longest as longest_sample
from srft.io import atomic_write_text

HELPER = Path(__file__).with_name("verl_dataset.py")


def _message(m: dict[str, Any], weight: float | None) -> dict[str, Any]:
    flag = int(weight is not None and weight > 0)
    calls = [{"id": tc.get("id") or "", "type": tc.get("type") or "function",
              "function": {"name": tc["function"]["name"], "arguments": tc["function"]["arguments"]}}
             for tc in m.get("tool_calls") or []]
    return {"role": m["role"], "content": m["content"], "tool_calls": calls or None,
            "tool_call_id": m.get("tool_call_id"), "name": m.get("name"),
            "reasoning_content": m.get("reasoning_content"), "loss_mask": flag, "trainable": bool(flag)}


def export(ctx: ExportContext, out: Path) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    s = pa.string()
    call = pa.struct([("id", s), ("type", s), ("function", pa.struct([("name", s), ("arguments", s)]))])
    message = pa.struct([("role", s), ("content", s), ("tool_calls", pa.list_(call)), ("tool_call_id", s),
                         ("name", s), ("reasoning_content", s), ("loss_mask", pa.int64()), ("trainable", pa.bool_())])
    schema = pa.schema([("messages", pa.list_(message)), ("tools_json", s), ("trajectory_id", s)])
    rows = [{"messages": [_message(m, w) for m, w in zip(c.messages, c.weights)], "tools_json": tools_json(
        c.trajectory), "trajectory_id": c.trajectory.id} for c in conversations(ctx)]
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), out / "train.parquet")
    helper = HELPER.read_text(encoding="utf-8").replace(
        "ARGUMENTS_AS_DICT = False", f"ARGUMENTS_AS_DICT = {not ctx.renderer.profile.args_as_string}")
    atomic_write_text(out / "srft_verl.py", helper)
    longest = longest_sample(ctx.dataset)
    atomic_write_text(out / "verl_overrides.txt", "\n".join([
        f"data.train_files={(out.parent / 'verl').resolve() / 'train.parquet'}",
        "data.multiturn.enable=true", "data.multiturn.messages_key=messages",
        f"data.custom_cls.path={(out.parent / 'verl').resolve() / 'srft_verl.py'}",
        "data.custom_cls.name=SrftMultiTurnSFTDataset",
        f"data.max_length={longest}", "data.truncation=error"]) + "\n")
    warnings = common_warnings(ctx, "verl")
    if not ctx.renderer.profile.prefix_preserving:
        warnings.append("verl: set data.multiturn.ignore_input_ids_mismatch=true for this template")
    return {"files": ["train.parquet", "srft_verl.py", "verl_overrides.txt"], "rows": len(rows),
            "warnings": warnings, "columns": json.loads(json.dumps(schema.names))}
