"""Generic OpenAI chat rows (JSONL or Parquet): {"messages": [...], optional "resolved", "instance_id",
"tools", "model", "metadata"}.

The format every other tool can write (and the one `srft lab` writes). Thought/action: tool calls when the
turn has them, else the text actions SWE scaffolds use (see `_common.default_split`). `resolved` may be a bool,
0/1 or null; a `status` column (resolved/unresolved/error/empty_patch) is honoured when present.
"""

from __future__ import annotations

from typing import Any

from srft.formats._common import (FormatError, Parts, RecordContext, as_float, as_int, build, message_list,
                                  message_of, optional_str, row_outcome, tools_of)
from srft.model import Metadata, Outcome, Trajectory

_STATUSES = ("resolved", "unresolved", "error", "empty_patch")


def read(record: dict[str, Any], ctx: RecordContext) -> Trajectory:
    raw = message_list(record.get("messages"), "messages")
    messages = [message_of(m, f"messages[{i}]") for i, m in enumerate(raw)]
    meta = record.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        raise FormatError(f"metadata: expected an object, got {type(meta).__name__}")
    meta = dict(meta or {})
    return build(Parts(
        messages=messages,
        instance_id=optional_str(record.get("instance_id"), "instance_id"),
        tools=tools_of(record.get("tools"), "tools"),
        outcome=_outcome(record),
        metadata=Metadata(model=optional_str(record.get("model", meta.pop("model", None)), "model"),
                          exit_status=optional_str(meta.pop("exit_status", None), "metadata.exit_status"),
                          cost=as_float(meta.pop("cost", None)), api_calls=as_int(meta.pop("api_calls", None)),
                          submission=optional_str(meta.pop("submission", None), "metadata.submission"),
                          extra=meta),
    ), ctx)


def _outcome(record: dict[str, Any]) -> Outcome | None:
    status = record.get("status")
    if status is not None:
        if status not in _STATUSES:
            raise FormatError(f"status: expected one of {', '.join(_STATUSES)}, got {status!r}")
        return Outcome.from_status(status, "row:status")
    return row_outcome(record.get("resolved"), "resolved")
