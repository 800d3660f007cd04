"""LLaMA-Factory export: sharegpt JSONL + `dataset_info.json`, one sample per trained step.

LLaMA-Factory has no per-message training flag on main (hiyouga/LlamaFactory#9630 is open) and needs strictly
alternating turns. So every trained step becomes its own conversation, ending with that step, trained with
`mask_history: true` (only the last turn gets loss): exact per-step selection, at the cost of repeating the
context. Consecutive same-side turns are merged (tool results, user messages; assistant turns after an
assistant turn), a tool-calling turn becomes `function_call` (its text is dropped: sharegpt has no place for
it; counted), tool results `observation`. LLaMA-Factory renders with its own Python templates. No soft weights.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from srft.dataset.exports import ExportContext, common_warnings, conversations, tools_json, write_rows
from srft.dataset.exports import longest as longest_sample
from srft.io import atomic_write_json, atomic_write_text

DATASET = "srft_train"
SIDE = {"user": "human", "system": "human", "tool": "observation", "assistant": "gpt"}


def _turn(m: dict[str, Any], counts: Counter) -> dict[str, str]:
    calls = m.get("tool_calls") or []
    if m["role"] != "assistant" or not calls:
        return {"from": SIDE[m["role"]], "value": m["content"]}
    if m["content"].strip():
        counts["thoughts_dropped"] += 1
    items = []
    for tc in calls:
        try:
            args = json.loads(tc["function"]["arguments"])
        except json.JSONDecodeError:
            args = tc["function"]["arguments"]
        items.append({"name": tc["function"]["name"], "arguments": args})
    return {"from": "function_call", "value": json.dumps(items[0] if len(items) == 1 else items, ensure_ascii=False)}


def _sharegpt(messages: list[dict[str, Any]], counts: Counter) -> tuple[str, list[dict[str, str]]] | None:
    """(system, alternating turns) or None when the conversation cannot alternate (no user turn first)."""
    system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
    turns: list[dict[str, str]] = []
    for m in messages[1 if system else 0:]:
        turn = _turn(m, counts)
        prompt_side = turn["from"] in ("human", "observation")
        if turns and (turns[-1]["from"] in ("human", "observation")) == prompt_side:
            counts["turns_merged"] += 1
            prev = turns[-1]
            kind = prev["from"] if prev["from"] == turn["from"] else ("human" if prompt_side else "gpt")
            turns[-1] = {"from": kind, "value": f"{prev['value']}\n{turn['value']}"}
        else:
            turns.append(turn)
    if not turns or turns[0]["from"] not in ("human", "observation"):
        return None
    return system, turns


def export(ctx: ExportContext, out: Path) -> dict[str, Any]:
    counts: Counter = Counter()
    rows = []
    for conv in conversations(ctx):
        trained = [i for i, w in enumerate(conv.weights) if w is not None and w > 0]
        for i in trained:  # one conversation per trained step, ending with it
            shaped = _sharegpt(conv.messages[:i + 1], counts)
            if shaped is None:
                counts["samples_dropped_not_alternating"] += 1
                continue
            system, turns = shaped
            rows.append({"conversations": turns, "system": system, "tools": tools_json(conv.trajectory),
                         "trajectory_id": conv.trajectory.id})
    n = write_rows(out / "train.jsonl", rows)
    atomic_write_json(out / "dataset_info.json", {DATASET: {
        "file_name": "train.jsonl", "formatting": "sharegpt",
        "columns": {"messages": "conversations", "system": "system", "tools": "tools"},
        "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                 "observation_tag": "observation", "function_tag": "function_call", "system_tag": "system"}}})
    longest = longest_sample(ctx.dataset)
    atomic_write_text(out / "llamafactory.yaml", (
        "# srft build export for LLaMA-Factory; merge into your training YAML\n"
        f"dataset_dir: {(out.parent / 'llamafactory').resolve()}\n"
        f"dataset: {DATASET}\n"
        "mask_history: true      # only the last turn (the trained step) gets loss\n"
        f"cutoff_len: {longest}  # >= the longest srft sample\n"
        "template: CHOOSE        # the LLaMA-Factory template of your student model (e.g. qwen, qwen3, llama3)\n"))
    warnings = common_warnings(ctx, "llamafactory")
    if counts["thoughts_dropped"]:
        warnings.append(f"llamafactory: the text of {counts['thoughts_dropped']} tool-calling turn(s) was dropped "
                        "(sharegpt function_call turns hold only the call)")
    if counts["samples_dropped_not_alternating"]:
        warnings.append(f"llamafactory: {counts['samples_dropped_not_alternating']} sample(s) do not start with a "
                        "user turn and were left out")
    return {"files": ["train.jsonl", "dataset_info.json", "llamafactory.yaml"], "rows": n, "warnings": warnings,
            "counts": dict(sorted(counts.items()))}
