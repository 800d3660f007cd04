"""Builders for the critic tests: small trajectories in the two shapes scaffolds produce.

  tool_traj: OpenAI tool calls answered by `tool` messages (OpenHands, mini-swe-agent 1.1, the lab)
  bash_traj: text actions (a ```bash block in the assistant content) answered by `user` messages
             (mini-swe-agent 1, SWE-agent)
Each step is (thought, action, observation); for tool_traj the action is a ToolCall from `call(...)`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from srft.io import write_trajectories
from srft.model import (FunctionCall, Message, Outcome, Source, ToolCall, Trajectory, steps_from_messages,
                        trajectory_id)

LAB_TOOLS = [{"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}
             for n in ("read_file", "edit_line", "undo", "run_tests", "submit", "list_files", "search")]


def call(name: str, _raw: str | None = None, **args) -> ToolCall:
    """A tool call; `_raw` gives the arguments string verbatim (e.g. invalid JSON)."""
    return ToolCall(id=f"call_{name}", function=FunctionCall(name=name, arguments=_raw or json.dumps(args)))


def _finish(messages: list[Message], steps, *, instance: str, resolved: bool | None, tools,
            thoughts=None, actions=None) -> Trajectory:
    status = {True: "resolved", False: "unresolved", None: "unknown"}[resolved]
    return Trajectory(id=trajectory_id(instance, messages), instance_id=instance,
                      source=Source(format="test", path=f"{instance}.json", sha256="0" * 64), messages=messages,
                      steps=steps_from_messages(messages, thoughts=thoughts, actions=actions), tools=tools,
                      outcome=Outcome.from_status(status, "test"))


def tool_traj(steps: list[tuple[str, ToolCall | None, str]], *, instance: str = "repo__pkg-1",
              resolved: bool | None = False, task: str = "Fix the bug: add() subtracts.",
              tools=LAB_TOOLS) -> Trajectory:
    messages = [Message(role="system", content="You fix bugs with tools."), Message(role="user", content=task)]
    for thought, tc, observation in steps:
        messages.append(Message(role="assistant", content=thought, tool_calls=[tc] if tc else None))
        messages.append(Message(role="tool", content=observation, tool_call_id=tc.id if tc else None,
                                name=tc.function.name if tc else None))
    return _finish(messages, None, instance=instance, resolved=resolved, tools=tools)


def bash_traj(steps: list[tuple[str, str, str]], *, instance: str = "repo__pkg-2", resolved: bool | None = False,
              task: str = "<pr_description>Fix the bug: add() subtracts.</pr_description>") -> Trajectory:
    messages = [Message(role="system", content="You are a helpful assistant."), Message(role="user", content=task)]
    for thought, command, observation in steps:
        body = f"THOUGHT: {thought}\n\n```bash\n{command}\n```" if command else f"THOUGHT: {thought}"
        messages.append(Message(role="assistant", content=body))
        messages.append(Message(role="user", content=observation))
    return _finish(messages, None, instance=instance, resolved=resolved, tools=None,
                   thoughts=[s[0] for s in steps], actions=[s[1] for s in steps])


def rc(code: int, output: str) -> str:
    """An observation in mini-swe-agent's shape."""
    return f"<returncode>{code}</returncode>\n<output>\n{output}\n</output>"


def simple_traj(n_steps: int, *, instance: str, resolved: bool | None = False, hint: dict[int, str] | None = None,
                obs_chars: int = 40) -> Trajectory:
    """n distinct read-only steps; `hint` puts `label@<step>:<name>` into a step's thought (the fake server
    obeys; several comma-separated names are the answers of successive samples)."""
    hint = hint or {}
    steps = [(f"look at part {i}" + (f" label@{i}:{hint[i]}" if i in hint else ""),
              call("read_file", path=f"src/mod{i}.py"), f"contents of mod{i} " + "x" * obs_chars)
             for i in range(1, n_steps + 1)]
    return tool_traj(steps, instance=instance, resolved=resolved, task=f"Task of {instance}: fix it.")


def write_store(directory: Path, trajectories: list[Trajectory]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    write_trajectories(directory / "trajectories.parquet", sorted(trajectories, key=lambda t: t.id))
    return directory


# -- user plug-ins, loaded by dotted path ('critic_support:build_constant') ------------------------------------
class ConstantCritic:
    """A whole-trajectory critic (the `Critic` protocol) that gives every step one label."""

    prompt_hash = None

    def __init__(self, label: str = "good"):
        self.label_name, self.id = label, f"constant:{label}"

    async def label(self, traj):
        from srft.critic import TrajectoryResult, labelled_steps
        from srft.labels import StepLabel

        return TrajectoryResult(traj.id, "ok", [StepLabel(trajectory_id=traj.id, step=n, label=self.label_name,
                                                          reason="constant", source=self.id)
                                                for n in labelled_steps(traj)])

    async def aclose(self) -> None:
        return None


def sigkill_after_answers(cmd: list[str], server, answers: int = 5) -> subprocess.Popen:
    """Start `cmd` (an `srft annotate` against `server`), SIGKILL it once the server has finished `answers`
    requests, and return the dead process."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while sum(r.finished is not None for r in server.requests) < answers:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "the annotate run never got going"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    return proc


def build_constant(options, ctx):
    return ConstantCritic(**options)


class EchoBackend:
    """A chat backend (the `ChatBackend` protocol) answering every schema with one label; counts its calls."""

    id = "echo"

    def __init__(self, label: str = "unnecessary"):
        self.label_name, self.calls = label, 0

    def fingerprint(self):
        return {"backend": "echo", "label": self.label_name}

    async def complete(self, messages, *, schema, max_tokens):
        from srft.critic import Completion
        from srft.critic.parse import schema_steps

        self.calls += 1
        steps = [{"step": n, "label": self.label_name, "reason": "echo"} for n in schema_steps(schema)]
        return Completion(json.dumps({"steps": steps}), 10, 5, "stop")

    async def aclose(self) -> None:
        return None


def build_echo(options, ctx):
    return EchoBackend(**options)
