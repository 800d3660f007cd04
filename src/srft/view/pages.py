"""Page contents as plain data (no HTML here: the Jinja templates render it, autoescaped).

`list_context` filters and pages the trajectory list; `trajectory_context` lays out one trajectory as cards.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from srft.model import LABELS, Message, Trajectory
from srft.view.db import HumanLabel
from srft.view.store import Annotations, Store, Summary

PAGE_SIZE = 100
LONG_LINES, LONG_CHARS = 40, 4000  # an observation longer than this is collapsed behind a preview
PREVIEW_LINES = 12
ORDERS = ("", "confidence", "disagreement")


@dataclass(frozen=True)
class ListFilters:
    outcome: str = ""  # resolved | unresolved | unknown
    format: str = ""  # Source.format
    mistakes: str = ""  # a source name, or "any": trajectories with at least one `mistake` there
    disagree: bool = False  # a human label differs from some source's label
    labelled: str = ""  # yes | no | partial: by the current annotator
    q: str = ""  # substring of id, instance id, repo or source path
    order: str = ""  # "" = by id | confidence (least sure critics first) | disagreement (most split steps first)
    page: int = 1

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> ListFilters:
        try:
            page = max(1, int(query.get("page", "1")))
        except ValueError:
            page = 1
        return cls(outcome=query.get("outcome", ""), format=query.get("format", ""),
                   mistakes=query.get("mistakes", ""), disagree=query.get("disagree", "") in ("1", "on", "true"),
                   labelled=query.get("labelled", ""), q=query.get("q", "").strip(),
                   order=query.get("order", "") if query.get("order") in ORDERS else "", page=page)

    def query(self, **change: Any) -> str:
        """The query string of these filters with some changed (for pager links)."""
        from urllib.parse import urlencode

        values = {**self.__dict__, **change}
        values["disagree"] = "1" if values["disagree"] else ""
        return urlencode({k: v for k, v in values.items() if v not in ("", None) and not (k == "page" and v == 1)})


def _disagreeing(human: Sequence[HumanLabel], ann: Annotations) -> set[str]:
    out = set()
    for h in human:
        if any(lab.label != h.label for lab in ann.of(h.trajectory_id, h.step).values()):
            out.add(h.trajectory_id)
    return out


def _keep(s: Summary, f: ListFilters, ann: Annotations, mine: Counter, disagree: set[str]) -> bool:
    outcome = {True: "resolved", False: "unresolved", None: "unknown"}[s.resolved]
    if f.outcome and f.outcome != outcome or f.format and f.format != s.format:
        return False
    if f.mistakes:
        counts = ann.counts.get(s.id, {})
        sources = counts.values() if f.mistakes == "any" else [counts.get(f.mistakes, Counter())]
        if not any(c["mistake"] for c in sources):
            return False
    if f.disagree and s.id not in disagree:
        return False
    done = mine[s.id]
    if f.labelled == "yes" and done < s.n_steps or f.labelled == "no" and done > 0:
        return False
    if f.labelled == "partial" and not 0 < done < s.n_steps:
        return False
    q = f.q.lower()
    return not q or any(q in (v or "").lower() for v in (s.id, s.instance_id, s.repo, s.path))


def list_context(store: Store, ann: Annotations, human: Sequence[HumanLabel], annotator: str,
                 f: ListFilters) -> dict[str, Any]:
    mine = Counter(h.trajectory_id for h in human if h.annotator == annotator)
    mine_labels: dict[str, Counter] = {}
    for h in human:
        if h.annotator == annotator:
            mine_labels.setdefault(h.trajectory_id, Counter())[h.label] += 1
    disagree = _disagreeing(human, ann) if f.disagree else set()
    rows = [s for s in store.summaries if _keep(s, f, ann, mine, disagree)]
    if f.order == "confidence":  # least sure first; trajectories without confidences last (stable: by id)
        rows.sort(key=lambda s: (ann.mean_confidence(s.id) is None, ann.mean_confidence(s.id) or 0.0))
    elif f.order == "disagreement":
        rows.sort(key=lambda s: -ann.disagreement(s.id))
    pages = max(1, -(-len(rows) // PAGE_SIZE))
    page = min(f.page, pages)
    shown = rows[(page - 1) * PAGE_SIZE: page * PAGE_SIZE]
    totals = {name: Counter() for name in ann.sources}
    for s in rows:
        for name, c in ann.counts.get(s.id, {}).items():
            totals[name].update(c)
    return {
        "rows": [{"s": s, "counts": ann.counts.get(s.id, {}), "mine": mine[s.id],
                  "mine_counts": mine_labels.get(s.id, Counter()), "confidence": ann.mean_confidence(s.id),
                  "split": ann.disagreement(s.id)} for s in shown],
        "has_confidence": bool(ann.confidences), "several_sources": len(ann.sources) > 1,
        "matching": len(rows), "total": len(store.summaries), "page": page, "pages": pages,
        "filters": f, "sources": list(ann.sources), "totals": totals, "labels": LABELS,
        "formats": sorted({s.format for s in store.summaries}),
        "prev_q": f.query(page=page - 1) if page > 1 else None,
        "next_q": f.query(page=page + 1) if page < pages else None,
    }


def _block(text: str) -> dict[str, Any]:
    """Text with what the template needs to collapse it: long outputs show a preview, the rest on demand."""
    lines = text.split("\n")
    long = len(lines) > LONG_LINES or len(text) > LONG_CHARS
    preview = "\n".join(lines[:PREVIEW_LINES])[: LONG_CHARS // 4] if long else ""
    return {"text": text, "long": long, "preview": preview, "lines": len(lines), "chars": len(text)}


def _tool_calls(msg: Message) -> list[dict[str, Any]]:
    """Each tool call as name + arguments; string arguments shown verbatim (commands, file contents)."""
    out = []
    for tc in msg.tool_calls or []:
        args = tc.arguments_dict()
        if args is None:
            out.append({"name": tc.function.name, "args": [], "raw": tc.function.arguments})
            continue
        shown = [(k, v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, indent=1))
                 for k, v in args.items()]
        out.append({"name": tc.function.name, "args": shown, "raw": None})
    return out


def _observation(m: Message) -> dict[str, Any]:
    return {"role": m.role, "name": m.name, **_block(m.content)}


def trajectory_context(store: Store, traj: Trajectory, ann: Annotations, human: Sequence[HumanLabel],
                       annotator: str) -> dict[str, Any]:
    summary = store.by_id[traj.id]
    first = traj.steps[0].message_index if traj.steps else len(traj.messages)
    task_index = next((i for i, m in enumerate(traj.messages) if m.role == "user"), None)
    context = [{"index": i, **_observation(m)} for i, m in enumerate(traj.messages[:first]) if i != task_index]
    mine = {h.step: h for h in human if h.annotator == annotator}
    others: dict[int, list[HumanLabel]] = {}
    for h in human:
        if h.annotator != annotator:
            others.setdefault(h.step, []).append(h)
    steps = []
    for step in traj.steps:
        msg = traj.messages[step.message_index]
        steps.append({
            "step": step, "thought": _block(step.thought), "reasoning": msg.reasoning_content or "",
            "tool_calls": _tool_calls(msg), "action": step.action if not msg.tool_calls else "",
            "observations": [_observation(m) for m in traj.observations(step)],
            "sources": ann.of(traj.id, step.number), "mine": mine.get(step.number),
            "others": others.get(step.number, []),
        })
    pos = store.order[traj.id]
    return {
        "t": traj, "s": summary, "task": _block(traj.task()) if task_index is not None else None,
        "context": context, "steps": steps, "labels": LABELS, "sources": list(ann.sources),
        "labelled": len(mine), "tools": json.dumps(traj.tools, indent=1) if traj.tools else "",
        "prev_id": store.summaries[pos - 1].id if pos > 0 else None,
        "next_id": store.summaries[pos + 1].id if pos + 1 < len(store.summaries) else None,
    }
