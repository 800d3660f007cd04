"""SWE-agent `.traj` files, old (0.x) and v1 variants.

Shape: {"trajectory": [{action, observation, response, thought, state, ...}], "history": [...], "info":
{"exit_status", "submission", "model_stats"}, ["environment", "replay_config"]}. The v1 variant adds
`replay_config`, `history[].message_type`, `tool_calls`/`tool_call_ids` and `info.edited_files*`.

`history` is what the model saw, so it becomes the messages. Assistant turns carry the scaffold's own
`thought`/`action` split. Demonstration turns (`is_demo`) stay in context and their steps are flagged
`is_demo` (never trained). Autosubmission turns ("Exit due to cost limit") are flagged synthetic. When
`trajectory` has more steps than `history` has model turns (v1 does not append the final submit turn to
history) the difference is recorded as `metadata.extra["steps_not_in_history"]`: the missing turn's tool call
cannot be rebuilt exactly, so it is not invented.
"""

from __future__ import annotations

import json
from typing import Any

from srft.formats._common import (FormatError, Parts, RecordContext, as_float, as_int, build, default_split,
                                  message_list, message_of)
from srft.model import Metadata, Trajectory


def read(record: dict[str, Any], ctx: RecordContext) -> Trajectory:
    history = message_list(record.get("history"), "history")
    messages, thoughts, actions, demo = [], [], [], set()
    for i, raw in enumerate(history):
        msg = message_of(raw, f"history[{i}]")
        if msg.role == "assistant":
            thought, action = default_split(msg)
            thoughts.append(raw["thought"] if isinstance(raw.get("thought"), str) else thought)
            actions.append(raw["action"] if isinstance(raw.get("action"), str) else action)
            if raw.get("is_demo"):
                demo.add(len(messages))
        messages.append(msg)
    info = record.get("info") if isinstance(record.get("info"), dict) else {}
    steps = record.get("trajectory")
    if steps is not None and not isinstance(steps, list):
        raise FormatError(f"trajectory: expected a list of steps, got {type(steps).__name__}")
    model_turns = len(thoughts) - len(demo)
    variant = "v1" if "replay_config" in record or any(isinstance(h, dict) and "message_type" in h
                                                       for h in history) else "old"
    extra: dict[str, Any] = {"variant": variant}
    if steps is not None and len(steps) > model_turns:
        extra["steps_not_in_history"] = len(steps) - model_turns
    return build(Parts(messages=messages, instance_id=ctx.stem, thoughts=thoughts,
                       actions=actions, demo=demo, metadata=_metadata(record, info, extra)), ctx)


def _metadata(record: dict[str, Any], info: dict[str, Any], extra: dict[str, Any]) -> Metadata:
    stats = info.get("model_stats") if isinstance(info.get("model_stats"), dict) else {}
    replay = record.get("replay_config")
    model = None
    if isinstance(replay, str):  # v1 stores the replay config as a JSON string
        try:
            replay = json.loads(replay)
        except json.JSONDecodeError:
            replay = None
    if isinstance(replay, dict):
        agent = replay.get("agent") if isinstance(replay.get("agent"), dict) else {}
        model_cfg = agent.get("model") if isinstance(agent.get("model"), dict) else {}
        model = model_cfg.get("name") if isinstance(model_cfg.get("name"), str) else None
    exit_status, submission = info.get("exit_status"), info.get("submission")
    return Metadata(model=model, exit_status=exit_status if isinstance(exit_status, str) else None,
                    cost=as_float(stats.get("instance_cost")), api_calls=as_int(stats.get("api_calls")),
                    submission=submission if isinstance(submission, str) else None, extra=extra)
