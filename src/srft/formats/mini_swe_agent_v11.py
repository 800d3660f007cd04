"""mini-swe-agent v1.1 `.traj.json` (`trajectory_format: "mini-swe-agent-1.1"`, written by mini-swe-agent 2.x).

Same top level as v1 (see `mini_swe_agent_v1`). Messages are OpenAI tool-calling chat: the assistant calls the
`bash` tool, observations are `tool` messages, and the last message has role `exit` with
`extra: {exit_status, submission}` (kept in metadata, not as a chat message). A turn without tool calls (a
format error) is answered by a user message; a text-mode model's ```bash block is split as in v1.
"""

from __future__ import annotations

from typing import Any

from srft.formats._common import Parts, RecordContext, build, split_bash_block, tool_call_action
from srft.formats.mini_swe_agent_v1 import convert_messages, instance_id_of, metadata_of
from srft.model import Trajectory


def read(record: dict[str, Any], ctx: RecordContext) -> Trajectory:
    messages, exit_extra = convert_messages(record.get("messages"))
    thoughts, actions = [], []
    for msg in messages:
        if msg.role != "assistant":
            continue
        if msg.tool_calls:
            thoughts.append(msg.content)
            actions.append(tool_call_action(msg))
        else:
            split = split_bash_block(msg.content)
            thoughts.append(split[0] if split else msg.content)
            actions.append(split[1] if split else "")
    metadata = metadata_of(record, exit_extra)
    if exit_extra.get("exit_status") and exit_extra.get("exit_status") != metadata.exit_status:
        metadata.extra["exit_message_status"] = exit_extra["exit_status"]
    return build(Parts(messages=messages, instance_id=instance_id_of(record, ctx), thoughts=thoughts,
                       actions=actions, metadata=metadata), ctx)
