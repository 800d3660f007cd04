"""`srft run`: the cached node runner (skips, precise re-runs, crash safety, --from) and the whole pipeline on the
lab's tiny data (second run does nothing; changing one policy re-runs only that policy's nodes and what reads them)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from srft.run.runner import MANIFEST, Node, NodeContext, Runner, read_manifest


def _writer(name: str, calls: list[str]):
    """A node body that records its call and writes its options plus its dependencies' content."""

    def fn(ctx: NodeContext) -> dict:
        calls.append(ctx.node.key)
        upstream = "".join((d / "out.txt").read_text() for d in ctx.dep_dirs.values())
        extra = "".join(Path(p).read_text() for p in ctx.node.inputs)
        (ctx.out_dir / "out.txt").write_text(f"{name}:{json.dumps(ctx.node.options)}|{upstream}|{extra}\n")
        return {"chars": len(upstream)}

    return fn


def _graph(calls: list[str], opts: dict[str, dict], data: Path) -> list[Node]:
    """ingest -> build/a, build/b -> train/a, train/b -> report (a diamond like the pipeline's)."""
    return [
        Node("ingest", "ingest", opts.get("ingest", {}), _writer("ingest", calls), inputs=[data]),
        Node("build/a", "build", opts.get("a", {}), _writer("a", calls), deps=["ingest"]),
        Node("build/b", "build", opts.get("b", {}), _writer("b", calls), deps=["ingest"]),
        Node("train/a", "train", {}, _writer("ta", calls), deps=["build/a"]),
        Node("train/b", "train", {}, _writer("tb", calls), deps=["build/b"]),
        Node("report", "report", {}, _writer("r", calls), deps=["ingest", "train/a", "train/b"]),
    ]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "data.txt"
    path.write_text("v1")
    return path


def test_second_run_skips_everything_and_one_option_reruns_its_branch(tmp_path: Path, data: Path) -> None:
    calls: list[str] = []
    run = tmp_path / "run"
    first = Runner(run, _graph(calls, {}, data)).run()
    assert [r.status for r in first] == ["ran"] * 6
    assert calls == ["ingest", "build/a", "build/b", "train/a", "train/b", "report"]
    assert all(read_manifest(run / key)["fingerprint"] for key in calls)

    calls.clear()
    second = Runner(run, _graph(calls, {}, data)).run()
    assert calls == [] and {r.status for r in second} == {"skipped"}

    calls.clear()
    runner = Runner(run, _graph(calls, {"b": {"mask": ["mistake", "unnecessary"]}}, data))
    plan = {p.node.key: (p.action, p.reason) for p in runner.plan()}
    assert plan["build/b"] == ("run", "options changed: mask")
    assert plan["train/b"] == ("run", "upstream build/b runs") and plan["report"][0] == "run"
    assert plan["build/a"] == ("skip", "unchanged") and plan["train/a"][0] == "skip"
    runner.run()
    assert calls == ["build/b", "train/b", "report"]


def test_changed_input_file_reruns_and_says_why(tmp_path: Path, data: Path) -> None:
    calls: list[str] = []
    Runner(tmp_path / "run", _graph(calls, {}, data)).run()
    data.write_text("v2 (longer, so the size changes too)")
    calls.clear()
    runner = Runner(tmp_path / "run", _graph(calls, {}, data))
    assert runner.plan()[0].reason == "input changed: data.txt"
    runner.run()
    assert calls[0] == "ingest" and len(calls) == 6


def test_from_forces_a_stage_or_node_and_its_dependents(tmp_path: Path, data: Path) -> None:
    calls: list[str] = []
    Runner(tmp_path / "run", _graph(calls, {}, data)).run()
    calls.clear()
    Runner(tmp_path / "run", _graph(calls, {}, data)).run(force_from="build/a")
    assert calls == ["build/a", "train/a", "report"]
    calls.clear()
    Runner(tmp_path / "run", _graph(calls, {}, data)).run(force_from="train")
    assert calls == ["train/a", "train/b", "report"]


def test_rerun_into_identical_bytes_does_not_rerun_dependents(tmp_path: Path, data: Path) -> None:
    """Skips are decided when a node's turn comes: a dependency that re-ran (say, a new critic option that gave
    the same labels) but wrote the same bytes leaves its dependents up to date."""
    calls: list[str] = []

    def constant(ctx: NodeContext) -> dict:
        calls.append(ctx.node.key)
        (ctx.out_dir / "out.txt").write_text("same labels")
        return {}

    def graph(option: int) -> list[Node]:
        nodes = _graph(calls, {}, data)
        nodes[0] = Node("ingest", "ingest", {"concurrency": option}, constant, inputs=[data])
        return nodes

    Runner(tmp_path / "run", graph(1)).run()
    calls.clear()
    runner = Runner(tmp_path / "run", graph(8))
    assert [p.action for p in runner.plan()] == ["run"] * 6  # the plan cannot know the bytes in advance
    results = runner.run()
    assert calls == ["ingest"] and [r.status for r in results][1:] == ["skipped"] * 5


def test_crash_mid_stage_leaves_nothing_trusted_and_blocks_only_dependents(tmp_path: Path, data: Path) -> None:
    calls: list[str] = []
    run = tmp_path / "run"

    def crash(ctx: NodeContext) -> dict:
        (ctx.out_dir / "out.txt").write_text("half written")
        (ctx.out_dir / MANIFEST).write_text('{"fingerprint": "forged"}')  # even a manifest-looking file
        raise RuntimeError("disk on fire")

    nodes = _graph(calls, {}, data)
    nodes[1] = Node("build/a", "build", {}, crash, deps=["ingest"])
    results = {r.key: r for r in Runner(run, nodes).run()}
    assert results["build/a"].status == "failed" and "disk on fire" in results["build/a"].error
    assert results["train/a"].status == "blocked" and results["report"].status == "blocked"
    assert results["build/b"].status == "ran" and results["train/b"].status == "ran"  # independent: still ran
    assert not (run / "build" / "a").exists()
    assert not [p for p in (run / "build").iterdir() if p.name.startswith(".")]  # temp folder cleaned up

    calls.clear()
    Runner(run, _graph(calls, {}, data)).run()
    assert calls == ["build/a", "train/a", "report"]  # the failed branch runs; finished nodes are kept


def test_a_leftover_temp_folder_is_never_read(tmp_path: Path, data: Path) -> None:
    calls: list[str] = []
    run = tmp_path / "run"
    (run / "build" / ".a.tmp-crashed").mkdir(parents=True)
    (run / "build" / ".a.tmp-crashed" / "out.txt").write_text("stale")
    Runner(run, _graph(calls, {}, data)).run()
    assert (run / "build" / "a" / "out.txt").read_text().startswith("a:")


def test_unknown_dependency_order_is_rejected(tmp_path: Path) -> None:
    nodes = [Node("b", "b", {}, lambda ctx: {}, deps=["a"]), Node("a", "a", {}, lambda ctx: {})]
    with pytest.raises(ValueError, match="not listed before it"):
        Runner(tmp_path, nodes)


def _timed(seconds: float, fail: bool, ctx: NodeContext) -> dict:
    """A node body for worker processes (module level, so it pickles): sleeps, records when and where it ran."""
    import os
    import time

    start = time.time()
    time.sleep(seconds)
    if fail:
        raise RuntimeError("worker node failed")
    (ctx.out_dir / "out.txt").write_text(json.dumps({"start": start, "end": time.time(), "pid": os.getpid()}))
    return {"slept": seconds}


def test_workers_run_independent_nodes_side_by_side_in_other_processes(tmp_path: Path) -> None:
    """run.workers > 1: two independent nodes overlap in time in two worker processes; their dependent waits for
    both; a failing node is recorded and blocks only its dependents; the next run skips what finished."""
    import os
    from functools import partial

    def graph(fail: bool) -> list[Node]:
        return [Node("a", "a", {}, partial(_timed, 1.5, False)), Node("b", "b", {}, partial(_timed, 1.5, False)),
                Node("c", "c", {}, partial(_timed, 0.0, False), deps=["a", "b"]),
                Node("d", "d", {"fail": fail}, partial(_timed, 0.0, fail)),
                Node("e", "e", {}, partial(_timed, 0.0, False), deps=["d"])]

    run = tmp_path / "run"
    results = {r.key: r for r in Runner(run, graph(fail=True)).run(workers=2)}
    assert {k: r.status for k, r in results.items()} == {"a": "ran", "b": "ran", "c": "ran", "d": "failed",
                                                         "e": "blocked"}
    assert "worker node failed" in results["d"].error
    a, b, c = (json.loads((run / key / "out.txt").read_text()) for key in "abc")
    assert a["start"] < b["end"] and b["start"] < a["end"]  # side by side
    assert c["start"] >= max(a["end"], b["end"])  # after both of its dependencies
    assert a["pid"] != b["pid"] and os.getpid() not in {a["pid"], b["pid"], c["pid"]}
    again = {r.key: r.status for r in Runner(run, graph(fail=False)).run(workers=2)}
    assert again == {"a": "skipped", "b": "skipped", "c": "skipped", "d": "ran", "e": "ran"}


# -- the whole pipeline on the lab's data (the `tiny_run` fixture: tests/fixtures/pipeline/tiny.yaml) -----------

TINY = Path(__file__).parent / "fixtures" / "pipeline" / "tiny.yaml"


def _cli(args: list[str], recipe: Path = TINY) -> tuple[int, dict, str]:
    """`srft run RECIPE ARGS --json`: (exit code, the one JSON object on stdout, stderr)."""
    from typer.testing import CliRunner

    from srft.cli import app

    res = CliRunner().invoke(app, ["run", str(recipe), *args, "--json"])
    return res.exit_code, json.loads(res.stdout), res.stderr


def test_first_run_builds_every_node_with_a_manifest_and_a_log(tiny_run) -> None:
    run, result = tiny_run["dir"], tiny_run["result"]
    keys = [n["key"] for n in result["nodes"]]
    assert keys == ["generate", "ingest", "gold", "annotate", "critic_eval", "tokenizer", "student", "evaluate/base",
                    "build/rft", "train/rft/seed0", "evaluate/rft/seed0",
                    "build/srft", "train/srft/seed0", "evaluate/srft/seed0",
                    "build/srft_gold", "train/srft_gold/seed0", "evaluate/srft_gold/seed0", "compare", "report"]
    assert result["ran"] == len(keys) and result["ok"] and result["report"] == str(run / "report" / "report.html")
    for key in keys:
        manifest = read_manifest(run / key)
        assert manifest["key"] == key and manifest["parts"]["srft_version"] and manifest["output_hash"]
    log = (run / "run.log").read_text()
    assert "train/srft/seed0: start" in log and "report: done" in log
    # the stages really ran: the lab's data, labels from three sources, students, outcomes, statistics
    nodes = {n["key"]: n["summary"] for n in result["nodes"]}
    assert nodes["generate"]["trajectories"] == 16 and nodes["ingest"]["trajectories"] == 16
    assert nodes["gold"]["steps"] == nodes["ingest"]["steps"]  # the oracle labels every step it took
    assert nodes["critic_eval"]["matched_steps"] > 0
    assert nodes["build/rft"]["trajectories_used"] == nodes["ingest"]["resolved"]  # rft drops unresolved ones
    assert nodes["build/srft_gold"]["masked_step_tokens"] > 0  # the oracle labels mask the teacher's mistakes
    assert nodes["train/srft/seed0"]["steps"] == 2 and nodes["evaluate/srft/seed0"]["tasks"] == 4
    summary = json.loads((run / "evaluate/srft/seed0/outcomes/srft.seed0.json").read_text())
    assert summary["schema_version"] == 2 and len(summary["submitted_ids"]) == 4
    compare = json.loads((run / "compare" / "compare.json").read_text())
    assert [s["name"] for s in compare["systems"]] == ["base", "rft", "srft", "srft_gold"]
    assert {(c["a"], c["b"]) for c in compare["comparisons"]} == {("base", "rft"), ("srft", "rft"),
                                                                   ("srft_gold", "rft")}


def test_rerun_skips_all_and_one_policy_option_reruns_only_that_policy(tiny_run, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run["dir"], run)
    code, second, _ = _cli(["--out", str(run)])
    assert code == 0 and second["ran"] == 0 and second["skipped"] == len(second["nodes"])

    code, dry, _ = _cli(["--out", str(run), "build.policies.srft.mask_labels=[mistake, unnecessary]", "--dry-run"])
    planned = {p["key"]: p["reason"] for p in dry["plan"] if p["action"] == "run"}
    assert planned["build/srft"] == "options changed: policy"
    assert set(planned) == {"build/srft", "train/srft/seed0", "evaluate/srft/seed0", "compare", "report"}

    code, third, _ = _cli(["--out", str(run), "build.policies.srft.mask_labels=[mistake, unnecessary]"])
    ran = {n["key"] for n in third["nodes"] if n["status"] == "ran"}
    assert code == 0 and {"build/srft", "train/srft/seed0", "evaluate/srft/seed0", "report"} <= ran
    assert ran <= {"build/srft", "train/srft/seed0", "evaluate/srft/seed0", "compare", "report"}
    build = json.loads((run / "build" / "srft" / "build_report.json").read_text())
    assert build["config"]["policy"]["mask_labels"] == ["mistake", "unnecessary"]


def test_from_forces_a_stage_and_a_crash_mid_stage_is_not_trusted(tiny_run, tmp_path: Path) -> None:
    """A real stage that fails (evaluate on a student whose weights are gone) leaves its previous, complete output
    untouched (valid for its own, old options) and no temp folder; compare/report are blocked; only independent
    nodes ran. Once fixed, the next run redoes exactly the failed node and what reads it."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run["dir"], run)
    code, forced, _ = _cli(["--out", str(run), "--from", "compare"])
    assert [n["key"] for n in forced["nodes"] if n["status"] == "ran"] == ["compare", "report"]

    weights = next((run / "train/rft/seed0/model").glob("*.safetensors"))
    saved = weights.read_bytes()
    weights.unlink()
    code, crashed, _ = _cli(["--out", str(run), "lab.overrides.tasks.eval=3"])
    status = {n["key"]: n["status"] for n in crashed["nodes"] if n["status"] != "skipped"}
    assert code == 1 and not crashed["ok"] and crashed["report"] is None
    assert status == {"evaluate/base": "ran", "evaluate/rft/seed0": "failed", "evaluate/srft/seed0": "ran",
                      "evaluate/srft_gold/seed0": "ran", "compare": "blocked", "report": "blocked"}
    assert read_manifest(run / "evaluate/rft/seed0")["parts"]["options"]["tasks"] == 4  # the old, whole output
    assert not list((run / "evaluate/rft").glob(".seed0.tmp-*"))
    assert "evaluate/rft/seed0 failed" in (run / "run.log").read_text()

    weights.write_bytes(saved)
    code, healed, _ = _cli(["--out", str(run), "lab.overrides.tasks.eval=3"])
    assert code == 0 and [n["key"] for n in healed["nodes"] if n["status"] == "ran"] == [
        "evaluate/rft/seed0", "compare", "report"]


def test_an_interrupted_training_resumes_from_its_last_checkpoint(tiny_run, tmp_path: Path) -> None:
    """Checkpoints live outside the node's temp folder (run/.resume/<key>/<fingerprint>/), so a training that
    crashed at step 2 continues from checkpoint-1 on the next `srft run` instead of starting again."""
    import shutil

    from transformers import TrainerCallback

    from srft.run.graph import load_recipe, pipeline_nodes
    from srft.run.runner import Runner
    from srft.train.run import run_train

    run = tmp_path / "run"
    shutil.copytree(tiny_run["dir"], run)
    overrides = ["train.save_steps=1", "train.max_steps=3"]
    recipe, _ = load_recipe(TINY, overrides)
    runner = Runner(run, pipeline_nodes(recipe))
    node = runner.by_key["train/srft/seed0"]
    fingerprint, _ = runner.fingerprint(node)
    work = run / ".resume" / node.key / fingerprint[:16] / "model"

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:
                raise RuntimeError("power cut")

    config = recipe.train.config_for(str(run / "student" / "model"), 0)
    with pytest.raises(RuntimeError, match="power cut"):
        run_train(run / "build" / "srft", work, config, callbacks=[Crash()])
    assert (work.with_name("model.partial") / "checkpoints" / "checkpoint-1").is_dir()
    # Another student was killed while writing its first checkpoint: nothing to continue, it starts over.
    other = runner.by_key["train/rft/seed0"]
    half = run / ".resume" / other.key / runner.fingerprint(other)[0][:16] / "model.partial" / "checkpoints"
    (half / "checkpoint-1").mkdir(parents=True)
    (half / "checkpoint-1" / "model.safetensors").write_bytes(b"cut")

    code, result, _ = _cli(["--out", str(run), *overrides, "--until", "train"])
    trained = {n["key"]: n["summary"] for n in result["nodes"] if n["key"].startswith("train/")}
    assert code == 0 and trained["train/srft/seed0"]["resumed_from"].endswith("checkpoint-1")
    assert trained["train/srft/seed0"]["steps"] == 3 and trained["train/rft/seed0"]["resumed_from"] is None
    assert trained["train/rft/seed0"]["steps"] == 3
    assert not (run / ".resume" / node.key).exists() and not (run / ".resume" / other.key).exists()  # cleaned
    assert not (run / "train/srft/seed0/model/checkpoints").exists()


def test_your_data_your_tokenizer_and_your_harness_outputs(tiny_run, tmp_path: Path) -> None:
    """The real-use path without the lab: trajectory files + a harness summary are ingested, the critic labels
    them, a random-init student trains per policy, and the harness outputs given per policy (one per seed, plus
    the untrained `base`) are compared; no gold labels, so no critic_eval node and no agreement section."""
    examples = Path(__file__).resolve().parents[1] / "examples" / "trajectories"
    ids = [f"toy__calculator-{i}" for i in range(1, 6)]
    outcomes = {"base": ids[:1], "rft": ids[:2], "srft": ids[:3]}
    for name, resolved in outcomes.items():
        (tmp_path / f"{name}.json").write_text(json.dumps({
            "schema_version": 2, "completed_ids": ids, "submitted_ids": ids, "resolved_ids": resolved,
            "unresolved_ids": [i for i in ids if i not in resolved]}))
    recipe = tmp_path / "mine.yaml"
    recipe.write_text(f"""
run: {{threads: 1}}
ingest: {{paths: ["{examples}"]}}
build:
  tokenizer: {tiny_run["dir"] / "tokenizer" / "tokenizer"}
  policies: {{rft: {{}}, srft: {{}}}}
train:
  init: {{arch: llama, preset: tiny}}
  max_steps: 1
  method: full
evaluate:
  outcomes: {{base: ["{tmp_path / 'base.json'}"], rft: ["{tmp_path / 'rft.json'}"], srft: ["{tmp_path / 'srft.json'}"]}}
compare: {{baseline: rft, n_boot: 200}}
""")
    code, result, stderr = _cli(["--out", str(tmp_path / "run")], recipe)
    assert code == 0, stderr
    assert [n["key"] for n in result["nodes"]] == [
        "ingest", "annotate", "student", "evaluate/base", "build/rft", "train/rft/seed0", "evaluate/rft/seed0",
        "build/srft", "train/srft/seed0", "evaluate/srft/seed0", "compare", "report"]
    nodes = {n["key"]: n["summary"] for n in result["nodes"]}
    assert nodes["ingest"]["trajectories"] == 5 and nodes["annotate"]["trajectories"] == 2  # the unresolved ones
    compare = json.loads((tmp_path / "run" / "compare" / "compare.json").read_text())
    assert {s["name"]: s["rate"] for s in compare["systems"]} == {"base": 0.2, "rft": 0.4, "srft": 0.6}
    html = (tmp_path / "run" / "report" / "report.html").read_text()
    assert "No gold labels in this run" in html and "toy__calculator" in html

    (tmp_path / "srft.json").write_text((tmp_path / "rft.json").read_text())  # the harness re-scored srft
    code, again, _ = _cli(["--out", str(tmp_path / "run")], recipe)
    ran = [n["key"] for n in again["nodes"] if n["status"] == "ran"]
    assert code == 0 and ran == ["evaluate/srft/seed0", "compare", "report"]



def test_train_under_accelerate_launch(tiny_run, tmp_path: Path) -> None:
    """`train.launch` runs `accelerate launch -m srft train` in a subprocess (the multi-GPU path of the FSDP
    recipe), here with a one-process CPU config; the node gets the model, the report and the launcher's log."""
    import shutil

    from srft.run.graph import load_recipe, pipeline_nodes
    from srft.run.runner import Runner

    run = tmp_path / "run"
    shutil.copytree(tiny_run["dir"], run)
    config = tmp_path / "cpu.yaml"
    config.write_text("compute_environment: LOCAL_MACHINE\ndistributed_type: 'NO'\nmixed_precision: 'no'\n"
                      "num_machines: 1\nnum_processes: 1\nuse_cpu: true\n")
    recipe, _ = load_recipe(TINY, [f"train.launch.accelerate_config={config}"])
    runner = Runner(run, pipeline_nodes(recipe))
    assert runner.status(runner.by_key["train/rft/seed0"]) == (False, "options changed: launch")
    manifest = runner.run_node(runner.by_key["train/rft/seed0"])
    folder = run / "train" / "rft" / "seed0"
    report = json.loads((folder / "model" / "train_report.json").read_text())
    assert manifest["summary"]["steps"] == report["steps"] == 2 and (folder / "train.log").is_file()
    assert next((folder / "model").glob("*.safetensors")).stat().st_size > 0
