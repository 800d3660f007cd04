"""Helpers every reader uses: raw message -> `Message`, thought/action splitting, building the `Trajectory`.

Readers are plain functions `read(record: dict, ctx: RecordContext) -> Trajectory`; they raise `FormatError`
(a ValueError whose message says what was expected where, e.g. "messages[3].content: expected text ...").
The caller adds the file and row to the message.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from srft.model import (FunctionCall, Message, Metadata, Outcome, Source, ToolCall, Trajectory,
                        repo_from_instance_id, steps_from_messages, trajectory_id)


class FormatError(ValueError):
    """A record that does not have the shape its format promises."""


@dataclass
class RecordContext:
    """Where a record came from. `folder` is the enclosing folder's name (an instance id fallback)."""

    format: str
    path: str
    sha256: str
    row: int | None = None
    folder: str | None = None
    stem: str | None = None  # file name without the format's suffix (an instance id fallback)


ROLE_ALIASES = {"system": "system", "developer": "system", "user": "user", "human": "user",
                "assistant": "assistant", "ai": "assistant", "gpt": "assistant", "tool": "tool",
                "function": "tool", "ipython": "tool"}

# Steps the scaffold wrote instead of the model. SWE-agent's autosubmission after an error writes
# "Exit due to <reason>"; SWE-smith's converter rewrites a cost-limit exit into this fixed submit text.
SWE_SMITH_REWRITTEN_SUBMIT = ("Since we have successfully fixed the issue and verified it works, "
                              "let's submit the changes:")
_SYNTHETIC_RE = re.compile(r"^\s*Exit due to [\w ,/-]+\s*$")


def is_synthetic_text(content: str) -> bool:
    return bool(_SYNTHETIC_RE.match(content)) or content.startswith(SWE_SMITH_REWRITTEN_SUBMIT)


# -- raw values -> canonical ------------------------------------------------------------------------------

def text_of(content: Any, where: str) -> str:
    """OpenAI content -> text: str as is, None -> "", a list of parts -> the text parts joined by newlines
    (non-text parts such as images carry no text for a coding-agent trace and are dropped)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for i, part in enumerate(content):
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict):
                text = part.get("text")
                if text is not None and not isinstance(text, str):
                    raise FormatError(f"{where}[{i}].text: expected a string, got {type(text).__name__}")
                if text is not None:
                    texts.append(text)
            else:
                raise FormatError(f"{where}[{i}]: expected a content part object, got {type(part).__name__}")
        return "\n".join(texts)
    raise FormatError(f"{where}: expected text or a list of text parts, got {type(content).__name__}")


def optional_str(value: Any, where: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise FormatError(f"{where}: expected a string, got {type(value).__name__}")


def tool_calls_of(raw: Any, where: str) -> list[ToolCall] | None:
    """OpenAI tool calls; `arguments` kept as the JSON string the model wrote (a dict is serialised)."""
    if raw is None or raw == []:
        return None
    if isinstance(raw, str):  # some exports store the list as a JSON string
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise FormatError(f"{where}: a string that is not a JSON list of tool calls") from exc
    if not isinstance(raw, list):
        raise FormatError(f"{where}: expected a list of tool calls, got {type(raw).__name__}")
    calls = []
    for i, call in enumerate(raw):
        if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
            raise FormatError(f"{where}[{i}]: expected {{'function': {{'name', 'arguments'}}}}")
        fn = call["function"]
        name = fn.get("name")
        if not isinstance(name, str):
            raise FormatError(f"{where}[{i}].function.name: expected a string, got {type(name).__name__}")
        args = fn.get("arguments", "{}")
        if args is None:
            args = "{}"
        elif isinstance(args, (dict, list)):
            args = json.dumps(args, ensure_ascii=False)
        elif not isinstance(args, str):
            raise FormatError(f"{where}[{i}].function.arguments: expected a JSON string or object")
        # every field is checked above, so skip pydantic's re-validation (the hot path on 100k-row data sets)
        calls.append(ToolCall.model_construct(
            id=optional_str(call.get("id"), f"{where}[{i}].id"),
            type=optional_str(call.get("type"), f"{where}[{i}].type") or "function",
            function=FunctionCall.model_construct(name=name, arguments=args)))
    return calls or None


def message_of(raw: Any, where: str, *, role: str | None = None, content_key: str = "content") -> Message:
    """One OpenAI-shaped dict -> Message (extra keys such as cache_control or provider fields are dropped)."""
    if not isinstance(raw, dict):
        raise FormatError(f"{where}: expected a message object, got {type(raw).__name__}")
    raw_role = role or raw.get("role")
    canonical = ROLE_ALIASES.get(raw_role) if isinstance(raw_role, str) else None
    if canonical is None:
        raise FormatError(f"{where}.role: unknown role {raw_role!r} (expected system, user, assistant or tool)")
    tool_call_id = raw.get("tool_call_id")
    if tool_call_id is None and isinstance(raw.get("tool_call_ids"), list) and raw["tool_call_ids"]:
        tool_call_id = raw["tool_call_ids"][0]  # SWE-agent: one observation per (first) call
    return Message.model_construct(  # fields checked one by one here (role, text, tool calls, ids)
        role=canonical,
        content=text_of(raw.get(content_key), f"{where}.{content_key}"),
        tool_calls=tool_calls_of(raw.get("tool_calls"), f"{where}.tool_calls") if canonical == "assistant" else None,
        tool_call_id=optional_str(tool_call_id, f"{where}.tool_call_id") if canonical == "tool" else None,
        name=optional_str(raw.get("name"), f"{where}.name") if canonical == "tool" else None,
        reasoning_content=optional_str(raw.get("reasoning_content"), f"{where}.reasoning_content"),
    )


def message_list(raw: Any, where: str) -> list[Any]:
    if not isinstance(raw, list):
        raise FormatError(f"{where}: expected a list of messages, got {type(raw).__name__}")
    return raw


# -- thought / action --------------------------------------------------------------------------------------

_BASH_BLOCK = re.compile(r"```bash\s*\n(.*?)\n```", re.S)  # mini-swe-agent v1's action_regex
_FENCE = re.compile(r"```[^\n`]*\n(.*?)```", re.S)
_XML_FUNCTION = re.compile(r"<function=[^>]+>.*?</function>", re.S)


def split_bash_block(content: str) -> tuple[str, str] | None:
    """mini-swe-agent v1: exactly one ```bash block is the action (more or fewer is a format error the
    scaffold rejects, so the turn has no action). The THOUGHT is the rest, without its label."""
    blocks = list(_BASH_BLOCK.finditer(content))
    if len(blocks) != 1:
        return None
    block = blocks[0]
    thought = (content[:block.start()] + content[block.end():]).strip()
    thought = re.sub(r"^THOUGHT:\s*", "", thought)
    return thought, block.group(1)


def split_last_fence(content: str) -> tuple[str, str] | None:
    """SWE-agent's thought_action parser: the last fenced block is the command, the rest is the thought."""
    blocks = list(_FENCE.finditer(content))
    if not blocks:
        return None
    block = blocks[-1]
    thought = (content[:block.start()] + content[block.end():]).strip()
    thought = re.sub(r"^DISCUSSION\s*", "", thought)
    return thought, block.group(1).strip("\n")


def split_xml_function(content: str) -> tuple[str, str] | None:
    """SWE-agent's xml_function_calling: `<function=name><parameter=...>...</function>` is the action."""
    blocks = list(_XML_FUNCTION.finditer(content))
    if not blocks:
        return None
    thought = content[:blocks[0].start()] + content[blocks[-1].end():]
    return thought.strip(), "\n".join(b.group(0) for b in blocks)


def tool_call_action(msg: Message) -> str:
    """The action of a tool-calling turn: a bash `command` argument as is, anything else as name(args)."""
    lines = []
    for call in msg.tool_calls or []:
        args = call.arguments_dict()
        if args is not None and set(args) == {"command"} and isinstance(args["command"], str):
            lines.append(args["command"])
        else:
            lines.append(f"{call.function.name}({call.function.arguments})")
    return "\n".join(lines)


def default_split(msg: Message) -> tuple[str, str]:
    """Thought/action for formats that do not record them: tool calls when present, else the text actions
    the SWE scaffolds use (xml function, ```bash block, last fenced block), else no action."""
    if msg.tool_calls:
        return msg.content, tool_call_action(msg)
    for split in (split_xml_function, split_bash_block, split_last_fence):
        found = split(msg.content)
        if found:
            return found
    return msg.content, ""


# -- building ----------------------------------------------------------------------------------------------

@dataclass
class Parts:
    """What a reader extracted, before the shared construction and checks."""

    messages: list[Message]
    instance_id: str | None
    thoughts: list[str] | None = None
    actions: list[str] | None = None
    demo: set[int] = field(default_factory=set)
    synthetic: set[int] = field(default_factory=set)
    tools: list[dict[str, Any]] | None = None
    outcome: Outcome | None = None
    metadata: Metadata = field(default_factory=Metadata)
    repo: str | None = None


def build(parts: Parts, ctx: RecordContext) -> Trajectory:
    messages = parts.messages
    assistant = [i for i, m in enumerate(messages) if m.role == "assistant"]
    if not assistant:
        raise FormatError(f"no assistant message ({len(messages)} messages)")
    thoughts, actions = parts.thoughts, parts.actions
    if thoughts is None or actions is None:
        split = [default_split(messages[i]) for i in assistant]
        thoughts = [t for t, _ in split] if thoughts is None else thoughts
        actions = [a for _, a in split] if actions is None else actions
    synthetic = set(parts.synthetic) | {i for i in assistant if is_synthetic_text(messages[i].content)}
    instance_id = parts.instance_id or None
    return Trajectory(
        id=trajectory_id(instance_id, messages),
        instance_id=instance_id,
        repo=parts.repo or repo_from_instance_id(instance_id),
        source=Source(format=ctx.format, path=ctx.path, row=ctx.row, sha256=ctx.sha256),
        messages=messages,
        steps=steps_from_messages(messages, thoughts=thoughts, actions=actions, demo=parts.demo,
                                  synthetic=synthetic),
        tools=parts.tools,
        outcome=parts.outcome or Outcome.unknown(),
        metadata=_json_safe_extra(parts.metadata),
    )


def _json_safe_extra(metadata: Metadata) -> Metadata:
    """Extras travel as JSON in the store; values a Parquet row may hold (timestamps, bytes) become text."""
    if metadata.extra:
        metadata.extra = json.loads(json.dumps(metadata.extra, default=str))
    return metadata


def as_float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def as_int(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def row_outcome(value: Any, column: str) -> Outcome | None:
    """A `resolved`-like column: bool, 0/1 (or "true"/"false"); None/absent means no in-row outcome."""
    if value is None:
        return None
    if isinstance(value, str) and value.lower() in ("true", "false", "0", "1"):
        value = value.lower() in ("true", "1")
    if isinstance(value, bool) or (isinstance(value, (int, float)) and value in (0, 1)):
        return Outcome.from_status("resolved" if value else "unresolved", f"row:{column}")
    raise FormatError(f"{column}: expected true/false or 0/1, got {value!r}")


def tools_of(raw: Any, where: str) -> list[dict[str, Any]] | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise FormatError(f"{where}: a string that is not JSON") from exc
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        raise FormatError(f"{where}: expected a list of tool schemas")
    return raw or None
