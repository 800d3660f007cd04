"""`srft run RECIPE.yaml`: one recipe, one function from trajectories to a compared student and a report.

    recipe, _ = load_recipe("recipes/demo.yaml", ["train.max_steps=20"])
    nodes = pipeline_nodes(recipe)            # read top to bottom: the whole pipeline in one function
    result = run_pipeline(recipe, "runs/demo")  # cached: unchanged nodes are skipped (srft.run.runner.Runner)

The graph, each node a folder under the run directory (run_dir/<key>/ with a manifest.json):
    generate                   the lab teacher's trajectories                      (lab only)
    ingest                     trajectories.parquet + ingest_report.json
    gold                       the lab teacher's true step labels, keyed by ingested id   (lab only)
    annotate                   the critic's step labels                            (if a policy reads them)
    critic_eval                critic vs gold labels                               (if there are gold labels)
    tokenizer, student         the lab's tokenizer and pretrained base student, or a random-init student
    build/<policy>             the masked dataset of one policy
    train/<policy>/seed<s>     one student per policy and seed
    evaluate/<policy>/seed<s>  per-instance outcomes (lab rollouts, or your harness outputs); evaluate/base too
    compare                    paired statistics over the evaluated students
    report                     report.html (self-contained)
The recipe's sections are in `srft.run.recipe`; node bodies in `srft.run.nodes` (thin calls to the stages).
"""

from __future__ import annotations

import contextlib
import logging
import os
from functools import partial
from pathlib import Path
from typing import Any

from srft.io import atomic_write_json
from srft.dataset.masks import MaskConfig
from srft.run.recipe import Recipe
from srft.run.loader import ConfigError, apply_overrides, read_yaml
from srft.run.runner import Node

log = logging.getLogger("srft.run")
STAGES = ("generate", "ingest", "gold", "annotate", "critic_eval", "tokenizer", "student", "build", "train",
          "evaluate", "compare", "report")


# -- loading -------------------------------------------------------------------------------------------------

def load_recipe(path: str | os.PathLike, overrides: list[str] | None = None) -> tuple[Recipe, dict[str, Any]]:
    """Parse, override, validate; ConfigError lists every problem as 'file:line: key: message'."""
    from pydantic import ValidationError

    from srft.run.loader import describe_error, describe_loc

    data, lines = read_yaml(path)
    overrides = list(overrides or [])
    data = apply_overrides(data, overrides)
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([describe_error(Path(path), lines, overrides, err, Recipe) for err in exc.errors()]) from exc
    problems = [describe_loc(Path(path), lines, overrides, loc, msg) for loc, msg in recipe.problems()]
    if problems:
        raise ConfigError(problems)
    if recipe.run.name is None:
        recipe.run.name = Path(path).stem
    return recipe, data


def run_dir_for(recipe: Recipe, out: str | None = None) -> Path:
    return Path(out or recipe.run.out or Path("runs") / (recipe.run.name or "run"))


def missing_inputs(recipe: Recipe) -> list[str]:
    """External files the recipe names that do not exist (checked before a real run; `--dry-run` lists them)."""
    named: list[tuple[str, str | None]] = [("ingest.paths", p) for p in recipe.ingest.paths]
    named += [("ingest.outcomes", p) for p in recipe.ingest.outcomes]
    named += [("ingest.exclude_instances", recipe.ingest.exclude_instances), ("annotate.gold", recipe.annotate.gold),
              ("annotate.prompt.template", recipe.annotate.prompt.template),
              ("build.tokenizer", recipe.build.tokenizer), ("train.model", recipe.train.model),
              ("compare.instances", recipe.compare.instances)]
    if recipe.train.launch is not None:
        named.append(("train.launch.accelerate_config", recipe.train.launch.accelerate_config))
    if recipe.evaluate is not None:
        named += [(f"evaluate.outcomes.{k}", p) for k, paths in recipe.evaluate.outcomes.items() for p in paths]
    return [f"{key}: {path}: no such file or directory" for key, path in named if path and not Path(path).exists()]


# -- the pipeline, top to bottom -----------------------------------------------------------------------------

def pipeline_nodes(recipe: Recipe) -> list[Node]:
    """The recipe as nodes in run order: read -> label -> weigh/build -> train -> evaluate -> compare -> report.
    Each node's options are exactly what its output depends on, so changing one policy's option re-runs only
    that policy's build/train/evaluate nodes and what reads them (compare, report)."""
    from srft.run import nodes as s

    nodes: list[Node] = []
    add = nodes.append
    policies, seeds = list(recipe.build.policies), recipe.train.seeds
    lab = recipe.lab.config() if recipe.lab is not None else None  # a srft.lab LabConfig
    data_key = _lab_keys(lab)[0]

    # 1. Read: the lab teacher writes trajectories (lab only); ingest reads them, or yours, like any user file.
    if lab is not None:
        add(Node("generate", "generate", data_key, partial(s.generate, lab)))
    add(Node("ingest", "ingest", recipe.ingest.model_dump(), partial(s.ingest, recipe.ingest),
             deps=["generate"] if lab is not None else [],
             inputs=_paths(*recipe.ingest.paths, *recipe.ingest.outcomes, recipe.ingest.exclude_instances)))

    # 2. Label: gold labels (the lab's oracle, or your file), the critic when a policy reads it, their agreement.
    gold_deps, gold_inputs = (["gold"], []) if lab is not None else ([], _paths(recipe.annotate.gold))
    if lab is not None:
        add(Node("gold", "gold", data_key, partial(s.gold, lab), deps=["ingest"]))
    if any(recipe.label_source(p) == "critic" for p in policies):
        opts = recipe.annotate.model_dump(mode="json", exclude={"gold", "concurrency", "cache", "use_cache"})
        add(Node("annotate", "annotate", opts, partial(s.annotate, recipe.annotate), deps=["ingest"],
                 inputs=_paths(recipe.annotate.prompt.template, recipe.annotate.prompt.tokenizer)))
        # Scored with `mistake` as the masked class, whatever the policies mask.
        if lab is not None or recipe.annotate.gold:
            add(Node("critic_eval", "critic_eval", {}, partial(s.critic_eval, recipe.annotate.gold),
                     deps=["ingest", "annotate", *gold_deps], inputs=gold_inputs))

    # 3. The student: your model folder; the lab's tokenizer + base model pretrained on instruction episodes; or a
    #    random-init model around your tokenizer.
    tokenizer = recipe.build.tokenizer or recipe.train.model
    nodes += _student_nodes(recipe, lab, tokenizer, s)
    tok_deps = ["tokenizer"] if lab is not None else []
    student_deps = ["student"] if any(n.key == "student" for n in nodes) else []
    evaluated = []
    if recipe.evaluate is not None and (student_deps and recipe.evaluate.lab or "base" in recipe.evaluate.outcomes):
        add(_evaluate_node(recipe, lab, "base", None, "student" if student_deps else None, s))
        evaluated.append("evaluate/base")

    # 4. Weigh + build one dataset per policy, 5. train one student per policy and seed, 6. evaluate each.
    mask = MaskConfig(**recipe.build.model_dump(include=set(MaskConfig.model_fields)))
    for name in policies:
        policy, labels = recipe.policy_config(name), recipe.label_source(name)
        label_deps = {"critic": ["annotate"], "gold": gold_deps, None: []}[labels]
        build_opts = {"policy": policy.model_dump(mode="json"), "labels": labels, "mask": mask.model_dump(),
                      "exports": recipe.build.exports, "tokenizer": tokenizer}
        add(Node(f"build/{name}", "build", build_opts,
                 partial(s.build, policy, mask, recipe.build.exports, recipe.build.num_proc, tokenizer, labels,
                         recipe.annotate.gold),
                 deps=["ingest", *label_deps, *tok_deps],
                 inputs=_paths(tokenizer, recipe.annotate.gold if labels == "gold" else None)))
        for seed in seeds:
            config = recipe.train.config_for(recipe.train.model or "<student>", seed)
            launch = recipe.train.launch.model_dump() if recipe.train.launch else None
            add(Node(f"train/{name}/seed{seed}", "train", {"config": config.model_dump(mode="json"),
                                                           "launch": launch},
                     partial(s.train, config, recipe.train.launch, f"build/{name}"),
                     deps=[f"build/{name}", *student_deps], inputs=_paths(recipe.train.model)))
            if recipe.evaluate is not None:
                add(_evaluate_node(recipe, lab, name, seed, f"train/{name}/seed{seed}", s))
                evaluated.append(f"evaluate/{name}/seed{seed}")

    # 7. Compare the policies (systems) over their seeds (runs), 8. the report over everything.
    if evaluated:
        cmp = recipe.compare
        add(Node("compare", "compare", cmp.model_dump(), partial(s.compare, cmp, evaluated), deps=evaluated,
                 inputs=_paths(cmp.instances)))
    report_opts = {"report": recipe.report.model_dump(), "title": recipe.report.title or recipe.run.name,
                   "policies": {p: recipe.policy_config(p).model_dump(mode="json") for p in policies}}
    add(Node("report", "report", report_opts, partial(s.report, recipe), deps=[n.key for n in nodes]))
    return nodes


def _lab_keys(lab: Any) -> tuple[dict | None, dict | None]:
    """What the lab's data and its pretraining corpus depend on (the lab regenerates episodes from these)."""
    if lab is None:
        return None, None
    return ({"seed": lab.seed, "train": lab.tasks.train, "mix": lab.tasks.mix, "teacher": lab.teacher.model_dump()},
            {"seed": lab.seed, "mix": lab.tasks.mix, "pretrain_tasks": lab.tasks.pretrain, "max_steps": lab.max_steps})


def _student_nodes(recipe: Recipe, lab: Any, tokenizer: str | None, s: Any) -> list[Node]:
    """tokenizer + student for the lab (its BPE, its base model pretrained on instruction episodes), or a random-init
    student (`train.init`); nothing when `train.model` is your model folder."""
    data_key, pretrain_key = _lab_keys(lab)
    nodes = []
    if lab is not None:
        nodes.append(Node("tokenizer", "tokenizer", {**data_key, **pretrain_key,
                                                     "vocab_size": lab.student.vocab_size},
                          partial(s.lab_tokenizer, lab)))
    if recipe.train.init is not None:
        nodes.append(Node("student", "student", recipe.train.init.model_dump(),
                          partial(s.init_student, recipe.train.init, tokenizer),
                          deps=["tokenizer"] if lab is not None else [],
                          inputs=_paths(tokenizer)))
    elif lab is not None and recipe.train.model is None:
        nodes.append(Node("student", "student", {**pretrain_key, "student": lab.student.model_dump(),
                                                 "pretrain": lab.pretrain.model_dump(), "max_length": lab.max_length},
                          partial(s.lab_base, lab), deps=["tokenizer"]))
    return nodes


def _evaluate_node(recipe: Recipe, lab: Any, name: str, seed: int | None, model_key: str | None, s: Any) -> Node:
    """evaluate/<name>/seed<s> (or evaluate/base): lab rollouts of the model in `model_key`, or the harness output
    the recipe gives for it."""
    key = "evaluate/base" if seed is None else f"evaluate/{name}/seed{seed}"
    run = "pretrained" if seed is None else f"seed{seed}"
    deps = [model_key] if model_key else []
    if recipe.evaluate.lab:
        opts = {"tasks": lab.tasks.eval, "mix": lab.tasks.mix, "seed": lab.seed, "max_steps": lab.max_steps,
                "batch": lab.eval_batch}
        return Node(key, "evaluate", opts, partial(s.evaluate_lab, lab, model_key, name, run), deps=deps)
    given = recipe.evaluate.outcomes[name][0 if seed is None else recipe.train.seeds.index(seed)]
    return Node(key, "evaluate", {"outcomes": given}, partial(s.evaluate_given, given, name, run), deps=deps,
                inputs=_paths(given))


def _paths(*paths: str | None) -> list[Path]:
    return [Path(p) for p in paths if p]


# -- running -------------------------------------------------------------------------------------------------

def run_pipeline(recipe: Recipe, run_dir: str | os.PathLike, *, force_from: str | None = None,
                 until: str | None = None, dry_run: bool = False, console: Any = None) -> dict[str, Any]:
    """Plan (and unless `dry_run`, run) the recipe in `run_dir`; return the JSON summary `srft run` prints.
    Raises ConfigError before any work when a stage name is unknown or an input file is missing."""
    from srft.run.runner import Hooks, RichHooks, Runner, run_guard

    run_dir = Path(run_dir)
    runner = Runner(run_dir, _select(pipeline_nodes(recipe), force_from, until), console)
    plan = runner.plan(force_from)
    summary: dict[str, Any] = {"run_dir": str(run_dir), "recipe": recipe.run.name,
                               "plan": [{"key": p.node.key, "action": p.action, "reason": p.reason} for p in plan]}
    missing = missing_inputs(recipe)
    if dry_run:
        return {**summary, "dry_run": True, "missing_inputs": missing}
    if missing:
        raise ConfigError(missing)
    with run_guard(run_dir, run_dir / "run.log"):
        atomic_write_json(run_dir / "recipe.json", recipe.model_dump(mode="json"))
        log.info("srft run %s -> %s (from=%s, until=%s): %d to run, %d up to date", recipe.run.name, run_dir,
                 force_from, until, sum(p.action == "run" for p in plan), sum(p.action == "skip" for p in plan))
        display = RichHooks(console, len(runner.nodes)) if console is not None else contextlib.nullcontext(Hooks())
        # The lab's presets pick their thread count (1 for its tiny students); your run.threads wins.
        threads = recipe.run.threads or (getattr(recipe.lab.config(), "threads", None) if recipe.lab else None)
        with display as hooks, _torch_threads(threads):
            results = runner.run(force_from, hooks)
    counts = {s: sum(r.status == s for r in results) for s in ("ran", "skipped", "failed", "blocked")}
    report = run_dir / "report" / "report.html"
    done = any(r.key == "report" and r.status in ("ran", "skipped") for r in results)
    return {**summary, "nodes": [r.to_dict() for r in results], **counts,
            "ok": counts["failed"] + counts["blocked"] == 0, "report": str(report) if done else None,
            "log": str(run_dir / "run.log")}


@contextlib.contextmanager
def _torch_threads(n: int | None):
    """torch's intra-op threads for the run (restored after: a caller's process keeps its setting)."""
    if not n:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _select(nodes: list[Node], force_from: str | None, until: str | None) -> list[Node]:
    """Check --from/--until name a stage or node of this recipe; drop the stages after --until."""
    def named(name: str) -> list[Node]:
        return [n for n in nodes if n.stage == name or n.key == name or n.key.startswith(name + "/")]

    present = [st for st in STAGES if any(n.stage == st for n in nodes)]
    problems = [f"--{flag} {name}: no such stage or node; stages: {', '.join(present)}"
                for flag, name in (("from", force_from), ("until", until)) if name and not named(name)]
    if problems:
        raise ConfigError(problems)
    if until:
        last = max(STAGES.index(n.stage) for n in named(until))
        nodes = [n for n in nodes if STAGES.index(n.stage) <= last]
    return nodes


def print_result(result: dict[str, Any], console: Any) -> None:
    """The plan (dry run) or the outcome of a run (`srft.run.graph.run_pipeline`'s dict), for humans."""
    from rich import box
    from rich.table import Table

    if result.get("dry_run"):
        table = Table(title=f"srft run {result['recipe']} -> {result['run_dir']} (dry run)", box=box.SIMPLE_HEAD,
                      title_justify="left")
        for col in ("node", "action", "why"):
            table.add_column(col, overflow="fold")
        for item in result["plan"]:
            table.add_row(item["key"], item["action"], item["reason"], style=None if item["action"] == "run" else "dim")
        console.print(table)
        for line in result["missing_inputs"]:
            console.print(f"missing input (a real run stops here): {line}", style="yellow", markup=False,
                          highlight=False, soft_wrap=True)
        return
    console.print(f"{result['ran']} ran, {result['skipped']} up to date, {result['failed']} failed, "
                  f"{result['blocked']} blocked; log: {result['log']}", markup=False, highlight=False)
    for node in result["nodes"]:
        if node["status"] in ("failed", "blocked"):
            console.print(f"{node['status']}: {node['key']}: {node['error'] or node['reason']}", style="red",
                          markup=False, highlight=False, soft_wrap=True)
    if result["report"]:
        uri = Path(result["report"]).resolve().as_uri()
        console.print(f"report: {result['report']}  ({uri})", style="bold", markup=False, highlight=False,
                      soft_wrap=True)
