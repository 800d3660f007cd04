"""Exporters: reshape the built samples into files other trainers load. Masks are never recomputed here.

    EXPORTERS   name -> "module:function"; each function is `export(ctx, out_dir) -> result dict`
                ({"files": [...], "rows": n, "warnings": [...]}), writing only inside `out_dir`.

Two kinds: `trl` ships our exact token ids and labels; the others (axolotl, verl, torchtune, llamafactory) ship
messages with a per-message training flag and let the trainer re-render them with its own template, so they
can represent *which steps* are trained but not soft weights, and their token boundaries are the trainer's.
Each exporter warns about what its format cannot represent (see docs/masks.md).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from srft.model import Trajectory
from srft.registry import resolve

EXPORTERS: dict[str, str] = {
    "trl": "srft.dataset.exports.trl:export",
    "axolotl": "srft.dataset.exports.axolotl:export",
    "verl": "srft.dataset.exports.verl:export",
    "torchtune": "srft.dataset.exports.torchtune:export",
    "llamafactory": "srft.dataset.exports.llamafactory:export",
}


def get_exporter(name: str):
    return resolve(EXPORTERS, name, "export format")


@dataclass
class ExportContext:
    """What `srft build` hands every exporter."""

    dataset: Any                          # the saved datasets.Dataset (columns of DEVELOPERS.md "Build dataset")
    messages: list[list[int]]             # per row: the trajectory message indices the sample renders
    trajectories: dict[str, Trajectory]   # id -> trajectory (with policy weights on its steps)
    renderer: Any                         # srft.dataset.render.Renderer of the student tokenizer
    config: Any                           # srft.dataset.build.BuildConfig


@dataclass
class Conversation:
    """One sample as messages: OpenAI dicts (tool-call arguments as JSON strings) + per-message weight
    (the step's weight in this sample for assistant messages, None for the others)."""

    trajectory: Trajectory
    messages: list[dict[str, Any]]
    weights: list[float | None]


def conversations(ctx: ExportContext) -> Iterator[Conversation]:
    """The samples as conversations, cut after the last step they contain (a truncated sample ends there)."""
    spans = ctx.dataset["step_spans"]
    ids = ctx.dataset["trajectory_id"]
    for row, indices in enumerate(ctx.messages):
        traj = ctx.trajectories[ids[row]]
        weight_of = {traj.steps[s["step"] - 1].message_index: s["weight"] for s in spans[row]}
        last = max(weight_of) if weight_of else -1
        kept = [j for j in indices if j <= last]
        msgs = [traj.messages[j].to_openai() for j in kept]
        weights = [weight_of.get(j, 0.0) if traj.messages[j].role == "assistant" else None for j in kept]
        yield Conversation(traj, msgs, weights)


def common_warnings(ctx: ExportContext, name: str) -> list[str]:
    """What no message-level format can carry: soft weights and our exact token boundaries."""
    out = []
    if ctx.config.policy.soft:
        out.append(f"{name}: soft label weights cannot be represented; steps with weight > 0 are trained at "
                   "full weight")
    profile = ctx.renderer.profile
    if not profile.prefix_preserving:
        out.append(f"{name}: the chat template is not prefix-preserving ({'; '.join(profile.prefix_failures[:2])}); "
                   "a trainer that re-renders the messages may place the step masks differently than srft's "
                   "token dataset")
    return out


def longest(dataset) -> int:
    """Tokens in the longest sample (computed in Arrow, without loading the ids)."""
    import pyarrow.compute as pc

    if len(dataset) == 0:
        return 0
    return int(pc.max(pc.list_value_length(dataset.data.table.column("input_ids"))).as_py())


def tools_json(traj: Trajectory) -> str:
    """Tool schemas as JSON in their original key order: templates print them with `tojson`, so the order is
    part of the prompt the student sees."""
    return json.dumps(traj.tools or [], ensure_ascii=False)


def write_rows(path, rows: list[dict[str, Any]]) -> int:
    """JSONL keeping each object's key order (see `tools_json`), atomically; rows come in the dataset's order
    and keys in the data's order, so the same build writes the same bytes."""
    from srft.io import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return len(rows)


def mixed_tool_schemas(ctx: ExportContext) -> int:
    """Trajectories whose tool schemas differ in keys: loaded through `datasets` (Arrow structs), they gain
    null-filled keys, so a trainer that reads tools that way renders a different tool list."""
    def keys(obj, prefix=""):
        if isinstance(obj, dict):
            return {f"{prefix}{k}" for k in obj} | {x for k, v in obj.items() for x in keys(v, f"{prefix}{k}.")}
        return set()

    return sum(1 for t in ctx.trajectories.values()
               if t.tools and len({frozenset(keys(tool)) for tool in t.tools}) > 1)
