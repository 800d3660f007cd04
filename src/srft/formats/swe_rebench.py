"""nebius/SWE-rebench-openhands-trajectories rows.

Row: {"trajectory_id", "instance_id", "repo", "trajectory": OpenAI messages (assistant `tool_calls` with
JSON-string arguments; tool messages with `name` and `tool_call_id`; every field present on every message,
null where it does not apply), "tools", "model_patch", "exit_status", "resolved": 0/1, "gen_tests_correct",
"pred_passes_gen_tests"}.
"""

from __future__ import annotations

from typing import Any

from srft.formats._common import (Parts, RecordContext, build, message_list, message_of, optional_str,
                                  row_outcome, tools_of)
from srft.model import Metadata, Trajectory


def read(record: dict[str, Any], ctx: RecordContext) -> Trajectory:
    raw = message_list(record.get("trajectory"), "trajectory")
    messages = [message_of(m, f"trajectory[{i}]") for i, m in enumerate(raw)]
    extra = {k: record[k] for k in ("trajectory_id", "gen_tests_correct", "pred_passes_gen_tests")
             if record.get(k) is not None}
    return build(Parts(
        messages=messages, instance_id=optional_str(record.get("instance_id"), "instance_id"),
        repo=optional_str(record.get("repo"), "repo"),
        tools=tools_of(record.get("tools"), "tools"),
        outcome=row_outcome(record.get("resolved"), "resolved"),
        metadata=Metadata(exit_status=optional_str(record.get("exit_status"), "exit_status"),
                          submission=optional_str(record.get("model_patch"), "model_patch"), extra=extra),
    ), ctx)
