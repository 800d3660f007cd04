"""The lab's results: per-difficulty comparisons, a results table, the critic-noise plot, and `lab_report.json`
(config, teacher statistics, critic agreement, per-arm data/training/evaluation).

    compare_by_difficulty(out, columns, difficulty, options) -> outcomes-<d>.csv + compare_by_difficulty.json
    write_results(out, config, arms, cmp, by_difficulty, parts) -> results.md, noise.png, lab_report.json

The numbers come from the pipeline's nodes (`srft.run.lab` gathers them): the comparison over all held-out tasks
is the `compare` node's, the per-arm summaries are the nodes' manifests.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import srft
from srft.io import atomic_path, atomic_write_json, atomic_write_text
from srft.lab.config import LabConfig
from srft.lab.data import write_outcome_table

BUDGET_RULE = "equal optimizer steps and samples per step for every fine-tuned arm, from one base model"


def compare_by_difficulty(out: Path, columns: Mapping[str, Mapping[str, bool]], difficulty: Mapping[str, str],
                          options: dict[str, Any]) -> dict[str, Any]:
    """`srft compare` of every arm against rft on the tasks of each difficulty (columns: `base` and
    `<arm>.s<seed>` -> instance -> resolved; options: srft.compare.harness.run_compare keywords)."""
    from srft.compare.harness import run_compare

    by_difficulty = {}
    for diff in sorted(set(difficulty.values())):
        path = out / f"outcomes-{diff}.csv"
        write_outcome_table(path, {name: {i: r for i, r in col.items() if difficulty.get(i) == diff}
                                   for name, col in columns.items()})
        systems = {"base": [f"{path}:base"]} if "base" in columns else {}
        systems |= {name: [f"{path}:{name}.s*"] for name in dict.fromkeys(c.rsplit(".s", 1)[0] for c in columns
                                                                          if c != "base")}
        by_difficulty[diff] = run_compare(systems, **options)
    atomic_write_json(out / "compare_by_difficulty.json", by_difficulty)
    return by_difficulty


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def results_table(cmp: dict[str, Any], arms: Mapping[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per system: rate with CI, per-seed rates, difference vs rft with CI and p, data used."""
    pairs = {p["a"]: p for p in cmp["comparisons"]}
    rows = []
    for system in cmp["systems"]:
        name = system["name"]
        pair, arm = pairs.get(name), arms.get(name, {})
        build = arm.get("build") or {}
        rows.append({"system": name, "role": "the pretrained base, not fine-tuned" if name == "base" else
                     arm.get("role", ""), "rate": system["rate"], "ci": system["ci"],
                     "runs": [r["rate"] for r in system["runs"]],
                     "diff_vs_rft": None if pair is None else pair["diff"],
                     "diff_ci": None if pair is None else pair["ci"],
                     "p_value": None if pair is None else pair["p_value"],
                     "p_holm": None if pair is None else pair.get("p_holm"),
                     "trajectories_used": build.get("trajectories_used"),
                     "trained_tokens": build.get("trained_tokens")})
    return rows


def markdown(rows: list[dict[str, Any]], config: LabConfig, n_tasks: int) -> str:
    """The results table as Markdown (numbers in %, pp)."""
    # `srft compare` reports the p of its design: the two-level bootstrap's (inverting its CI) with several seeds.
    test = "two-level bootstrap p (inverts the CI)" if len(config.seeds) > 1 else "exact sign test"
    lines = [f"# srft lab: preset {config.preset}",
             "",
             f"{n_tasks} held-out tasks, greedy decoding, {len(config.seeds)} training seed(s) per arm, "
             f"{config.finetune.max_steps} optimizer steps x {config.finetune.batch_size} samples for every arm "
             "(equal steps). CIs: 95% paired bootstrap over tasks (and seeds) by `srft compare`; p: "
             f"{test} vs rft, Holm-adjusted in brackets.",
             "",
             "| system | success % [95% CI] | per seed % | vs rft, pp [95% CI] | p (Holm) | trajectories | "
             "trained tokens | what it is |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        diff = "-" if r["diff_vs_rft"] is None else (
            f"{100 * r['diff_vs_rft']:+.1f} [{100 * r['diff_ci'][0]:+.1f}, {100 * r['diff_ci'][1]:+.1f}]")
        p = "-" if r["p_value"] is None else f"{r['p_value']:.3f} ({r['p_holm']:.3f})"
        lines.append(f"| {r['system']} | {_pct(r['rate'])} [{_pct(r['ci'][0])}, {_pct(r['ci'][1])}] | "
                     f"{' / '.join(_pct(x) for x in r['runs'])} | {diff} | {p} | "
                     f"{r['trajectories_used'] if r['trajectories_used'] is not None else '-'} | "
                     f"{r['trained_tokens'] if r['trained_tokens'] is not None else '-'} | {r['role']} |")
    return "\n".join(lines) + "\n"


def noise_points(cmp: dict[str, Any], arms: Mapping[str, dict[str, Any]],
                 critic_error: float | None) -> list[dict[str, Any]]:
    """SRFT's gain over rft against the label flip rate q (q=0: oracle), plus the heuristic critic placed at
    its measured error rate on the mask axis."""
    pairs = {p["a"]: p for p in cmp["comparisons"]}
    points = []
    if "srft-oracle" in pairs:
        points.append({"system": "srft-oracle", "q": 0.0, "diff": pairs["srft-oracle"]["diff"],
                       "ci": pairs["srft-oracle"]["ci"]})
    for name, arm in arms.items():
        if arm["labels"] == "flip" and name in pairs:
            points.append({"system": name, "q": arm["q"], "diff": pairs[name]["diff"], "ci": pairs[name]["ci"]})
    if "srft-critic" in pairs and critic_error is not None:
        points.append({"system": "srft-critic", "q": critic_error, "diff": pairs["srft-critic"]["diff"],
                       "ci": pairs["srft-critic"]["ci"], "critic": True})
    return points


def plot_noise(points: list[dict[str, Any]], path: Path, title: str) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=120)
    ax = fig.subplots()
    sweep = sorted((p for p in points if not p.get("critic")), key=lambda p: p["q"])
    for group, style in ((sweep, dict(fmt="o-", color="tab:blue", label="srft, oracle labels flipped at rate q")),
                         ([p for p in points if p.get("critic")],
                          dict(fmt="s", color="tab:orange", label="srft, heuristic critic (at its error rate)"))):
        if group:
            x = [p["q"] for p in group]
            y = [100 * p["diff"] for p in group]
            err = [[100 * (p["diff"] - p["ci"][0]) for p in group], [100 * (p["ci"][1] - p["diff"]) for p in group]]
            ax.errorbar(x, y, yerr=err, capsize=4, **style)
    ax.axhline(0, color="grey", lw=1, ls="--")
    ax.set_xlabel("critic noise q (share of steps whose mask decision is wrong)")
    ax.set_ylabel("success vs rft (pp), 95% CI")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})


def write_results(out: Path, config: LabConfig, arms: dict[str, dict[str, Any]], cmp: dict[str, Any],
                  by_difficulty: dict[str, Any], parts: dict[str, Any]) -> dict[str, Any]:
    """results.md, noise.png (when there are noise points) and lab_report.json in `out`; returns the report.

    `arms`: name -> {role, labels (none | oracle | critic | flip), q, policy, build, train: {seed<k>: summary},
    eval: {seed<k>: summary}}; `parts`: the teacher, ingest, critic and base summaries."""
    rows = results_table(cmp, arms)
    n_tasks = cmp["instances"]["n"]
    atomic_write_text(out / "results.md", markdown(rows, config, n_tasks))
    critic_error = ((parts.get("critic") or {}).get("vs_gold") or {}).get("mask_error")
    points = noise_points(cmp, arms, critic_error)
    if points:
        plot_noise(points, out / "noise.png", f"srft lab ({config.preset}): SRFT gain vs critic noise")
    report = {
        "kind": "srft.lab", "srft_version": srft.__version__, "config": config.model_dump(mode="json"),
        "budget_rule": BUDGET_RULE, **parts, "results": rows,
        "results_by_difficulty": {d: results_table(c, arms) for d, c in by_difficulty.items()},
        "noise": points, "arms": arms, "eval_tasks": n_tasks,
        "files": {"results": "results.md", "plot": "noise.png" if points else None, "compare": "compare.json",
                  "outcomes": "outcomes.csv"},
    }
    atomic_write_json(out / "lab_report.json", report)
    return report


def print_summary(report: dict[str, Any], config: LabConfig, out: str, console) -> None:
    """The results table, then the files written and the time taken."""
    from srft.console import say

    say(console, markdown(report["results"], config, report["eval_tasks"]))
    say(console, f"wrote {out}/results.md, lab_report.json, compare.json"
        + (", noise.png" if report["files"]["plot"] else "") + f" in {report['total_s']} s")


def json_summary(report: dict[str, Any], preset: str, out: str) -> dict[str, Any]:
    """The `--json` object of `srft lab`."""
    return {"out": out, "preset": preset, **{k: report[k] for k in ("results", "noise", "teacher", "total_s",
                                                                      "files")}}
