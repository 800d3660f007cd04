"""Rendering of `srft compare` results: rich tables, markdown, and the forest plot (matplotlib Agg, PNG).

Every function takes the result dict of `srft.compare.harness.compare_runs` (fractions) and shows % / pp. Imports of
rich tables and matplotlib happen inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _pval(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def summary_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]], list[str], list[list[str]]]:
    """(system header, system rows, comparison header, comparison rows) as display strings (%, pp)."""
    conf = f"{100 * result['config']['confidence']:g}% CI"
    sys_head = ["system", "runs", "resolved %", conf, "per-run %", "run range (sd) pp"]
    sys_rows = []
    for s in result["systems"]:
        spread = s["run_spread"]
        rng = "-" if s["n_runs"] < 2 else f"{_pct(spread['high'] - spread['low'])} ({_pct(spread['sd'])})"
        sys_rows.append([s["name"], str(s["n_runs"]), _pct(s["rate"]),
                         f"[{_pct(s['ci'][0])}, {_pct(s['ci'][1])}]", ", ".join(_pct(r["rate"]) for r in s["runs"]),
                         rng])
    baseline = result["config"]["baseline"]  # against a baseline, rows are named by A alone
    cmp_head = [f"A - {baseline}" if baseline else "A - B", "diff pp", conf, "p", "p Holm", "A only", "B only",
                "both", "neither", "MDE pp"]
    cmp_rows = []
    for c in result["comparisons"]:
        mde = c["mde"]["value"]
        cmp_rows.append([c["a"] if baseline else f"{c['a']} - {c['b']}", f"{100 * c['diff']:+.1f}",
                         f"[{100 * c['ci'][0]:+.1f}, {100 * c['ci'][1]:+.1f}]", _pval(c["p_value"]),
                         _pval(c["p_holm"]), str(c["a_only"]), str(c["b_only"]), str(c["both"]), str(c["neither"]),
                         "-" if mde is None else _pct(mde)])
    return sys_head, sys_rows, cmp_head, cmp_rows


def _caption(result: dict[str, Any]) -> str:
    cfg, inst = result["config"], result["instances"]
    cluster_ci = cfg.get("cluster_ci", "bootstrap") if inst["clusters"] else "bootstrap"
    parts = [f"{inst['n']} instances ({inst['from']})"]
    if cluster_ci != "cr2":  # CR2 is analytic
        parts += [f"{cfg['n_boot']} {'wild' if cluster_ci == 'wild' else 'paired'} bootstrap resamples",
                  f"seed {cfg['seed']}"]
    if cfg["two_level"]:
        parts.append("runs resampled too")
    if inst.get("restricted"):
        r = inst["restricted"]
        parts.append(f"restricted to {r['kept']} of {r['before']} by " + " and ".join(filter(None, [
            " ".join(r["only"]) or None, r["only_instances"]])))
    if inst["clusters"]:
        c = inst["clusters"]
        effective = f", effective {c['effective_clusters']:.1f}" if "effective_clusters" in c else ""
        parts.append(f"clustered by {cfg['cluster']} ({c['n_clusters']} clusters{effective}; CI: {cluster_ci})")
    parts.append(f"MDE at {100 * cfg['power']:g}% power, alpha {cfg['alpha']:g}")
    if result["comparisons"]:
        if "test" in result["method"]:
            parts.append(f"p: {result['method']['test']}")
        if any(s["n_runs"] > 1 for s in result["systems"]):  # counts then compare per-instance solve fractions
            parts.append("A only / B only = instances where A's / B's solve fraction (over its runs) is higher; "
                         "both / neither = equal fractions above 0 / at 0")
        else:
            parts.append("A only / B only / both / neither = instances solved by A only / B only / both / neither")
    return "; ".join(parts)


def render_table(result: dict[str, Any], console) -> None:
    """Rich tables of systems and comparisons, then warnings."""
    from rich import box
    from rich.table import Table

    sys_head, sys_rows, cmp_head, cmp_rows = summary_rows(result)
    conf = sys_head[3]
    # Terminals are narrower than markdown: the four instance counts share one column.
    cmp_head = [*cmp_head[:5], "A/B/both/none", cmp_head[9]]
    cmp_rows = [[*row[:5], "/".join(row[5:9]), row[9]] for row in cmp_rows]
    for title, head, rows in (("Systems", sys_head, sys_rows), ("Paired comparisons", cmp_head, cmp_rows)):
        if not rows:
            continue
        table = Table(title=title, box=box.SIMPLE_HEAD,
                      caption=_caption(result) if title != "Systems" or not cmp_rows else None)
        for i, column in enumerate(head):  # CIs never wrap; long system names fold instead
            table.add_column(column, justify="left" if i == 0 else "right", no_wrap=column == conf,
                             overflow="fold", ratio=2 if i == 0 else None)
        for row in rows:
            table.add_row(*row)
        console.print(table)
    for warning in result["warnings"]:
        console.print(f"warning: {warning}", style="yellow", markup=False, highlight=False)


def show(result: dict[str, Any], console, markdown: bool = False, json_mode: bool = False) -> None:
    """Rich tables on the console, or markdown tables on stdout (stderr when stdout carries the JSON object)."""
    import sys

    if markdown:
        (sys.stderr if json_mode else sys.stdout).write(render_markdown(result))
    else:
        render_table(result, console)


def render_markdown(result: dict[str, Any]) -> str:
    """GitHub-flavoured markdown tables (for papers, READMEs and the pipeline report)."""
    sys_head, sys_rows, cmp_head, cmp_rows = summary_rows(result)
    lines: list[str] = []
    for head, rows in ((sys_head, sys_rows), (cmp_head, cmp_rows)):
        if not rows:
            continue
        esc = [[cell.replace("|", "\\|") for cell in row] for row in [head, *rows]]
        lines += ["| " + " | ".join(esc[0]) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in esc[1:]]
        lines.append("")
    lines.append(f"_{_caption(result)}._")
    return "\n".join(lines) + "\n"


def _xerr(estimate: float, ci: list[float]) -> list[list[float]]:
    # A ratio (cluster) bootstrap can put the estimate a hair outside its percentile CI; matplotlib rejects < 0.
    return [[max(0.0, 100 * (estimate - ci[0]))], [max(0.0, 100 * (ci[1] - estimate))]]


def plot_forest(result: dict[str, Any], path: str | Path) -> Path:
    """PNG: resolve rates with CIs (and per-run dots), and a forest plot of the paired differences."""
    from matplotlib.figure import Figure

    from srft.io import atomic_path

    systems, pairs = result["systems"], result["comparisons"]
    baselines = {c["b"] for c in pairs}
    versus = next(iter(baselines)) if len(baselines) == 1 and len(pairs) > 1 else None  # label rows by A only
    pair_labels = [c["a"] if versus else f"{c['a']} - {c['b']}" for c in reversed(pairs)]
    widths = [3.5 + 0.07 * max(len(s["name"]) for s in systems)] + (
        [3.5 + 0.07 * max(map(len, pair_labels))] if pairs else [])
    fig = Figure(figsize=(sum(widths), 1.4 + 0.3 * max(len(systems), len(pairs))), layout="constrained")
    axes = fig.subplots(1, len(widths), squeeze=False, gridspec_kw={"width_ratios": widths})[0]
    conf = f"{100 * result['config']['confidence']:g}% CI"
    ax = axes[0]
    for y, s in enumerate(reversed(systems)):
        ax.errorbar(100 * s["rate"], y, xerr=_xerr(s["rate"], s["ci"]), fmt="o", color="C0", capsize=3)
        if s["n_runs"] > 1:
            ax.plot([100 * r["rate"] for r in s["runs"]], [y] * s["n_runs"], "x", color="C1", ms=5)
    ax.set_yticks(range(len(systems)), [s["name"] for s in reversed(systems)])
    ax.set_xlabel(f"resolved % ({conf}; x = single runs)")
    ax.set_title("Systems")
    if pairs:
        ax = axes[1]
        for y, c in enumerate(reversed(pairs)):
            color = "C2" if c["ci"][0] > 0 else "C3" if c["ci"][1] < 0 else "C7"
            ax.errorbar(100 * c["diff"], y, xerr=_xerr(c["diff"], c["ci"]), fmt="s", color=color, capsize=3)
            p = _pval(c["p_value"])
            ax.annotate(f"p{p}" if p.startswith("<") else f"p={p}", (100 * c["ci"][1], y), xytext=(4, -3),
                        textcoords="offset points", fontsize=7)
        ax.axvline(0, color="k", lw=0.8, ls="--")
        ax.margins(x=0.15)  # room for the p-value labels right of each CI
        ax.set_yticks(range(len(pairs)), pair_labels)
        cluster_ci = result["config"].get("cluster_ci") if result["instances"]["clusters"] else None
        how = {"wild": "wild cluster bootstrap", "cr2": "CR2 t"}.get(cluster_ci, "paired bootstrap")
        ax.set_xlabel(f"difference, pp ({how} {conf})")
        ax.set_title(f"Paired differences vs\n{versus}" if versus else "Paired differences (A - B)", fontsize=9)
    out = Path(path)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=120, metadata={"Software": None})
    return out
