"""`srft lab`: the lab experiment as a preset recipe, run by the same runner, cache and run directory as `srft run`.

The recipe is `srft.lab.config.recipe_defaults` of the lab config (every arm a policy, the preset's schedule,
rollouts as the evaluation, rft as the baseline) with `lab.results` on; the lab's nodes are `srft.run.lab`. After
the run, the results node's files are copied to the top of the run directory, and lab_report.json gets the timings
of this invocation (0 for every node reused from an earlier run, so a resumed run shows what it redid).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from srft.io import atomic_path, atomic_write_json
from srft.lab.config import LabConfig
from srft.run import layout

if TYPE_CHECKING:
    from srft.run.recipe import Recipe

PUBLISHED = ("results.md", "noise.png", "outcomes.csv", "compare_by_difficulty.json")  # results/ -> the run dir


class LabError(RuntimeError):
    """A lab run did not finish; the message names the node that failed and where its log is."""


def lab_recipe(config: LabConfig) -> Recipe:
    """The recipe `srft lab` runs: the lab with exactly this config, every other key from its preset."""
    from srft.lab.config import PRESETS
    from srft.run.recipe import Recipe

    preset = config.preset if config.preset in PRESETS else "small"  # a hand-made config: every field given
    recipe = Recipe.model_validate({
        "run": {"name": f"lab-{config.preset}"}, "report": {"title": f"srft lab ({config.preset})"},
        "lab": {"preset": preset, "overrides": config.model_dump(mode="json"), "results": True}})
    problems = [f"{'.'.join(map(str, loc))}: {message}" for loc, message in recipe.problems()]
    if problems:
        raise LabError("; ".join(problems))
    return recipe


def run_lab(config: LabConfig, out_dir: str | Path, *, console: Any = None,
            log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run (or resume) the lab experiment into `out_dir`; return lab_report.json's content. Progress goes to a
    rich display on `console`, or one line per node to `log`. Raises LabError when a node fails."""
    from srft.run.display import LineHooks
    from srft.run.graph import run_pipeline

    start = time.perf_counter()
    out = Path(out_dir)
    result = run_pipeline(lab_recipe(config), out, console=console,
                          hooks=LineHooks(log) if log is not None and console is None else None)
    failed = [n for n in result["nodes"] if n["status"] == "failed"]
    if failed:
        raise LabError(f"{failed[0]['key']} failed: {failed[0]['error']} (log: {result['log']})")
    return publish(out, result["nodes"], time.perf_counter() - start)


def publish(out: Path, nodes: list[dict[str, Any]], wall_s: float) -> dict[str, Any]:
    """The results node's files at the top of the run directory, and lab_report.json with this run's timings."""
    report = json.loads((out / "results" / "lab_report.json").read_text(encoding="utf-8"))
    timings = {n["key"]: n["seconds"] if n["status"] == "ran" else 0.0 for n in nodes}
    report |= {"timings_s": timings, "stage_s": round(sum(timings.values()), 1), "total_s": round(wall_s, 1)}
    files = [out / "results" / name for name in PUBLISHED] + sorted((out / "results").glob("outcomes-*.csv"))
    for path in [*files, out / "compare" / layout.COMPARE]:
        if path.is_file():
            with atomic_path(out / path.name) as tmp:
                shutil.copyfile(path, tmp)
    atomic_write_json(out / "lab_report.json", report)
    return report
