"""axolotl export: `type: chat_template` JSONL with a per-message `train` flag, plus the matching YAML snippet.

axolotl renders each conversation with the tokenizer's chat template and finds each turn by diffing prefix
renders; `message_field_training: train` overrides `roles_to_train` per message and `train_on_eos: turn` trains
the end-of-turn token of trained turns. Tool-call arguments are JSON strings (axolotl decodes them; a dict
would make `datasets` merge every call's keys into one struct). Soft weights cannot be represented.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from srft.dataset.exports import ExportContext, common_warnings, conversations, mixed_tool_schemas, write_rows
from srft.dataset.exports import longest as longest_sample
from srft.io import atomic_write_text

YAML = """\
# srft build export for axolotl (chat_template with per-message training flags); merge into your config.
chat_template: tokenizer_default    # the student tokenizer's own template, as srft used
sequence_len: {sequence_len}       # >= the longest srft sample ({longest} tokens)
datasets:
  - path: {path}
    ds_type: json
    type: chat_template
    field_messages: messages
    field_tools: tools
    roles_to_train: []              # per-message `train` flags decide
    message_field_training: train
    train_on_eos: turn              # the end-of-turn token of every trained turn
"""


def export(ctx: ExportContext, out: Path) -> dict[str, Any]:
    rows = []
    for conv in conversations(ctx):
        messages = [{**m, "train": w is not None and w > 0} for m, w in zip(conv.messages, conv.weights)]
        row: dict[str, Any] = {"messages": messages, "trajectory_id": conv.trajectory.id}
        if conv.trajectory.tools:
            row["tools"] = conv.trajectory.tools
        rows.append(row)
    n = write_rows(out / "train.jsonl", rows)
    longest = longest_sample(ctx.dataset)
    final_dir = out.parent / "axolotl"  # where srft build moves this folder
    atomic_write_text(out / "axolotl.yaml", YAML.format(path=final_dir.resolve() / "train.jsonl", longest=longest,
                                                        sequence_len=longest))
    warnings = common_warnings(ctx, "axolotl")
    if mixed := mixed_tool_schemas(ctx):
        warnings.append(f"axolotl: {mixed} trajectory(ies) have tool schemas with different keys; axolotl loads "
                        "them through `datasets`, which fills missing keys with null, so its rendered tool list "
                        "differs from srft's (the verl export keeps them exact)")
    if not ctx.renderer.profile.args_as_string:
        warnings.append("axolotl: tool-call arguments are JSON strings; axolotl parses them into dicts for this "
                        "template (needs axolotl >= 0.13, PR #3136)")
    return {"files": ["train.jsonl", "axolotl.yaml"], "rows": n, "warnings": warnings}
