"""Recipes: every file in recipes/ validates and dry-runs; typos, bad values and missing inputs are reported at
once, each naming the file:line (or the override) and the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from srft.cli import app
from srft.run.graph import load_recipe, pipeline_nodes
from srft.run.loader import ConfigError, apply_overrides

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))


def test_the_shipped_recipes_are_there() -> None:
    names = {p.name for p in RECIPES}
    assert "demo.yaml" in names
    assert any("lora-1gpu" in n for n in names) and any("fsdp-8gpu" in n for n in names)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_dry_runs(recipe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # recipes name paths relative to the project root (configs/accelerate/...)
    res = CliRunner().invoke(app, ["run", str(recipe), "--dry-run", "--json", "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)  # stdout is exactly one JSON object
    assert result["dry_run"] is True and result["run_dir"] == str(tmp_path / "run")
    keys = [item["key"] for item in result["plan"]]
    assert {item["action"] for item in result["plan"]} == {"run"}  # nothing built yet
    assert keys[-1] == "report" and "ingest" in keys and any(k.startswith("train/") for k in keys)
    recipe_obj, _ = load_recipe(recipe)
    for policy in recipe_obj.build.policies:
        for seed in recipe_obj.train.seeds:
            assert f"train/{policy}/seed{seed}" in keys
    assert not (tmp_path / "run").exists()  # a dry run writes nothing
    assert "node" in res.stderr and "action" in res.stderr  # the plan table went to stderr in JSON mode


def test_fsdp_recipe_launches_accelerate_with_a_shipped_config() -> None:
    recipe, _ = load_recipe(next(p for p in RECIPES if "fsdp-8gpu" in p.name))
    assert recipe.train.launch is not None and recipe.train.launch.num_processes == 8
    assert (ROOT / recipe.train.launch.accelerate_config).is_file(), "the accelerate config the recipe names"
    assert recipe.train.method == "full" and recipe.train.bf16


def test_real_recipes_use_an_openai_compatible_critic_and_harness_outputs() -> None:
    for path in RECIPES:
        if path.name == "demo.yaml":
            continue
        recipe, _ = load_recipe(path)
        assert recipe.annotate.critic.name == "openai" and recipe.annotate.critic.options["base_url"].endswith("/v1")
        assert recipe.evaluate is not None and set(recipe.evaluate.outcomes) == set(recipe.build.policies)
        assert recipe.ingest.exclude_instances  # the leakage guard is on by default in what users copy


BASE = """\
run:
  name: t
lab:
  preset: tiny
build:
  policies:
    rft: {}
    srft: {mask_labels: [mistake]}
  max_length: 1024
train:
  max_steps: 3
  batch_size: 8
evaluate:
  lab: true
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


def test_typos_name_file_line_key_and_suggest(tmp_path: Path) -> None:
    text = BASE.replace("  max_steps: 3", "  max_stpes: 3").replace("    srft: {mask_labels", "    srft: {mask_lables")
    with pytest.raises(ConfigError) as err:
        load_recipe(_write(tmp_path, text))
    problems = err.value.problems
    assert len(problems) == 2  # every problem at once
    assert any(p.startswith(f"{tmp_path / 'r.yaml'}:11: train.max_stpes: unknown key; did you mean 'max_steps'?")
               for p in problems), problems
    assert any(":8: build.policies.srft.mask_lables: unknown key; did you mean 'mask_labels'?" in p for p in problems)


def test_bad_values_and_cross_section_problems_are_all_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_recipe(_write(tmp_path, BASE), ["train.max_steps=lots", "build.policies.srft.mask_labels=[typo]"])
    text = str(err.value)
    assert "override train.max_steps: train.max_steps: Input should be a valid integer" in text
    assert "override build.policies.srft.mask_labels: build.policies.srft.mask_labels.0:" in text
    with pytest.raises(ConfigError) as err:
        load_recipe(_write(tmp_path, BASE + "compare: {baseline: sft}\n"), ["evaluate.lab=false",
                    "evaluate.outcomes.srft=[a.json, b.json]", "lab.overrides.tasks.trian=3"])
    problems = err.value.problems
    assert any("compare.baseline: 'sft' is not a policy (rft, srft)" in p for p in problems), problems
    assert any("evaluate.outcomes.srft: 2 harness output(s) for 1 seed(s) [0]" in p for p in problems), problems
    assert any("evaluate.outcomes: no harness outputs for rft" in p for p in problems), problems
    assert ("override lab.overrides.tasks.trian: lab.overrides.tasks.trian: unknown key; did you mean 'train'? "
            "(known here: train, eval, pretrain, mix)") in problems


def test_exactly_one_source_and_one_student(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"r.yaml:\d+: ingest.paths: the lab writes the trajectories"):
        load_recipe(_write(tmp_path, BASE + "ingest: {paths: [x]}\n"))
    no_lab = BASE.replace("lab:\n  preset: tiny\n", "").replace("  lab: true", "  outcomes: {rft: [a], srft: [b]}")
    with pytest.raises(ConfigError) as err:
        load_recipe(_write(tmp_path, no_lab))
    assert [p.split(": ", 1)[1] for p in err.value.problems] == [
        "ingest.paths: name the trajectory files to read (or use a `lab:` section)",
        "train.model: set train.model (a model folder) or train.init"]
    with pytest.raises(ConfigError, match="set train.model .* or train.init .*, not both"):
        load_recipe(_write(tmp_path, BASE), ["train.model=/models/x", "train.init={arch: llama}"])
    with pytest.raises(ConfigError, match="train.seed: use train.seeds"):
        load_recipe(_write(tmp_path, BASE), ["train.seed=3"])
    with pytest.raises(ConfigError, match="unknown lab preset 'huge'; known: tiny, small, paper"):
        load_recipe(_write(tmp_path, BASE), ["lab.preset=huge"])


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"r.yaml:7: invalid YAML: expected ',' or ']'"):
        load_recipe(_write(tmp_path, BASE.replace("  policies:", "  policies: [unclosed")))


def test_overrides_parse_values_as_yaml() -> None:
    data = {"train": {"max_steps": 3}, "build": {"policies": {"srft": None}}}
    apply_overrides(data, ["train.max_steps=20", "train.bf16=true", "build.policies.srft.mask_labels=[mistake, "
                           "unnecessary]", "train.lr=1e-4", "run.name="])
    assert data["train"] == {"max_steps": 20, "bf16": True, "lr": 1e-4}
    assert data["build"]["policies"]["srft"] == {"mask_labels": ["mistake", "unnecessary"]}
    assert data["run"] == {"name": None}
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        apply_overrides({}, ["train.max_steps"])
    with pytest.raises(ConfigError, match="is not a mapping"):
        apply_overrides({"train": {"seeds": [0]}}, ["train.seeds.5=1"])


def test_each_node_depends_only_on_its_own_options(tmp_path: Path) -> None:
    """Per-variant nodes: a policy's option reaches only that policy's build/train/evaluate options."""
    before = {n.key: n.options for n in pipeline_nodes(load_recipe(_write(tmp_path, BASE))[0])}
    after = {n.key: n.options for n in pipeline_nodes(load_recipe(_write(tmp_path, BASE), [
        "build.policies.srft.mask_labels=[mistake, unnecessary]"])[0])}
    changed = sorted(k for k in before if before[k] != after[k])
    # train/srft and evaluate/srft re-run too: their dependency build/srft writes new bytes (tested end to end
    # in test_pipeline.py).
    assert changed == ["build/srft", "report"]
    assert list(before) == ["generate", "ingest", "gold", "annotate", "critic_eval", "tokenizer", "student",
                            "evaluate/base", "build/rft", "train/rft/seed0", "evaluate/rft/seed0", "build/srft",
                            "train/srft/seed0", "evaluate/srft/seed0", "compare", "report"]


def test_missing_inputs_stop_a_real_run_before_any_work(tmp_path: Path) -> None:
    recipe = BASE.replace("lab:\n  preset: tiny\n", "ingest: {paths: [nowhere/a.jsonl, nowhere/b]}\n").replace(
        "  max_length: 1024\n", "  tokenizer: nowhere/tok\n").replace("  max_steps: 3\n", "  model: nowhere/model\n")
    recipe = recipe.replace("  lab: true", "  outcomes: {rft: [x.json], srft: [y.json]}")
    res = CliRunner().invoke(app, ["run", str(_write(tmp_path, recipe)), "--out", str(tmp_path / "run"), "--json"])
    assert res.exit_code == 2, res.output
    problems = json.loads(res.stdout)["problems"]
    assert [p.split(":")[0] for p in problems] == ["ingest.paths", "ingest.paths", "build.tokenizer", "train.model",
                                                   "evaluate.outcomes.rft", "evaluate.outcomes.srft"]
    assert not (tmp_path / "run").exists()


def test_unknown_stage_for_from_and_until(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["run", str(_write(tmp_path, BASE)), "--from", "trian", "--dry-run"])
    assert res.exit_code == 2 and "--from trian: no such stage or node; stages: generate, ingest" in res.output
    res = CliRunner().invoke(app, ["run", str(_write(tmp_path, BASE)), "--until", "train", "--dry-run", "--json",
                                   "--out", str(tmp_path / "run")])
    keys = [p["key"] for p in json.loads(res.stdout)["plan"]]
    assert keys[-1] == "train/srft/seed0" and not any(k.startswith(("evaluate", "compare", "report")) for k in keys)


def test_demo_is_the_lab_tiny_preset_with_its_schedule() -> None:
    """`make demo` and `srft lab --preset tiny` must not drift apart: same data, student and fine-tuning."""
    recipe, _ = load_recipe(ROOT / "recipes" / "demo.yaml")
    lab = recipe.lab.config()
    assert recipe.lab.preset == "tiny" and not recipe.lab.overrides and recipe.evaluate.lab
    assert set(recipe.build.policies) == {"sft", "rft", "srft"} and recipe.annotate.critic.name == "heuristic"
    ft, t = lab.finetune, recipe.train
    assert (t.max_steps, t.batch_size, t.lr, t.warmup_ratio) == (ft.max_steps, ft.batch_size, ft.lr, ft.warmup_ratio)
    assert t.method == "full" and t.max_length == recipe.build.max_length == lab.max_length
    assert recipe.train.model is None and recipe.train.init is None  # students start from the lab's base model


def test_a_lab_recipe_takes_every_key_it_leaves_unset_from_the_preset(tmp_path: Path) -> None:
    """`srft lab` and a recipe with `lab:` are one thing: the preset's arms become policies, its schedule the train
    section, its rollouts the evaluation; a key the recipe sets wins, and a policies mapping replaces the arms."""
    from srft.lab.config import arms
    from srft.run.experiment import lab_recipe

    path = tmp_path / "lab.yaml"
    path.write_text("lab: {preset: tiny, overrides: {finetune: {max_steps: 7}, seeds: [0, 1]}}\ntrain: {lr: 0.5}\n")
    recipe, _ = load_recipe(path)
    lab = recipe.lab.config()
    assert (recipe.train.max_steps, recipe.train.lr, recipe.train.seeds) == (7, 0.5, [0, 1])
    assert list(recipe.build.policies) == [a.name for a in arms(lab)] and recipe.build.max_length == lab.max_length
    assert recipe.evaluate.lab and recipe.compare.baseline == "rft" and recipe.compare.two_level
    assert recipe.build.policies["srft-q0.5"].flip == 0.5 and recipe.label_source("srft-q0.5") == "gold"
    keys = [n.key for n in pipeline_nodes(recipe)]
    assert "noisy/srft-q0.5" in keys and "results" not in keys and keys[-1] == "report"
    assert [n.key for n in pipeline_nodes(lab_recipe(lab))][-2:] == ["results", "report"]  # `srft lab` adds results

    path.write_text("lab: {preset: tiny}\nbuild: {policies: {rft: {}, srft: {}}}\nevaluate: null\n")
    recipe, _ = load_recipe(path)
    keys = [n.key for n in pipeline_nodes(recipe)]
    assert list(recipe.build.policies) == ["rft", "srft"] and recipe.evaluate is None
    assert not any(k.startswith(("evaluate", "compare")) for k in keys)
