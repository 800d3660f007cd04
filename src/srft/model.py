"""The one data model every stage consumes: Trajectory -> Step -> messages, outcome, provenance.

Readers (`srft.formats`) produce `Trajectory` objects; the critic labels their steps; policies weigh them;
the mask engine renders them. Nothing passes raw dicts between stages.

Shapes:
  Trajectory.messages  list[Message] in OpenAI chat shape (system/user/assistant/tool), text content only.
  Trajectory.steps     list[Step], one per assistant turn, `number` counted from 1 in conversation order.
  Step.message_index   index into Trajectory.messages of that assistant turn.
  Step.observation_indices  indices of the messages that answer it (tool results / user observations),
                       i.e. every non-assistant message between this assistant turn and the next one.

Serialisation is a flat record per trajectory (`to_record` / `from_record`) with a fixed Arrow schema
(`ARROW_SCHEMA`), so Parquet and JSONL round-trip losslessly. Free-form dicts (tool schemas, metadata extras)
travel as JSON strings: Arrow cannot hold mixed-type structs, and a string is exact.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

LABELS: tuple[str, ...] = ("good", "unnecessary", "mistake", "recover")
Label = Literal["good", "unnecessary", "mistake", "recover"]
Role = Literal["system", "user", "assistant", "tool"]

# Harness status of an instance. `error` and `empty_patch` count as unresolved (as SWE-bench scores them),
# with the reason kept so users can re-run flaky evaluations.
OutcomeStatus = Literal["resolved", "unresolved", "error", "empty_patch", "unknown"]

SCHEMA_VERSION = 1


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FunctionCall(_Model):
    """An OpenAI function call. `arguments` is the JSON string exactly as the model wrote it."""

    name: str
    arguments: str = "{}"


class ToolCall(_Model):
    """One tool call of an assistant message (OpenAI shape)."""

    id: str | None = None
    type: str = "function"
    function: FunctionCall

    def arguments_dict(self) -> dict[str, Any] | None:
        """Parsed arguments, or None when the model wrote invalid JSON (kept verbatim in `function.arguments`)."""
        try:
            value = json.loads(self.function.arguments)
        except (json.JSONDecodeError, TypeError):
            return None
        return value if isinstance(value, dict) else None


class Message(_Model):
    """One chat message in OpenAI shape. `content` is always text ("" when the source had null/no text)."""

    role: Role
    content: str = ""
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    name: str | None = None
    reasoning_content: str | None = None

    def to_openai(self) -> dict[str, Any]:
        """The message as a plain dict for chat templates and APIs (absent optional fields left out)."""
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [tc.model_dump() for tc in self.tool_calls]
        for key in ("tool_call_id", "name", "reasoning_content"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


class Step(_Model):
    """One assistant turn. Labels and weights are attached later by the critic and the policy."""

    number: int = Field(ge=1, description="1-based position among assistant turns; every label file uses it")
    message_index: int = Field(ge=0, description="index of the assistant message in Trajectory.messages")
    thought: str = Field("", description="the reasoning text of the turn (content minus the action)")
    action: str = Field("", description="the action: a shell command, or tool calls rendered as name(args)")
    observation_indices: list[int] = Field(default_factory=list, description="messages answering this step")
    is_demo: bool = Field(False, description="a demonstration turn (SWE-agent is_demo): never trained")
    synthetic: bool = Field(False, description="added by the scaffold, not the model (e.g. auto-submit)")
    final: bool = Field(False, description="the last step of the trajectory")
    label: Label | None = Field(None, description="step label from an annotation source")
    label_reason: str | None = Field(None, description="why the critic chose the label")
    label_source: str | None = Field(None, description="critic id / human / oracle")
    label_probs: dict[Label, float] | None = Field(
        None, description="the critic's share of votes (or probability) per label; None = one hard label")
    weight: float | None = Field(None, ge=0.0, le=1.0, description="loss weight set by a policy")

    @field_validator("label_probs", mode="before")
    @classmethod
    def _present(cls, value: Any) -> Any:
        """The Arrow struct has a field per label; the labels without a share read back as None."""
        return {k: v for k, v in value.items() if v is not None} if isinstance(value, dict) else value


class TestResult(_Model):
    """One evaluation test of the harness run on the final patch (SWE-bench `tests_status`)."""

    __test__ = False  # not a pytest class

    name: str
    group: str = Field(description="FAIL_TO_PASS | PASS_TO_PASS | FAIL_TO_FAIL | PASS_TO_FAIL")
    passed: bool


class Outcome(_Model):
    """Whether the harness resolved the instance, and where that fact came from."""

    resolved: bool | None = None
    status: OutcomeStatus = "unknown"
    source: str | None = Field(None, description="file (or 'row:<column>') the outcome was read from")
    detail: str | None = Field(None, description="free text, e.g. a conflict between two sources")
    tests: list[TestResult] | None = Field(None, description="per-test results, when the harness report has them")

    @classmethod
    def unknown(cls) -> Outcome:
        return cls()

    @classmethod
    def from_status(cls, status: OutcomeStatus, source: str | None, detail: str | None = None) -> Outcome:
        resolved = {"resolved": True, "unknown": None}.get(status, False)
        return cls(resolved=resolved, status=status, source=source, detail=detail)


class Source(_Model):
    """Provenance: the file (and row, for data sets) a trajectory was read from."""

    format: str
    path: str
    row: int | None = None
    sha256: str = Field(description="sha256 of the raw record (file bytes, or the row's canonical JSON)")


class Metadata(_Model):
    model: str | None = None
    exit_status: str | None = None
    cost: float | None = None
    api_calls: int | None = None
    submission: str | None = Field(None, description="the final patch, when the source has it")
    extra: dict[str, Any] = Field(default_factory=dict, description="format-specific fields, JSON-serialisable")


class Trajectory(_Model):
    id: str
    instance_id: str | None = None
    repo: str | None = None
    source: Source
    messages: list[Message]
    steps: list[Step]
    tools: list[dict[str, Any]] | None = Field(None, description="tool JSON schemas offered to the agent")
    outcome: Outcome = Field(default_factory=Outcome)
    metadata: Metadata = Field(default_factory=Metadata)

    # -- views -------------------------------------------------------------------------------------------
    @property
    def resolved(self) -> bool | None:
        return self.outcome.resolved

    def step(self, number: int) -> Step:
        return self.steps[number - 1]

    def observations(self, step: Step) -> list[Message]:
        return [self.messages[i] for i in step.observation_indices]

    def task(self) -> str:
        """The task statement: the first user message (SWE-style scaffolds put the issue there)."""
        return next((m.content for m in self.messages if m.role == "user"), "")

    # -- serialisation ---------------------------------------------------------------------------------
    def to_record(self) -> dict[str, Any]:
        """A flat, Arrow-friendly dict (see ARROW_SCHEMA); inverse of `from_record`."""
        return {
            "schema_version": SCHEMA_VERSION,
            "id": self.id,
            "instance_id": self.instance_id,
            "repo": self.repo,
            "source": self.source.model_dump(),
            "messages": [_message_record(m) for m in self.messages],
            "steps": [s.model_dump() for s in self.steps],
            # key order kept: chat templates print tool schemas with `tojson`, so order is part of the prompt
            "tools_json": None if self.tools is None else json.dumps(self.tools, ensure_ascii=False),
            "outcome": self.outcome.model_dump(),
            "metadata": {**self.metadata.model_dump(exclude={"extra"}),
                         "extra_json": json.dumps(self.metadata.extra, sort_keys=True)},
        }

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> Trajectory:
        meta = dict(rec["metadata"])
        extra = json.loads(meta.pop("extra_json") or "{}")
        tools = rec.get("tools_json")
        return cls(
            id=rec["id"],
            instance_id=rec.get("instance_id"),
            repo=rec.get("repo"),
            source=Source(**rec["source"]),
            messages=[_message_from_record(m) for m in rec["messages"]],
            steps=[Step(**s) for s in rec["steps"]],
            tools=None if tools is None else json.loads(tools),
            outcome=Outcome(**rec["outcome"]),
            metadata=Metadata(**meta, extra=extra),
        )


def _message_record(m: Message) -> dict[str, Any]:
    rec = m.model_dump()
    if rec["tool_calls"] is None:
        rec["tool_calls"] = None
    return rec


def _message_from_record(rec: dict[str, Any]) -> Message:
    rec = dict(rec)
    if rec.get("tool_calls") is not None:
        rec["tool_calls"] = [ToolCall(**tc) for tc in rec["tool_calls"]]
    return Message(**rec)


# -- construction helpers used by every reader ------------------------------------------------------------

_INSTANCE_RE = re.compile(r"^(?P<owner>[A-Za-z0-9_.\-]+?)__(?P<name>[A-Za-z0-9_.\-]+?)(?:-\d+|\.[0-9a-f]{8}\..*)$")


def repo_from_instance_id(instance_id: str | None) -> str | None:
    """'django__django-11099' -> 'django/django'; SWE-smith 'owner__repo.abc12345.pr_1' -> 'owner/repo'."""
    if not instance_id:
        return None
    match = _INSTANCE_RE.match(instance_id)
    if not match:
        return None
    return f"{match['owner']}/{match['name']}"


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def trajectory_id(instance_id: str | None, messages: list[Message]) -> str:
    """Stable, content-derived id: the same conversation for the same instance always gets the same id,
    whatever file or format it came from (so duplicates collapse)."""
    payload = canonical_json({"instance_id": instance_id, "messages": [m.model_dump() for m in messages]})
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def steps_from_messages(messages: list[Message], *, thoughts: list[str] | None = None,
                        actions: list[str] | None = None, demo: set[int] | None = None,
                        synthetic: set[int] | None = None) -> list[Step]:
    """One Step per assistant message, observations = the non-assistant messages up to the next one.

    `thoughts`/`actions` (one per assistant turn) come from the reader, which knows how its scaffold splits
    them; by default the thought is the content and the action is the rendered tool calls.
    `demo`/`synthetic` hold message indices of assistant turns to flag.
    """
    demo, synthetic = demo or set(), synthetic or set()
    assistant_idx = [i for i, m in enumerate(messages) if m.role == "assistant"]
    steps: list[Step] = []
    for n, idx in enumerate(assistant_idx):
        end = assistant_idx[n + 1] if n + 1 < len(assistant_idx) else len(messages)
        msg = messages[idx]
        steps.append(Step(
            number=n + 1,
            message_index=idx,
            thought=thoughts[n] if thoughts is not None else msg.content,
            action=actions[n] if actions is not None else render_tool_calls(msg.tool_calls),
            observation_indices=[j for j in range(idx + 1, end) if messages[j].role != "system"],
            is_demo=idx in demo,
            synthetic=idx in synthetic,
            final=n == len(assistant_idx) - 1,
        ))
    return steps


def render_tool_calls(tool_calls: list[ToolCall] | None) -> str:
    """Tool calls as readable text, e.g. `bash({"command": "ls"})`, one per line."""
    if not tool_calls:
        return ""
    return "\n".join(f"{tc.function.name}({tc.function.arguments})" for tc in tool_calls)
