"""nebius/SWE-agent-trajectories rows.

Row: {"instance_id", "model_name", "target": bool (the patch passed the PR's tests), "trajectory": [{"role":
system|user|ai, "text", "mask", "system_prompt", "cutoff_date"}], "exit_status", "generated_patch",
"eval_logs"}. The system turn keeps its prompt in `system_prompt` (its `text` is null). Assistant (`ai`) turns
are SWE-agent thought_action text: a DISCUSSION and a fenced command. `mask` marks the turns nebius trained
on; steps of `ai` turns with mask false are listed in `metadata.extra["unmasked_steps"]`.
"""

from __future__ import annotations

from typing import Any

from srft.formats._common import (FormatError, Parts, RecordContext, build, message_list, message_of,
                                  optional_str, row_outcome, split_last_fence)
from srft.model import Metadata, Trajectory


def read(record: dict[str, Any], ctx: RecordContext) -> Trajectory:
    turns = message_list(record.get("trajectory"), "trajectory")
    messages, thoughts, actions, unmasked = [], [], [], []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise FormatError(f"trajectory[{i}]: expected an object, got {type(turn).__name__}")
        key = "system_prompt" if turn.get("role") == "system" and turn.get("text") is None else "text"
        msg = message_of(turn, f"trajectory[{i}]", content_key=key)
        if msg.role == "assistant":
            split = split_last_fence(msg.content)
            thoughts.append(split[0] if split else msg.content)
            actions.append(split[1] if split else "")
            if turn.get("mask") is False:
                unmasked.append(len(thoughts))
        messages.append(msg)
    extra: dict[str, Any] = {"unmasked_steps": unmasked} if unmasked else {}
    return build(Parts(
        messages=messages, instance_id=optional_str(record.get("instance_id"), "instance_id"),
        thoughts=thoughts, actions=actions,
        outcome=row_outcome(record.get("target"), "target"),
        metadata=Metadata(model=optional_str(record.get("model_name"), "model_name"),
                          exit_status=optional_str(record.get("exit_status"), "exit_status"),
                          submission=optional_str(record.get("generated_patch"), "generated_patch"), extra=extra),
    ), ctx)
