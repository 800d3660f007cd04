"""One trajectory per instance from per-call LLM logs (litellm / OpenHands `llm_completions/`).

Every call's log holds the conversation so far plus the response, so call k is a prefix of call k+1. We keep
only the maximal conversations and verify the prefix relation on content (a hash chain over the canonical
messages) rather than trusting timestamps: call A is a prefix of call B when A's last chain hash occurs in B's
chain. Memory holds one Trajectory per maximal conversation, not one per call.

When several maximal conversations remain (an abandoned attempt next to the final one), the one whose last
call is latest wins; the calls of the other attempts are reported as `not_prefix`, never made into extra
trajectories (the harness outcome belongs to the final attempt's patch).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from srft.model import Trajectory, canonical_json


def _chain(traj: Trajectory) -> list[str]:
    chain, h = [], ""
    for m in traj.messages:
        h = hashlib.sha256((h + canonical_json(m.model_dump())).encode()).hexdigest()[:24]
        chain.append(h)
    return chain


@dataclass
class _Call:
    path: str
    timestamp: float
    cost: float | None
    last: str  # the chain hash of the whole conversation


@dataclass
class _Group:
    calls: list[_Call] = field(default_factory=list)
    maximal: dict[str, tuple[Trajectory, set[str]]] = field(default_factory=dict)  # last hash -> (traj, chain)


class LlmCallGrouper:
    def __init__(self) -> None:
        self.groups: dict[tuple[str, str | None], _Group] = {}
        self.report: dict[str, Any] = {"files": 0, "trajectories": 0, "prefixes": 0, "duplicate_calls": 0,
                                       "not_prefix": [], "timestamp_disorder": []}

    def add(self, traj: Trajectory, folder: str) -> None:
        self.report["files"] += 1
        group = self.groups.setdefault((folder, traj.instance_id), _Group())
        chain = _chain(traj)
        ts = traj.metadata.extra.get("llm_call_timestamp")
        call = _Call(traj.source.path, ts if isinstance(ts, (int, float)) else float("-inf"),
                     traj.metadata.cost, chain[-1])
        group.calls.append(call)
        if any(call.last in other_chain for _, other_chain in group.maximal.values()):
            return  # a prefix (or an exact repeat) of a conversation we keep
        chain_set = set(chain)
        for last in [k for k in group.maximal if k in chain_set]:
            del group.maximal[last]  # the new call extends it
        group.maximal[call.last] = (traj, chain_set)

    def finish(self) -> list[Trajectory]:
        out = []
        for (_, _), group in sorted(self.groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
            out.append(self._finish_group(group))
        self.report["trajectories"] = len(out)
        self.report["not_prefix"].sort(key=lambda x: x["path"])
        self.report["timestamp_disorder"].sort(key=lambda x: x["path"])
        return out

    def _finish_group(self, group: _Group) -> Trajectory:
        by_last = {c.last: c for c in group.calls}
        final_last = max(group.maximal, key=lambda last: (by_last[last].timestamp, by_last[last].path))
        final, chain = group.maximal[final_last]
        members = [c for c in group.calls if c.last in chain]
        seen: set[str] = set()
        for c in group.calls:
            if c.last not in chain:
                self.report["not_prefix"].append(
                    {"path": c.path, "kept": final.source.path,
                     "reason": "not a prefix of the last call's conversation (an earlier, abandoned attempt)"})
            elif c.last != final_last:
                if c.last in seen:
                    self.report["duplicate_calls"] += 1
                self.report["prefixes"] += 1
            seen.add(c.last)
        latest = max(members, key=lambda c: (c.timestamp, c.path))
        if latest.last != final_last:  # a shorter prefix claims to be later than the whole conversation
            self.report["timestamp_disorder"].append({"path": latest.path, "kept": final.source.path})
        costs = [c.cost for c in members]
        meta = final.metadata.model_copy(deep=True)
        meta.api_calls = len(members)
        meta.cost = sum(costs) if all(c is not None for c in costs) else None
        meta.extra.update({"llm_calls": len(members), "llm_calls_in_folder": len(group.calls)})
        meta.extra.pop("llm_call_timestamp", None)
        return final.model_copy(update={"metadata": meta})
