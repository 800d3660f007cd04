"""A trained student acting in the lab: greedy decoding through the same chat template it was trained on.

Each turn renders the conversation so far with `add_generation_prompt=True` (exactly the prefix the training
render holds before that assistant turn), generates greedily until `<|im_end|>`, parses one
`<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, and runs it in the environment. A reply without a
parsable tool call, an unknown tool or bad arguments is an invalid action: it costs a step and the error goes back
to the student as the observation, as a real scaffold reports a format error. Episodes run in batches (left
padding) so one `generate` call serves every unfinished task.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from srft.lab.env import SYSTEM_PROMPT, TOOLS, LabEnv, call_arguments
from srft.lab.tasks import Task
from srft.lab.tokenizer import TOOL_CALL_CLOSE, TOOL_CALL_OPEN
from srft.model import FunctionCall, Message, ToolCall

_CALL_RE = re.compile(re.escape(TOOL_CALL_OPEN) + r"(.*?)" + re.escape(TOOL_CALL_CLOSE), re.S)
_RAW_ARGS_RE = re.compile(r'^\{"name": "[^"]*", "arguments": (.*)\}$', re.S)
NO_CALL = f'no tool call; reply with {TOOL_CALL_OPEN}{{"name": ..., "arguments": {{...}}}}{TOOL_CALL_CLOSE}'


@dataclass
class StudentEpisode:
    """One student episode. `exit_status`: Submitted | LimitsExceeded | ContextExceeded."""

    task: Task
    env: LabEnv
    messages: list[Message]
    exit_status: str = ""
    generated_tokens: int = 0
    actions: list[str] = field(default_factory=list)

    @property
    def resolved(self) -> bool:
        return self.env.resolved

    def summary(self) -> dict[str, Any]:
        return {"instance_id": self.task.instance_id, "difficulty": self.task.difficulty,
                "resolved": self.resolved, "exit_status": self.exit_status, "steps": self.env.steps,
                "invalid_actions": self.env.invalid, "generated_tokens": self.generated_tokens}


def parse_reply(text: str) -> tuple[Message, str | None, dict[str, Any] | None, str | None]:
    """(assistant message, tool name, arguments, problem) for one generated reply.

    The message keeps the arguments exactly as generated, so the next prompt renders what the student wrote.
    `problem` is set when no tool call could be read; `arguments` is None when they are not a JSON object."""
    match = _CALL_RE.search(text)
    if not match:
        return Message(role="assistant", content=text), None, None, NO_CALL
    content = text[: match.start()].rstrip("\n")
    inner = match.group(1)
    try:
        obj = json.loads(inner)
    except json.JSONDecodeError as exc:
        return Message(role="assistant", content=text), None, None, f"tool call is not valid JSON ({exc.msg})"
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return Message(role="assistant", content=text), None, None, "tool call has no name"
    raw = _RAW_ARGS_RE.match(inner)
    raw_args = raw.group(1) if raw else json.dumps(obj.get("arguments", {}))
    args = call_arguments(raw_args)
    msg = Message(role="assistant", content=content,
                  tool_calls=[ToolCall(function=FunctionCall(name=obj["name"], arguments=raw_args))])
    return msg, obj["name"], args, None


def start(task: Task, max_steps: int) -> StudentEpisode:
    messages = [Message(role="system", content=SYSTEM_PROMPT), Message(role="user", content=task.statement)]
    return StudentEpisode(task=task, env=LabEnv(task, max_steps=max_steps), messages=messages)


def apply_reply(ep: StudentEpisode, text: str) -> None:
    """Parse the student's reply, act, and append the assistant turn and its observation."""
    msg, name, args, problem = parse_reply(text)
    n = ep.env.steps + 1
    if problem is not None:
        result = ep.env.invalid_action(problem)
        ep.messages += [msg, Message(role="user", content=result.observation)]
        ep.actions.append("invalid")
    else:
        call_id = f"call_{n}"
        msg.tool_calls[0].id = call_id
        result = ep.env.step(name, args)
        ep.messages += [msg, Message(role="tool", content=result.observation, tool_call_id=call_id, name=name)]
        ep.actions.append(name if result.error is None else "invalid")
    if ep.env.done:
        ep.exit_status = "Submitted" if ep.env.submitted else "LimitsExceeded"


def run_episodes(model, tokenizer, tasks: list[Task], *, max_steps: int = 16, max_new_tokens: int = 40,
                 batch_size: int = 32, max_context: int = 2048) -> list[StudentEpisode]:
    """Greedy episodes of `model` on `tasks` (order kept). Deterministic for a fixed model on CPU."""
    import torch

    episodes = [start(t, max_steps) for t in tasks]
    # Stop at the end of the turn, or right after a tool call (the template always ends the turn there).
    eos = [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids(TOOL_CALL_CLOSE)]
    tokenizer.padding_side = "left"
    model.eval()
    with torch.inference_mode():
        while True:
            active = [ep for ep in episodes if not ep.exit_status]
            if not active:
                break
            for i in range(0, len(active), batch_size):
                _turn(model, tokenizer, active[i: i + batch_size], eos, max_new_tokens, max_context)
    return episodes


def _turn(model, tokenizer, batch: list[StudentEpisode], eos: list[int], max_new_tokens: int, max_context: int) -> None:
    prompts = [tokenizer.apply_chat_template([m.to_openai() for m in ep.messages], tools=TOOLS, tokenize=False,
                                             add_generation_prompt=True) for ep in batch]
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    lengths = enc["attention_mask"].sum(dim=1).tolist()
    keep = [i for i, n in enumerate(lengths) if n + max_new_tokens <= max_context]
    for i, ep in enumerate(batch):
        if i not in keep:
            ep.exit_status = "ContextExceeded"
    if not keep:
        return
    if len(keep) < len(batch):
        batch = [batch[i] for i in keep]
        enc = tokenizer([prompts[i] for i in keep], return_tensors="pt", padding=True, add_special_tokens=False)
    out = model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=eos,
                         pad_token_id=tokenizer.pad_token_id)
    new = out[:, enc["input_ids"].shape[1]:]
    for ep, ids in zip(batch, new.tolist()):
        end = next((i for i, t in enumerate(ids) if t in eos), len(ids))
        ep.generated_tokens += min(end + 1, len(ids))
        ids = ids[: end + 1] if end < len(ids) and ids[end] != eos[0] else ids[:end]  # keep </tool_call>
        apply_reply(ep, tokenizer.decode([t for t in ids if t != tokenizer.pad_token_id], skip_special_tokens=True))


def episode_stats(episodes: list[StudentEpisode]) -> dict[str, Any]:
    """Tasks, resolved count and rate (overall, by difficulty), invalid and total actions, exit statuses."""
    by_diff: dict[str, list[bool]] = {}
    for ep in episodes:
        by_diff.setdefault(ep.task.difficulty, []).append(ep.resolved)
    n = len(episodes)
    return {"tasks": n, "resolved": sum(ep.resolved for ep in episodes),
            "success": sum(ep.resolved for ep in episodes) / n if n else None,
            "success_by_difficulty": {k: sum(v) / len(v) for k, v in sorted(by_diff.items())},
            "invalid_actions": sum(ep.env.invalid for ep in episodes), "actions": sum(ep.env.steps for ep in episodes),
            "exit_status": dict(sorted(Counter(ep.exit_status for ep in episodes).items()))}
