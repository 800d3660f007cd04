"""SWE-smith trajectory rows (`SWE-bench/SWE-smith-trajectories`, splits tool / xml / ticks).

Row: {"instance_id", "messages": JSON string of chat messages, "resolved": bool, "model", "traj_id", "patch"}.
The `tool` split keeps OpenAI tool calls; `xml` and `ticks` are text actions (`<function=...>` blocks or a
fenced command) with tool results mapped to user messages. SWE-smith's converter rewrites a cost-limit exit into
a fixed "let's submit the changes" turn: that step is flagged synthetic.
"""

from __future__ import annotations

import json
from typing import Any

from srft.formats._common import (FormatError, Parts, RecordContext, build, message_list, message_of,
                                  optional_str, row_outcome)
from srft.model import Metadata, Trajectory


def read(record: dict[str, Any], ctx: RecordContext) -> Trajectory:
    raw = record.get("messages")
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise FormatError(f"messages: not a JSON list ({exc.msg} at char {exc.pos})") from exc
    messages = [message_of(m, f"messages[{i}]") for i, m in enumerate(message_list(raw, "messages"))]
    instance_id = optional_str(record.get("instance_id"), "instance_id")
    extra = {k: record[k] for k in ("traj_id",) if isinstance(record.get(k), str)}
    return build(Parts(
        messages=messages, instance_id=instance_id,
        outcome=row_outcome(record.get("resolved"), "resolved"),
        metadata=Metadata(model=optional_str(record.get("model"), "model"),
                          submission=optional_str(record.get("patch"), "patch"), extra=extra),
    ), ctx)
