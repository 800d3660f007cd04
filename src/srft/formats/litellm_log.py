"""OpenAI-style LLM-call logs as litellm writes them (OpenHands `llm_completions/<instance_id>/*.json`).

One file per LLM call: {"messages": [...conversation so far...], "response": {chat.completion}, "args",
"kwargs": {"tools": [...]}, "timestamp", "cost"}. `content` is a list of text parts or null. The assistant turn
this call produced is `response.choices[0].message`, appended here. A run writes one file per call, so the
ingest stage keeps only the last call of an instance (the whole conversation) and counts the others as
prefixes (`srft.formats._llm_calls`). The instance id comes from the record, else the enclosing folder.
"""

from __future__ import annotations

from typing import Any

from srft.formats._common import (FormatError, Parts, RecordContext, as_float, build, message_list, message_of,
                                  tools_of)
from srft.model import Metadata, Trajectory


def read(record: dict[str, Any], ctx: RecordContext) -> Trajectory:
    messages = [message_of(m, f"messages[{i}]") for i, m in enumerate(message_list(record.get("messages"),
                                                                                     "messages"))]
    response = record.get("response")
    model = None
    if response is not None:
        if not isinstance(response, dict):
            raise FormatError(f"response: expected a chat.completion object, got {type(response).__name__}")
        choices = response.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise FormatError("response.choices: expected a non-empty list")
        messages.append(message_of(choices[0].get("message"), "response.choices[0].message", role="assistant"))
        model = response.get("model") if isinstance(response.get("model"), str) else None
    kwargs = record.get("kwargs") if isinstance(record.get("kwargs"), dict) else {}
    timestamp = as_float(record.get("timestamp"))
    last_call = next((m.tool_calls[-1].function.name for m in reversed(messages)
                      if m.role == "assistant" and m.tool_calls), None)
    extra: dict[str, Any] = {"llm_call_timestamp": timestamp, "last_tool_call": last_call}
    return build(Parts(
        messages=messages,
        instance_id=_instance_id(record, kwargs, ctx),
        tools=tools_of(kwargs.get("tools"), "kwargs.tools"),
        metadata=Metadata(model=model, cost=as_float(record.get("cost")), api_calls=1, extra=extra),
    ), ctx)


def _instance_id(record: dict[str, Any], kwargs: dict[str, Any], ctx: RecordContext) -> str | None:
    meta = kwargs.get("metadata") if isinstance(kwargs.get("metadata"), dict) else {}
    for value in (record.get("instance_id"), meta.get("instance_id")):
        if isinstance(value, str) and value:
            return value
    return ctx.folder
