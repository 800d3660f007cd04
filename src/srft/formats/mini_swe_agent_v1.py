"""mini-swe-agent v1 `.traj.json` (`trajectory_format: "mini-swe-agent-1"`).

Shape: {"instance_id", "trajectory_format", "info": {"exit_status", "submission", "model_stats":
{"instance_cost", "api_calls"}, "mini_version", "config": {"model": {"model_name"}, ...}}, "messages": [...]}.
Messages are plain chat (system / user / assistant); the assistant writes a THOUGHT and exactly one ```bash
block, and the observation comes back as a user message. A turn with zero or several bash blocks is a format
error the scaffold rejected: its step has no action.
"""

from __future__ import annotations

from typing import Any

from srft.formats._common import (FormatError, Parts, RecordContext, as_float, as_int, build, message_list,
                                  message_of, split_bash_block)
from srft.model import Message, Metadata, Trajectory


def read(record: dict[str, Any], ctx: RecordContext) -> Trajectory:
    messages, exit_extra = convert_messages(record.get("messages"))
    thoughts, actions = [], []
    for msg in messages:
        if msg.role == "assistant":
            split = split_bash_block(msg.content)
            thoughts.append(split[0] if split else msg.content)
            actions.append(split[1] if split else "")
    return build(Parts(messages=messages, instance_id=instance_id_of(record, ctx), thoughts=thoughts,
                       actions=actions, metadata=metadata_of(record, exit_extra)), ctx)


def convert_messages(raw: Any) -> tuple[list[Message], dict[str, Any]]:
    """Chat messages, plus the `extra` of a final `exit` message (mini-swe-agent 2.x writes one carrying
    exit_status/submission: it is bookkeeping, not something the model saw, so it is not a message)."""
    messages, exit_extra = [], {}
    for i, raw_msg in enumerate(message_list(raw, "messages")):
        if isinstance(raw_msg, dict) and raw_msg.get("role") == "exit":
            extra = raw_msg.get("extra")
            exit_extra = extra if isinstance(extra, dict) else {"submission": raw_msg.get("content")}
            continue
        messages.append(message_of(raw_msg, f"messages[{i}]"))
    return messages, exit_extra


def instance_id_of(record: dict[str, Any], ctx: RecordContext) -> str | None:
    iid = record.get("instance_id")
    if iid is not None and not isinstance(iid, str):
        raise FormatError(f"instance_id: expected a string, got {type(iid).__name__}")
    return iid or ctx.stem  # batch runs name files <instance_id>.traj.json


def metadata_of(record: dict[str, Any], exit_extra: dict[str, Any]) -> Metadata:
    info = record.get("info") or {}
    if not isinstance(info, dict):
        raise FormatError(f"info: expected an object, got {type(info).__name__}")
    stats = info.get("model_stats") if isinstance(info.get("model_stats"), dict) else {}
    config = info.get("config") if isinstance(info.get("config"), dict) else {}
    model_cfg = config.get("model") if isinstance(config.get("model"), dict) else {}
    exit_status = info.get("exit_status", exit_extra.get("exit_status"))
    submission = info.get("submission", exit_extra.get("submission"))
    extra = {k: record[k] for k in ("trajectory_format",) if k in record}
    if "mini_version" in info:
        extra["mini_version"] = info["mini_version"]
    return Metadata(
        model=model_cfg.get("model_name") if isinstance(model_cfg.get("model_name"), str) else None,
        exit_status=exit_status if isinstance(exit_status, str) else None,
        cost=as_float(stats.get("instance_cost")),
        api_calls=as_int(stats.get("api_calls")),
        submission=submission if isinstance(submission, str) else None,
        extra=extra,
    )
