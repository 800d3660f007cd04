"""The lab's results: `srft compare` on the outcome table, a results table, the critic-noise plot, and
`lab_report.json` (config, timings, teacher statistics, critic agreement, per-arm data/training/evaluation).

    compare(out, config, arms)                  -> compare.json (+ one per difficulty), via srft.compare.harness
    write_report(out, config, arms, cmp, ...)   -> results.md, noise.png, lab_report.json; returns the report
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import srft
from srft.io import atomic_path, atomic_write_json, atomic_write_text
from srft.lab.config import Arm, LabConfig
from srft.lab.data import read_outcomes, write_outcomes

BASELINE = "rft"


def _systems(csv_path: Path, arm_list: list[Arm]) -> dict[str, list[str]]:
    systems = {"base": [f"{csv_path}:base"]}
    systems.update({arm.name: [f"{csv_path}:{arm.name}.s*"] for arm in arm_list})
    return systems


def compare(out: Path, config: LabConfig, arm_list: list[Arm]) -> dict[str, Any]:
    """Paired bootstrap of every arm against rft over the held-out tasks (training seeds as runs, resampled
    too when there are several), overall and per difficulty."""
    try:
        from srft.compare.harness import run_compare
    except ImportError as exc:
        raise RuntimeError(f"stage 'compare' needs srft.compare.harness (issue 7), which cannot be imported: {exc}") from exc
    options = dict(baseline=BASELINE, two_level=len(config.seeds) > 1, n_boot=config.n_boot, seed=config.seed)
    result = run_compare(_systems(out / "outcomes.csv", arm_list), **options)
    atomic_write_json(out / "compare.json", result)
    columns = read_outcomes(out / "outcomes.csv")
    difficulty = _difficulties(out)
    by_difficulty = {}
    for diff in sorted(set(difficulty.values())):
        path = out / f"outcomes-{diff}.csv"
        write_outcomes(path, {name: {i: r for i, r in col.items() if difficulty.get(i) == diff}
                              for name, col in columns.items()})
        by_difficulty[diff] = run_compare(_systems(path, arm_list), **options)
    atomic_write_json(out / "compare_by_difficulty.json", by_difficulty)
    return {"all": result, "by_difficulty": by_difficulty}


def _difficulties(out: Path) -> dict[str, str]:
    """instance id -> difficulty, from the base model's evaluation episodes."""
    from srft.io import iter_jsonl

    return {rec["instance_id"]: rec["metadata"]["difficulty"]
            for _, rec in iter_jsonl(out / "eval" / "base" / "episodes.jsonl")}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def results_table(cmp: dict[str, Any], arm_list: list[Arm], results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per system: rate with CI, per-seed rates, difference vs rft with CI and p, data used."""
    pairs = {p["a"]: p for p in cmp["comparisons"]}
    roles = {arm.name: arm.role for arm in arm_list} | {"base": "the pretrained base, not fine-tuned"}
    rows = []
    for system in cmp["systems"]:
        name = system["name"]
        pair = pairs.get(name)
        build = results.get(f"build/{name}", {})
        rows.append({"system": name, "role": roles.get(name, ""), "rate": system["rate"], "ci": system["ci"],
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
    lines = [f"# srft lab: preset {config.preset}",
             "",
             f"{n_tasks} held-out tasks, greedy decoding, {len(config.seeds)} training seed(s) per arm, "
             f"{config.finetune.max_steps} optimizer steps x {config.finetune.batch_size} samples for every arm "
             "(equal steps). CIs: 95% paired bootstrap over tasks (and seeds) by `srft compare`; p: exact sign "
             "test vs rft, Holm-adjusted in brackets.",
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


def noise_points(cmp: dict[str, Any], arm_list: list[Arm], critic_error: float | None) -> list[dict[str, Any]]:
    """SRFT's gain over rft against the label flip rate q (q=0: oracle), plus the heuristic critic placed at
    its measured error rate on the mask axis."""
    pairs = {p["a"]: p for p in cmp["comparisons"]}
    points = []
    if "srft-oracle" in pairs:
        points.append({"system": "srft-oracle", "q": 0.0, "diff": pairs["srft-oracle"]["diff"],
                       "ci": pairs["srft-oracle"]["ci"]})
    for arm in arm_list:
        if arm.labels == "flip" and arm.name in pairs:
            points.append({"system": arm.name, "q": arm.q, "diff": pairs[arm.name]["diff"],
                           "ci": pairs[arm.name]["ci"]})
    if "srft-critic" in pairs and critic_error is not None:
        points.append({"system": "srft-critic", "q": critic_error, "diff": pairs["srft-critic"]["diff"],
                       "ci": pairs["srft-critic"]["ci"], "critic": True})
    return points


def plot_noise(points: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
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
        fig.savefig(tmp, format="png")
    plt.close(fig)


def critic_mask_error(critic: dict[str, Any] | None) -> float | None:
    """The heuristic critic's share of unresolved steps whose mask decision differs from the oracle's."""
    scores = (critic or {}).get("vs_oracle") or []
    return scores[0]["mask_error"] if scores else None


def write_report(out: Path, config: LabConfig, arm_list: list[Arm], cmp: dict[str, Any],
                 results: dict[str, Any], timings: dict[str, float], wall_s: float) -> dict[str, Any]:
    rows = results_table(cmp["all"], arm_list, results)
    n_tasks = cmp["all"]["instances"]["n"]
    atomic_write_text(out / "results.md", markdown(rows, config, n_tasks))
    points = noise_points(cmp["all"], arm_list, critic_mask_error(results.get("annotate")))
    if points:
        plot_noise(points, out / "noise.png", f"srft lab ({config.preset}): SRFT gain vs critic noise")
    by_diff = {d: results_table(c, arm_list, results) for d, c in cmp["by_difficulty"].items()}
    report = {
        "kind": "srft.lab", "srft_version": srft.__version__, "config": config.model_dump(mode="json"),
        "budget_rule": "equal optimizer steps and samples per step for every fine-tuned arm, from one base model",
        "teacher": results.get("generate"), "ingest": results.get("ingest"), "critic": results.get("annotate"),
        "base": results.get("base"), "results": rows, "results_by_difficulty": by_diff, "noise": points,
        "arms": {arm.name: {"role": arm.role, "labels": arm.labels, "q": arm.q,
                            "policy": arm.policy.model_dump(mode="json"), "build": results.get(f"build/{arm.name}"),
                            "train": {k.rsplit("/", 1)[1]: v for k, v in results.items()
                                      if k.startswith(f"train/{arm.name}/")},
                            "eval": {k.rsplit("/", 1)[1]: {x: y for x, y in v.items() if x != "resolved"}
                                     for k, v in results.items() if k.startswith(f"eval/{arm.name}/")}}
                 for arm in arm_list},
        "eval_tasks": n_tasks, "timings_s": timings,
        "stage_s": round(sum(timings.values()), 1), "total_s": round(wall_s, 1),
        "files": {"results": "results.md", "plot": "noise.png" if points else None, "compare": "compare.json",
                  "outcomes": "outcomes.csv"},
    }
    atomic_write_json(out / "lab_report.json", report)
    return report
