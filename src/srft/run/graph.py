"""`srft run RECIPE.yaml`: one recipe, one function from trajectories to a compared student and a report.

    recipe, _ = load_recipe("recipes/demo.yaml", ["train.max_steps=20"])
    nodes = pipeline_nodes(recipe)            # read top to bottom: the whole pipeline in one function
    result = run_pipeline(recipe, "runs/demo")  # cached: unchanged nodes are skipped (srft.run.runner.Runner)

The graph, each node a folder under the run directory (run_dir/<key>/ with a manifest.json):
    generate                   the lab teacher's trajectories                      (lab)
    ingest                     trajectories.parquet + ingest_report.json
    gold                       the lab teacher's true step labels, keyed by ingested id   (lab)
    annotate                   the critic's step labels                            (if a policy reads them)
    critic_eval                critic vs gold labels                               (if there are gold labels)
    noisy/<policy>             gold labels with simulated critic noise             (policies with `flip`)
    tokenizer, student         the lab's tokenizer and pretrained base student, or a random-init student
    build/<policy>             the masked dataset of one policy
    train/<policy>/seed<s>     one student per policy and seed
    evaluate/<policy>/seed<s>  per-instance outcomes (lab rollouts, or your harness outputs); evaluate/base too
    compare                    paired statistics over the evaluated students
    results                    the lab's tables: results.md, noise.png, lab_report.json   (lab.results)
    report                     report.html (self-contained)
The recipe's sections are in `srft.run.recipe`; node bodies in `srft.run.nodes` (thin calls to the stages). The
nodes marked (lab) come from the graph's one extension point, `srft.run.nodes.Inputs` (`srft.run.lab`).
"""

from __future__ import annotations

import contextlib
import logging
import os
from functools import partial
from pathlib import Path
from collections.abc import Callable, Iterator
from typing import Any

from srft.io import atomic_write_json
from srft.dataset.masks import MaskConfig
from srft.run.recipe import Recipe
from srft.run.loader import ConfigError, apply_overrides, read_yaml
from srft.run.nodes import Inputs
from srft.run.runner import LOG_FORMAT, Node, RunLocked

log = logging.getLogger("srft.run")
STAGES = ("generate", "ingest", "gold", "annotate", "critic_eval", "noisy", "tokenizer", "student", "build", "train",
          "evaluate", "compare", "results", "report")


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
              ("annotate.prompt.reference", recipe.annotate.prompt.reference),
              ("annotate.prompt.tokenizer", recipe.annotate.prompt.tokenizer),
              ("build.tokenizer", recipe.build.tokenizer), ("train.model", recipe.train.model),
              ("compare.instances", recipe.compare.instances)]
    if recipe.train.launch is not None:
        named.append(("train.launch.accelerate_config", recipe.train.launch.accelerate_config))
    if recipe.evaluate is not None:
        named += [(f"evaluate.outcomes.{k}", p) for k, paths in recipe.evaluate.outcomes.items() for p in paths]
    return [f"{key}: {path}: no such file or directory" for key, path in named if path and not Path(path).exists()]


# -- the pipeline, top to bottom -----------------------------------------------------------------------------

def inputs_for(recipe: Recipe) -> Inputs:
    """What stands in for the recipe's files: nothing for your own data, the lab's nodes with a `lab:` section."""
    if recipe.lab is None:
        return Inputs()
    from srft.run.lab import lab_inputs

    return lab_inputs(recipe)


def pipeline_nodes(recipe: Recipe) -> list[Node]:
    """The recipe as nodes in run order: read -> label -> weigh/build -> train -> evaluate -> compare -> report.
    Each node's options are exactly what its output depends on, so changing one policy's option re-runs only
    that policy's build/train/evaluate nodes and what reads them (compare, report)."""
    from srft.run import nodes as s

    given = inputs_for(recipe)

    # 1. Read: ingest reads your files, or what a node wrote in their place (the lab's teacher), alike.
    nodes = [*given.trajectories,
             Node("ingest", "ingest", recipe.ingest.model_dump(), partial(s.ingest, recipe.ingest),
                  deps=[n.key for n in given.trajectories],
                  inputs=_paths(*recipe.ingest.paths, *recipe.ingest.outcomes, recipe.ingest.exclude_instances))]

    # 2. Label: gold labels (your file, or a node's), the critic when a policy reads it, their agreement, and gold
    #    labels with simulated critic noise for the policies that ask for it.
    nodes += _label_nodes(recipe, given.gold, s)

    # 3. The student: your model folder, a random-init model around a tokenizer (yours or a node's), or a node's;
    #    scored before fine-tuning when the evaluation can score it.
    tokenizer = recipe.build.tokenizer or recipe.train.model
    nodes += _student_nodes(recipe, given, tokenizer, s)
    student = "student" if any(n.key == "student" for n in nodes) else None
    evaluate = (given.evaluate or partial(_harness_evaluation, recipe, s)) if recipe.evaluate is not None else None
    nodes += _scored(evaluate, "base", None, student)

    # 4. Weigh + build one dataset per policy, 5. train one student per policy and seed, 6. evaluate each.
    for name in recipe.build.policies:
        nodes += _policy_nodes(recipe, name, tokenizer, student, evaluate, {n.key for n in nodes}, s)

    # 7. Compare the policies (systems) over their seeds (runs), 8. the report over everything.
    evaluated = [n.key for n in nodes if n.stage == "evaluate"]
    if evaluated:
        cmp = recipe.compare
        nodes.append(Node("compare", "compare", cmp.model_dump(), partial(s.compare, cmp, evaluated), deps=evaluated,
                          inputs=_paths(cmp.instances)))
    if given.finish is not None:
        nodes += given.finish([n.key for n in nodes], evaluated)
    report_opts = {"report": recipe.report.model_dump(), "title": recipe.report.title or recipe.run.name,
                   "policies": {p: recipe.policy_config(p).model_dump(mode="json") for p in recipe.build.policies}}
    nodes.append(Node("report", "report", report_opts, partial(s.report, recipe), deps=[n.key for n in nodes]))
    return nodes


def _label_nodes(recipe: Recipe, gold_node: Node | None, s: Any) -> list[Node]:
    """gold (a node's), annotate and critic_eval (when a policy reads the critic), noisy/<policy> (`flip`)."""
    nodes = [gold_node] if gold_node else []
    gold_deps = [n.key for n in nodes]
    gold_inputs = [] if gold_node else _paths(recipe.annotate.gold)
    if any(recipe.label_source(p) == "critic" for p in recipe.build.policies):
        opts = recipe.annotate.model_dump(mode="json", exclude={"gold", "concurrency", "cache", "use_cache"})
        nodes.append(Node("annotate", "annotate", opts, partial(s.annotate, recipe.annotate), deps=["ingest"],
                          inputs=_paths(recipe.annotate.prompt.template, recipe.annotate.prompt.tokenizer,
                                        recipe.annotate.prompt.reference)))
        # Scored with `mistake` as the masked class, whatever the policies mask.
        if gold_node or recipe.annotate.gold:
            nodes.append(Node("critic_eval", "critic_eval", {}, partial(s.critic_eval, recipe.annotate.gold),
                              deps=["ingest", "annotate", *gold_deps], inputs=gold_inputs))
    for name, section in recipe.build.policies.items():
        if section.flip is not None and recipe.label_source(name) == "gold":
            votes = {"votes": section.flip_confidence} if section.flip_confidence else {}
            nodes.append(Node(f"noisy/{name}", "noisy", {"q": section.flip, "seed": section.flip_seed, **votes},
                              partial(s.noisy, section.flip, section.flip_seed, recipe.annotate.gold,
                                      votes=section.flip_confidence),
                              deps=["ingest", *gold_deps], inputs=gold_inputs))
    return nodes


def _policy_nodes(recipe: Recipe, name: str, tokenizer: str | None, student: str | None,
                  evaluate: Callable | None, upstream: set[str], s: Any) -> list[Node]:
    """build/<name>, then per seed train/<name>/seed<s> and (when the evaluation can score it) its evaluate node."""
    mask = MaskConfig(**recipe.build.model_dump(include=set(MaskConfig.model_fields)))
    policy, labels = recipe.policy_config(name), _label_node(recipe, name)
    build_opts = {"policy": policy.model_dump(mode="json"), "labels": labels, "mask": mask.model_dump(),
                  "exports": recipe.build.exports, "tokenizer": tokenizer}
    nodes = [Node(f"build/{name}", "build", build_opts,
                  partial(s.build, policy, mask, recipe.build.exports, recipe.build.num_proc, tokenizer, labels,
                          recipe.annotate.gold),
                  deps=["ingest", *(d for d in (labels, "tokenizer") if d in upstream)],
                  inputs=_paths(tokenizer, recipe.annotate.gold if labels == "gold" else None))]
    for seed in recipe.train.seeds:
        config = recipe.train.config_for(recipe.train.model or "<student>", seed)
        launch = recipe.train.launch.model_dump() if recipe.train.launch else None
        nodes.append(Node(f"train/{name}/seed{seed}", "train", {"config": config.model_dump(mode="json"),
                                                                "launch": launch},
                          partial(s.train, config, recipe.train.launch, f"build/{name}"),
                          deps=[f"build/{name}", *([student] if student else [])],
                          inputs=_paths(recipe.train.model)))
        nodes += _scored(evaluate, name, seed, f"train/{name}/seed{seed}")
    return nodes


def _scored(evaluate: Callable | None, name: str, seed: int | None, model_key: str | None) -> list[Node]:
    node = evaluate(name, seed, model_key) if evaluate is not None else None
    return [node] if node is not None else []


def _label_node(recipe: Recipe, name: str) -> str | None:
    """Where a policy's step labels come from: the key of the node that writes them (annotate, gold,
    noisy/<policy>; "gold" is also your gold file), None when the policy reads no labels."""
    source = recipe.label_source(name)
    if source == "critic":
        return "annotate"
    if source == "gold":
        return f"noisy/{name}" if recipe.build.policies[name].flip is not None else "gold"
    return None


def _student_nodes(recipe: Recipe, given: Inputs, tokenizer: str | None, s: Any) -> list[Node]:
    """The tokenizer node (when one stands in for yours), then the student: a random-init model (`train.init`),
    else the stand-in student unless `train.model` names yours."""
    nodes = [given.tokenizer] if given.tokenizer else []
    if recipe.train.init is not None:
        nodes.append(Node("student", "student", recipe.train.init.model_dump(),
                          partial(s.init_student, recipe.train.init, tokenizer),
                          deps=["tokenizer"] if given.tokenizer else [], inputs=_paths(tokenizer)))
    elif given.student is not None and recipe.train.model is None:
        nodes.append(given.student)
    return nodes


def _harness_evaluation(recipe: Recipe, s: Any, name: str, seed: int | None, model_key: str | None) -> Node | None:
    """evaluate/<name>/seed<s> (or evaluate/base): the harness output the recipe gives for that student."""
    outputs = recipe.evaluate.outcomes.get(name) if recipe.evaluate is not None else None
    if not outputs:
        return None
    key, run = ("evaluate/base", "pretrained") if seed is None else (f"evaluate/{name}/seed{seed}", f"seed{seed}")
    given = outputs[0 if seed is None else recipe.train.seeds.index(seed)]
    return Node(key, "evaluate", {"outcomes": given}, partial(s.evaluate_given, given, name, run),
                deps=[model_key] if model_key else [], inputs=_paths(given))


def _paths(*paths: str | None) -> list[Path]:
    return [Path(p) for p in paths if p]


# -- running -------------------------------------------------------------------------------------------------

def run_pipeline(recipe: Recipe, run_dir: str | os.PathLike, *, force_from: str | None = None,
                 until: str | None = None, dry_run: bool = False, console: Any = None,
                 hooks: Any = None) -> dict[str, Any]:
    """Plan (and unless `dry_run`, run) the recipe in `run_dir`; return the JSON summary `srft run` prints.
    Progress goes to `hooks` (a `srft.run.runner.Hooks`; default: a rich display on `console`, if given).
    Raises ConfigError before any work when a stage name is unknown or an input file is missing."""
    from srft.run.display import RichHooks
    from srft.run.runner import Hooks, Runner

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
        if hooks is None:
            hooks = RichHooks(console, len(runner.nodes)) if console is not None else Hooks()
        with hooks, _torch_threads(recipe.run.threads):
            results = runner.run(force_from, hooks, workers=recipe.run.workers, threads=recipe.run.threads)
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


@contextlib.contextmanager
def run_guard(run_dir: Path, log_file: Path) -> Iterator[None]:
    """Around a run: one `srft run` per run directory at a time (a lock file); the `srft` loggers appended to
    `log_file`; SIGTERM turned into SystemExit so a killed run still removes its temp folder (SIGKILL cannot be
    caught: the next run of that node removes what it left)."""
    import fcntl
    import signal
    import threading

    run_dir.mkdir(parents=True, exist_ok=True)
    lock = open(run_dir / ".lock", "w")  # noqa: SIM115 - held for the whole block
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise RunLocked(f"{run_dir}: another `srft run` is using this run directory") from None
    handler = logging.FileHandler(log_file, encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logger = logging.getLogger("srft")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main else None
    try:
        yield
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
        logger.removeHandler(handler)
        logger.setLevel(level)
        handler.close()
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)
