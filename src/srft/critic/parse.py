"""Strict parsing of a critic's answer: `{"steps": [{"step": i, "label": ..., "reason": ...}]}`.

Accepted wrapping (formatting, never content): surrounding whitespace, one leading `<think>...</think>` block
(reasoning models), one Markdown code fence. Everything else is checked and every problem is reported at once,
so the single re-ask can quote them all: not JSON, not an object, no `steps` list, items that are not objects,
a `step` that is not an integer, a label outside the four, a missing or non-string reason, and the step set:
missing, duplicated or unexpected step numbers. Extra keys are ignored (they carry no label).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from srft.model import LABELS

_THINK = re.compile(r"^\s*<think>.*?</think>", re.S)
_FENCE = re.compile(r"^```[a-zA-Z0-9_-]*\s*\n(.*?)\n?```$", re.S)
MAX_PROBLEMS = 8  # listed in one error; a re-ask quoting 200 problems helps nobody


class AnswerError(ValueError):
    """The answer is unusable; the message lists the problems (quoted back in the re-ask)."""


@dataclass(frozen=True)
class ParsedStep:
    step: int
    label: str
    reason: str


def _unwrap(text: str) -> str:
    text = _THINK.sub("", text, count=1).strip()
    fenced = _FENCE.match(text)
    return fenced.group(1).strip() if fenced else text


def _ranges(numbers: list[int]) -> str:
    """[1, 2, 3, 7] -> '1-3, 7' (short error messages for long trajectories)."""
    out: list[str] = []
    for n in sorted(set(numbers)):
        if out and out[-1].split("-")[-1] == str(n - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{n}"
        else:
            out.append(str(n))
    return ", ".join(out)


def _item(i: int, item: Any, problems: list[str]) -> ParsedStep | None:
    if not isinstance(item, dict):
        problems.append(f"steps[{i}] is {type(item).__name__}, expected an object")
        return None
    step, label, reason = item.get("step"), item.get("label"), item.get("reason")
    ok = True
    if isinstance(step, bool) or not isinstance(step, int):
        problems.append(f"steps[{i}].step is {step!r}, expected an integer step number")
        ok = False
    if label not in LABELS:
        problems.append(f"steps[{i}].label is {label!r}, expected one of {', '.join(LABELS)}")
        ok = False
    if not isinstance(reason, str):
        problems.append(f"steps[{i}].reason is {'missing' if reason is None else type(reason).__name__}, "
                        "expected a string")
        ok = False
    return ParsedStep(step, label, reason.strip()) if ok else None


def parse_answer(text: str, expected: list[int]) -> list[ParsedStep]:
    """The labels for exactly the `expected` step numbers, sorted; raises AnswerError listing every problem."""
    body = _unwrap(text or "")
    if not body:
        raise AnswerError("the answer is empty")
    try:
        data = json.loads(body)
    except json.JSONDecodeError as exc:
        raise AnswerError(f"the answer is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") \
            from None
    if not isinstance(data, dict) or not isinstance(data.get("steps"), list):
        got = type(data).__name__ if not isinstance(data, dict) else f"keys {sorted(data)}"
        raise AnswerError(f'expected an object with a "steps" list, got {got}')
    problems: list[str] = []
    parsed = [p for i, item in enumerate(data["steps"]) if (p := _item(i, item, problems)) is not None]
    seen: dict[int, int] = {}  # every well-formed step number, even on an item whose label is bad
    for item in data["steps"]:
        number = item.get("step") if isinstance(item, dict) else None
        if isinstance(number, int) and not isinstance(number, bool):
            seen[number] = seen.get(number, 0) + 1
    want = set(expected)
    missing = sorted(want - set(seen))
    dupes = sorted(n for n, c in seen.items() if c > 1)
    extra = sorted(set(seen) - want)
    if len(data["steps"]) != len(expected):
        problems.append(f"{len(data['steps'])} entries for {len(expected)} steps")
    if missing:
        problems.append(f"missing steps {_ranges(missing)}")
    if dupes:
        problems.append(f"duplicate steps {_ranges(dupes)}")
    if extra:
        problems.append(f"steps {_ranges(extra)} do not exist (expected {_ranges(expected)})")
    if problems:
        more = f"; and {len(problems) - MAX_PROBLEMS} more" if len(problems) > MAX_PROBLEMS else ""
        raise AnswerError("; ".join(problems[:MAX_PROBLEMS]) + more)
    return sorted(parsed, key=lambda p: p.step)


def answer_schema(expected: list[int], reason_max_chars: int = 0, style: str = "positional") -> dict[str, Any]:
    """JSON schema of a valid answer for these steps, for servers with structured output.

    positional: one `prefixItems` entry per expected step with `"step": {"const": n}` and nothing after, so a
                constrained model can produce neither a wrong count, a duplicate, nor a wrong order (llama.cpp,
                vLLM/xgrammar, SGLang);
    enum:       every item's step is an enum of the expected numbers and the length is fixed (for servers that
                lack prefixItems, e.g. OpenAI strict mode); duplicates remain possible and the parser catches them.
    """
    reason: dict[str, Any] = {"type": "string"}
    if reason_max_chars:
        reason["maxLength"] = reason_max_chars

    def item(step: dict[str, Any]) -> dict[str, Any]:
        return {"type": "object",
                "properties": {"step": step, "label": {"type": "string", "enum": list(LABELS)}, "reason": reason},
                "required": ["step", "label", "reason"], "additionalProperties": False}

    array: dict[str, Any] = {"type": "array", "minItems": len(expected), "maxItems": len(expected)}
    if style == "positional":
        array.update(prefixItems=[item({"const": n}) for n in expected], items=False)
    else:
        array["items"] = item({"type": "integer", "enum": list(expected)})
    return {"type": "object", "properties": {"steps": array}, "required": ["steps"], "additionalProperties": False}


def schema_steps(schema: dict[str, Any]) -> list[int]:
    """The step numbers an answer schema asks for (either style)."""
    array = schema["properties"]["steps"]
    if "prefixItems" in array:
        return [entry["properties"]["step"]["const"] for entry in array["prefixItems"]]
    return list(array["items"]["properties"]["step"]["enum"])
