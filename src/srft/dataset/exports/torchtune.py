"""torchtune export: JSONL of `torchtune.data.Message` dicts with `masked`, plus a message transform.

torchtune tokenizes message by message with its own Python templates (not the HF chat template srft used), so
token boundaries are torchtune's; `masked: true` removes a whole message from the loss. Tool calls become the
assistant message's text (`ipython: true`), tool results the `ipython` role. `srft_torchtune.py` turns a row
back into `Message`s for `torchtune.datasets.SFTDataset(message_transform=...)`. No soft weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from srft.dataset.exports import ExportContext, common_warnings, conversations, write_rows
from srft.io import atomic_write_text

ROLES = {"system": "system", "user": "user", "assistant": "assistant", "tool": "ipython"}
TRANSFORM = '''\
"""srft -> torchtune: rows of srft's torchtune export back into Messages (keeps `masked`)."""
from torchtune.data import Message
from torchtune.modules.transforms import Transform


class SrftMessages(Transform):
    def __call__(self, sample):
        return {"messages": [Message.from_dict(m) for m in sample["messages"]]}

# config:
# dataset:
#   _component_: torchtune.datasets.SFTDataset
#   source: json
#   data_files: {path}
#   split: train
#   message_transform:
#     _component_: srft_torchtune.SrftMessages
'''


def _message(m: dict[str, Any], weight: float | None) -> dict[str, Any]:
    content = m["content"]
    calls = m.get("tool_calls") or []
    if calls:
        text = "\n".join(json.dumps({"name": tc["function"]["name"], "arguments": tc["function"]["arguments"]},
                                    ensure_ascii=False) for tc in calls)
        content = f"{content}\n{text}" if content else text
    trained = m["role"] == "assistant" and weight is not None and weight > 0
    return {"role": ROLES[m["role"]], "content": content, "masked": not trained,
            "ipython": bool(calls), "eot": True}


def export(ctx: ExportContext, out: Path) -> dict[str, Any]:
    rows = [{"messages": [_message(m, w) for m, w in zip(c.messages, c.weights)], "trajectory_id": c.trajectory.id}
            for c in conversations(ctx)]
    n = write_rows(out / "train.jsonl", rows)
    atomic_write_text(out / "srft_torchtune.py",
                      TRANSFORM.replace("{path}", str((out.parent / "torchtune").resolve() / "train.jsonl")))
    warnings = common_warnings(ctx, "torchtune")
    warnings.append("torchtune: messages are tokenized by torchtune's own model templates, not the HF chat "
                    "template srft rendered; tool calls are plain JSON text in the assistant message")
    return {"files": ["train.jsonl", "srft_torchtune.py"], "rows": n, "warnings": warnings}
