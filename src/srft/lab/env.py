"""The lab environment: tools over a task's repository, deterministic, with invalid actions reported back.

Tools (OpenAI function-calling schemas in `TOOLS`): `ls`, `read(path)`, `search(var)`, `edit(path, line, value)`,
`undo(path)`, `test`, `submit`.

Everything an agent must carry from an observation into a later call is shown as `"key": value` with the key
that call uses: a failing test is `{"test": "test_alpha", "var": "alpha", "got": 4, "value": 7}`, a search hit
`{"path": "core.py", "line": 3}`, a suspected file `{"path": "util.py"}`. Together with the tokenizer's fused
key tokens this makes every copy a one-token induction, which is what lets a CPU-sized student learn the tools
in minutes (docs/lab.md, "Design decisions"). Success means every test passes at `submit`.
An invalid action (unknown tool, bad or missing arguments, a path or line that does not exist, unparseable
output) costs a step and returns an `Error: ...` observation, as a real scaffold would; the episode ends at
`submit` or after `max_steps` actions.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from srft.lab.tasks import Task, failure_line

SYSTEM_PROMPT = "Fix the failing tests. Files hold lines `name = value`. Call one tool per turn."


def _tool(name: str, description: str, **params: str) -> dict[str, Any]:
    props = {k: {"type": "integer" if t == "int" else "string"} for k, t in params.items()}
    return {"type": "function", "function": {"name": name, "description": description, "parameters": {
        "type": "object", "properties": props, "required": list(params)}}}


TOOLS: list[dict[str, Any]] = [
    _tool("ls", "list the files"),
    _tool("read", "show a file with line numbers", path="str"),
    _tool("search", "find where a variable is set", var="str"),
    _tool("edit", "set the value on one line of a file", path="str", line="int", value="int"),
    _tool("undo", "revert the last edit of a file", path="str"),
    _tool("test", "run the tests"),
    _tool("submit", "finish; succeeds if all tests pass"),
]
_PARAMS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
_LINE_RE = re.compile(r"^([a-z_]+) = (-?\d+)$")


@dataclass
class StepResult:
    """What one action did. `error` is set for invalid actions; `done` once the episode is over."""

    observation: str
    error: str | None = None
    done: bool = False


@dataclass
class LabEnv:
    """One episode on one task. `files` starts as the buggy repository and is changed by `edit`/`undo`."""

    task: Task
    max_steps: int = 16
    files: dict[str, list[str]] = field(init=False)
    history: dict[str, list[tuple[int, str]]] = field(init=False)  # path -> stack of (line, previous text)
    steps: int = field(default=0, init=False)
    submitted: bool = field(default=False, init=False)
    invalid: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.files = {p: list(lines) for p, lines in self.task.files.items()}
        self.history = {p: [] for p in self.files}

    # -- state ---------------------------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self.submitted or self.steps >= self.max_steps

    @property
    def resolved(self) -> bool:
        """Success: submitted, and every test passes on the submitted repository."""
        return self.submitted and not self.failures()

    def definitions(self) -> dict[str, list[int]]:
        """name -> every value assigned to it (a line that does not parse defines nothing)."""
        out: dict[str, list[int]] = {}
        for lines in self.files.values():
            for line in lines:
                m = _LINE_RE.match(line)
                if m:
                    out.setdefault(m[1], []).append(int(m[2]))
        return out

    def failures(self) -> list[tuple[str, str]]:
        """(name, report line) for each failing test, in the order of `task.expected`. A name defined twice or
        not at all also fails (edits keep names, so only a hand-made repository can show it)."""
        defs, out = self.definitions(), []
        for name, want in self.task.expected.items():
            got = defs.get(name, [])
            if len(got) != 1 or got[0] != want:
                value = got[0] if len(got) == 1 else None
                out.append((name, failure_line(name, value, want)))
        return out

    # -- acting --------------------------------------------------------------------------------------------
    def step(self, name: str, arguments: dict[str, Any] | None) -> StepResult:
        """Run one tool call. `arguments` is None when the caller could not parse them (an invalid action)."""
        if self.done:
            return StepResult("Error: the episode is over", error="episode over", done=True)
        self.steps += 1
        problem = self._check(name, arguments)
        if problem:
            self.invalid += 1
            return StepResult(f"Error: {problem}", error=problem, done=self.done)
        obs = getattr(self, f"_tool_{name}")(**arguments)
        if isinstance(obs, StepResult):  # a tool that found the arguments invalid after all
            self.invalid += 1
            obs.done = self.done
            return obs
        return StepResult(obs, done=self.done)

    def invalid_action(self, problem: str) -> StepResult:
        """Count an action the caller could not even parse (e.g. no tool call in the reply)."""
        if self.done:
            return StepResult("Error: the episode is over", error="episode over", done=True)
        self.steps += 1
        self.invalid += 1
        return StepResult(f"Error: {problem}", error=problem, done=self.done)

    def _check(self, name: str, arguments: dict[str, Any] | None) -> str | None:
        if name not in _PARAMS:
            return f"unknown tool {name!r}; tools: {', '.join(_PARAMS)}"
        if arguments is None:
            return f"arguments of {name} are not a JSON object"
        props = _PARAMS[name]["properties"]
        missing = [k for k in props if k not in arguments]
        extra = sorted(set(arguments) - set(props))
        if missing or extra:
            return f"{name} takes ({', '.join(props)}); " + (f"missing {missing}" if missing else f"got {extra}")
        for key, spec in props.items():
            value = arguments[key]
            ok = isinstance(value, int) and not isinstance(value, bool) if spec["type"] == "integer" \
                else isinstance(value, str)
            if not ok:
                return f"{name}: {key} must be {'an integer' if spec['type'] == 'integer' else 'a string'}"
        if "path" in arguments and arguments["path"] not in self.files:
            return f"no such file: {arguments['path']}"
        return None

    def _tool_ls(self) -> str:
        return "\n".join(self.files)

    def _tool_read(self, path: str) -> str:
        return "\n".join(f"{i}: {line}" for i, line in enumerate(self.files[path], 1))

    def _tool_search(self, var: str) -> str | StepResult:
        if not var.strip():
            return StepResult("Error: empty search", error="empty search")
        hits = [_location(p, i) for p, lines in self.files.items() for i, line in enumerate(lines, 1)
                if line.split(" = ")[0] == var.strip()]
        return "\n".join(hits) if hits else f"no matches for {var}"

    def _tool_edit(self, path: str, line: int, value: int) -> str | StepResult:
        lines = self.files[path]
        if not 1 <= line <= len(lines):
            return StepResult(f"Error: {path} has lines 1-{len(lines)}", error="line out of range")
        self.history[path].append((line, lines[line - 1]))
        lines[line - 1] = f"{lines[line - 1].split(' = ')[0]} = {value}"
        return _location(path, line, lines[line - 1])

    def _tool_undo(self, path: str) -> str | StepResult:
        if not self.history[path]:
            return StepResult(f"Error: no edit of {path} to undo", error="nothing to undo")
        line, previous = self.history[path].pop()
        self.files[path][line - 1] = previous
        return _location(path, line, previous)

    def _tool_test(self) -> str:
        failures = self.failures()
        total = len(self.task.expected)
        if not failures:
            return f"all {total} tests passed"
        return "\n".join(["Failing tests:", *(msg for _, msg in failures),
                          f"{total - len(failures)} passed, {len(failures)} failed"])

    def _tool_submit(self) -> str:
        self.submitted = True
        return "submitted"


def _location(path: str, line: int, text: str | None = None) -> str:
    """A location as a JSON object whose keys are `edit`'s argument names: a student copies a value from an
    observation into its next call by matching the same `"key": ` text (what small models learn first)."""
    loc = {"path": path, "line": line} if text is None else {"path": path, "line": line, "text": text}
    return json.dumps(loc)


def call_arguments(arguments: str) -> dict[str, Any] | None:
    """Parse an OpenAI `function.arguments` JSON string; None when it is not a JSON object."""
    try:
        value = json.loads(arguments)
    except (json.JSONDecodeError, TypeError):
        return None
    return value if isinstance(value, dict) else None
