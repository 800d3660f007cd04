"""`srft audit`: check a built dataset's masks and show one sample with its trained tokens coloured by step label.

    audit(build_dir, sample=K, tokenizer=None) -> report dict   (checks every row; renders row K)
    html_page(report) -> str                                      (self-contained, all text escaped)

Checks, on every row: equal lengths; every label is IGNORE or the token's own id; every trained token lies in a
step span with weight > 0, and every such span is trained in full; spans are ordered and in bounds;
loss_weights (when present) are the span weights on trained tokens and 0 elsewhere.
"""

from __future__ import annotations

import html
import json
from collections import Counter
from pathlib import Path
from typing import Any

from srft.dataset.masks import IGNORE_INDEX

COLOURS = {"good": "#1a7f37", "recover": "#0969da", "unnecessary": "#9a6700", "mistake": "#cf222e",
           "unlabelled": "#8250df"}
RICH = {"good": "bold green", "recover": "bold blue", "unnecessary": "bold yellow", "mistake": "bold red",
        "unlabelled": "bold magenta"}
MAX_PROBLEMS = 20


class AuditError(ValueError):
    """The directory holds no build dataset, or the sample index is out of range."""


def load(build_dir: str | Path):
    import datasets

    build_dir = Path(build_dir)
    path = build_dir / "dataset" if (build_dir / "dataset").is_dir() else build_dir
    if not (path / "state.json").is_file():
        raise AuditError(f"{build_dir}: no build dataset (expected {build_dir / 'dataset'}/ from `srft build`)")
    report_file = path.parent / "build_report.json"
    report = json.loads(report_file.read_text(encoding="utf-8")) if report_file.is_file() else {}
    return datasets.load_from_disk(str(path)), report


def check_row(row: dict[str, Any]) -> list[str]:
    """Every invariant of one row; an empty list when it holds."""
    ids, labels = row["input_ids"], row["labels"]
    weights = row.get("loss_weights")
    problems = []
    if len(ids) != len(labels) or (weights is not None and len(weights) != len(ids)):
        return [f"lengths differ: input_ids {len(ids)}, labels {len(labels)}"
                + ("" if weights is None else f", loss_weights {len(weights)}")]
    spans, step_labels = row.get("step_spans") or [], row.get("step_labels")
    if step_labels is not None and len(step_labels) != len(spans):
        problems.append(f"step_labels has {len(step_labels)} entries for {len(spans)} step spans")
    problems += [f"unknown step label {x!r}" for x in sorted({str(x) for x in step_labels or []
                                                                if x is not None and x not in COLOURS})]
    trained = [False] * len(ids)
    prev_end = 0
    for span in spans:
        s, e, w = span["start"], span["end"], span["weight"]
        if not prev_end <= s <= e <= len(ids):
            problems.append(f"step {span['step']}: span [{s}, {e}) out of order or bounds")
            continue
        prev_end = e
        if w > 0:
            trained[s:e] = [True] * (e - s)
            if weights is not None and any(abs(x - w) > 1e-6 for x in weights[s:e]):
                problems.append(f"step {span['step']}: loss_weights differ from the step weight {w}")
    for i, (tid, lab) in enumerate(zip(ids, labels)):
        if lab != (tid if trained[i] else IGNORE_INDEX):
            problems.append(f"token {i}: label {lab} (id {tid}, {'in' if trained[i] else 'outside'} a trained span)")
            break
    if weights is not None and any(w != 0 for w, t in zip(weights, trained) if not t):
        problems.append("loss_weights non-zero outside trained spans")
    return problems


def audit(build_dir: str | Path, sample: int = 0, tokenizer: str | None = None) -> dict[str, Any]:
    ds, build_report = load(build_dir)
    if not 0 <= sample < max(len(ds), 1) or len(ds) == 0:
        raise AuditError(f"--sample {sample}: the dataset has {len(ds)} samples (0..{len(ds) - 1})")
    if tokenizer is not None:
        check_tokenizer(tokenizer, build_report, ds)
    trained_by_label: Counter = Counter()
    masked_by_label: Counter = Counter()
    problems: list[str] = []
    bad_rows = 0
    for i, row in enumerate(ds):
        for span, label in labelled_spans(row):
            key = label or "unlabelled"
            (trained_by_label if span["weight"] > 0 else masked_by_label)[key] += span["end"] - span["start"]
        found = check_row(row)
        if found:
            bad_rows += 1
            problems += [f"row {i} ({row['trajectory_id']}): {p}" for p in found][:MAX_PROBLEMS - len(problems)]
    tok_path = tokenizer or build_report.get("inputs", {}).get("tokenizer", {}).get("path")
    return {"dataset": str(build_dir), "samples": len(ds), "rows_with_problems": bad_rows,
            "problems": problems, "trained_tokens_by_label": dict(sorted(trained_by_label.items())),
            "masked_tokens_by_label": dict(sorted(masked_by_label.items())),
            "sample": _show(ds[sample], sample, tok_path)}


def labelled_spans(row: dict[str, Any]) -> list[tuple[dict[str, Any], str | None]]:
    """(span, label) pairs; a null or short step_labels column (e.g. edited by hand) reads as unlabelled."""
    spans = row.get("step_spans") or []
    labels = list(row.get("step_labels") or [])
    return list(zip(spans, labels + [None] * (len(spans) - len(labels))))


def check_tokenizer(path: str, build_report: dict[str, Any], ds) -> None:
    """An explicit --tokenizer must be the build's: another model's would decode garbage without a warning."""
    from srft.dataset.render import TemplateError, load_tokenizer
    from srft.dataset.vocab import max_token_id, tokenizer_facts, tokenizer_problems

    try:
        tok = load_tokenizer(path)
    except (TemplateError, OSError, ValueError) as exc:
        raise AuditError(f"--tokenizer {path}: cannot load it ({exc})") from None
    recorded = build_report.get("vocab") or {}
    top = recorded["max_token_id"] if "max_token_id" in recorded else max_token_id(ds)
    problems = tokenizer_problems(recorded.get("tokenizer"), tokenizer_facts(tok), top, f"--tokenizer {path}")
    if problems:
        raise AuditError(problems[0] + "; leave --tokenizer out to decode with the build's own")


def _show(row: dict[str, Any], index: int, tok_path: str | None) -> dict[str, Any]:
    """Row `index` as runs of text: [{text, trained, step, label, weight}] (text decoded with the tokenizer)."""
    pieces, decoded = _pieces(row["input_ids"], tok_path)
    span_of: dict[int, tuple[dict, str | None]] = {}
    for span, label in labelled_spans(row):
        for t in range(span["start"], span["end"]):
            span_of[t] = (span, label)
    runs: list[dict[str, Any]] = []
    for t, text in enumerate(pieces):
        span, label = span_of.get(t, (None, None))
        key = {"trained": row["labels"][t] != IGNORE_INDEX, "step": span["step"] if span else None,
               "label": (label or "unlabelled") if span else None, "weight": span["weight"] if span else None}
        if runs and all(runs[-1][k] == v for k, v in key.items()):
            runs[-1]["text"] += text
        else:
            runs.append({**key, "text": text})
    trained = sum(lab != IGNORE_INDEX for lab in row["labels"])
    return {"index": index, "trajectory_id": row["trajectory_id"], "instance_id": row["instance_id"],
            "resolved": row["resolved"], "policy": row["policy"], "tokens": len(row["input_ids"]),
            "trained_tokens": trained, "decoded": decoded, "runs": runs}


def _pieces(ids: list[int], tok_path: str | None) -> tuple[list[str], bool]:
    """One string per token: slices of the decoded text by char offsets (so multi-byte characters split across
    tokens stay readable), or `<id>` placeholders without a tokenizer."""
    if tok_path is None:
        return [f"<{i}>" for i in ids], False
    from srft.dataset.render import TemplateError, load_tokenizer

    try:
        tok = load_tokenizer(tok_path)
    except (TemplateError, OSError, ValueError):  # moved or deleted since the build: show ids
        return [f"<{i}>" for i in ids], False
    text = tok.decode(ids)
    enc = tok.backend_tokenizer.encode(text, add_special_tokens=False)
    if enc.ids != list(ids):
        return [tok.decode([i]) for i in ids], True
    starts, top = [], 0
    for start, _ in [*enc.offsets, (len(text), 0)]:  # byte-level tokens of one char share offsets: keep order
        top = max(top, start)
        starts.append(top)
    return [text[starts[k]:starts[k + 1]] for k in range(len(ids))], True


# -- output ---------------------------------------------------------------------------------------------------

def print_summary(report: dict[str, Any], console) -> None:
    """The sample (trained tokens coloured per step label), the token counts by label, every problem found."""
    from srft.console import say

    s = report["sample"]
    say(console, f"sample {s['index']}: {s['trajectory_id']} ({s['instance_id']}), resolved {s['resolved']}, "
        f"policy {s['policy']}: {s['trained_tokens']} of {s['tokens']} tokens trained")
    console.print(rich_text(s))
    say(console, f"trained tokens by label: {report['trained_tokens_by_label']}; masked: "
        f"{report['masked_tokens_by_label']}")
    for problem in report["problems"]:
        say(console, f"problem: {problem}", "red")


def json_summary(report: dict[str, Any], html: str | None) -> dict[str, Any]:
    """The `--json` object: the report with the sample's text runs left out."""
    sample = {k: v for k, v in report["sample"].items() if k != "runs"}
    return {k: v for k, v in report.items() if k != "sample"} | {"sample": sample, "html": html}


def rich_text(sample: dict[str, Any]):
    """The sample for a terminal: trained text coloured by label, context dim, masked steps struck through."""
    from rich.text import Text

    out = Text()
    for run in sample["runs"]:
        if run["trained"]:
            style = RICH.get(run["label"], RICH["unlabelled"])
        elif run["step"] is not None:
            style = "dim strike"
        else:
            style = "dim"
        out.append(run["text"], style=style)
    return out


def html_page(report: dict[str, Any]) -> str:
    """A self-contained page: the sample's text with trained tokens coloured per label, and the totals."""
    s = report["sample"]
    spans = []
    for run in s["runs"]:
        text = html.escape(run["text"])
        if run["trained"]:
            title = html.escape(f"step {run['step']}: {run['label']} (weight {run['weight']:g})")
            css_class = run["label"] if run["label"] in COLOURS else "unlabelled"
            spans.append(f'<span class="t {css_class}" title="{title}">{text}</span>')
        elif run["step"] is not None:
            title = html.escape(f"step {run['step']}: {run['label']}, masked")
            spans.append(f'<span class="m" title="{title}">{text}</span>')
        else:
            spans.append(f'<span class="c">{text}</span>')
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{report['trained_tokens_by_label'].get(k, 0)}</td>"
                   f"<td>{report['masked_tokens_by_label'].get(k, 0)}</td></tr>"
                   for k in sorted({*report["trained_tokens_by_label"], *report["masked_tokens_by_label"]}))
    css = "".join(f".{k}{{background:{c}22;border-bottom:2px solid {c}}}" for k, c in COLOURS.items())
    legend = " ".join(f'<span class="t {k}">{k}</span>' for k in COLOURS)
    head = html.escape(f"sample {s['index']}: trajectory {s['trajectory_id']} ({s['instance_id']}), resolved "
                       f"{s['resolved']}, policy {s['policy']}: {s['trained_tokens']} of {s['tokens']} tokens "
                       "trained")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>srft audit</title><style>"
            "body{font-family:sans-serif;margin:2em}pre{white-space:pre-wrap;font-size:13px;line-height:1.5}"
            ".c{color:#888}.m{color:#b55;text-decoration:line-through}" + css +
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px}</style></head><body>"
            f"<h1>srft audit</h1><p>{head}</p><p>trained: {legend} · "
            "<span class='m'>masked step</span> · <span class='c'>context (never trained)</span></p>"
            f"<table><tr><th>label</th><th>trained tokens</th><th>masked tokens</th></tr>{rows}</table>"
            f"<pre>{''.join(spans)}</pre></body></html>\n")
