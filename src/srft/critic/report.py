"""What an annotation run tells its user: the console summary and the `--json` object of `srft annotate`."""

from __future__ import annotations

from typing import Any

JSON_KEYS = ("trajectories", "labelled_trajectories", "skipped", "steps", "labels", "calls", "cached", "repaired",
             "failed", "failed_by_reason", "fallback_steps", "prompt_tokens", "completion_tokens",
             "prompt_tokens_cached", "cost_usd", "critic", "prompt_hash", "elapsed_s")


def print_summary(report: dict[str, Any], out: str, console) -> None:
    """Labels and calls in a table, then tokens and cost, then the trajectories the critic failed on."""
    from srft.console import say, table

    say(console, f"srft annotate ({report['critic']}) -> {out}")
    rows = [("trajectories", report["trajectories"]), ("steps", report["steps"]),
            *((f"  {k}", v) for k, v in report["labels"].items()),
            *((k, report[k]) for k in ("calls", "cached", "repaired", "failed"))]
    console.print(table(None, ("", ""), rows))
    cost = "" if report["cost_usd"] is None else f", cost ${report['cost_usd']:.4f}"
    say(console, f"skipped {report['skipped'] or 0}; tokens: {report['prompt_tokens']} prompt, "
        f"{report['completion_tokens']} completion{cost}; {report['elapsed_s']} s")
    if report["failed"]:
        say(console, f"{report['failed']} trajectories critic_failed {report['failed_by_reason']}: see "
            f"{out}/critic_failures.jsonl", "yellow")


def json_summary(report: dict[str, Any], out: str) -> dict[str, Any]:
    """The `--json` object: the counts, the evidence and confidence settings used, where the report is."""
    extra = {k: report[k] for k in ("evidence", "confidence") if k in report}
    return {**{k: report[k] for k in JSON_KEYS}, **extra, "out": out, "report": f"{out}/annotate_report.json"}
