"""`srft train` on tiny random models: the loss is the hand-computed masked weighted CE in every normalisation mode,
masked steps carry no loss but stay in context, gradient accumulation is exact, bad rows are dropped and counted,
pinned CPU losses and resume (STYLE.md item 12), token budgets, outputs and the CLI."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from srft.train.models import InitConfig, init_model, make_word_tokenizer
from srft.train import TrainConfig, build_trainer, run_train
from srft.dataset.masks import IGNORE_INDEX as IGNORE
from srft.train.data import row_coefficients
from srft.train.plan import BatchPlan, steps_for_budget

VOCAB = 256


def synthetic_rows(n: int, seed: int = 0, weights: bool = False) -> list[dict]:
    """Trajectory-shaped rows: an untrained prompt, then 3 steps (assistant tokens trained or masked, an untrained
    observation after each). Lengths and mask ratios vary a lot on purpose, so the three loss_norm modes and
    naive per-micro-batch averaging all give different numbers."""
    rng = np.random.default_rng(seed)
    rows = []
    for r in range(n):
        ids = rng.integers(4, VOCAB, int(rng.integers(4, 20))).tolist()
        labels, lw, spans = [IGNORE] * len(ids), [0.0] * len(ids), []
        for step in (1, 2, 3):
            size, good = int(rng.integers(2, 6 + 10 * (r % 3))), bool(step == 1 or rng.random() > 0.35)
            start, x = len(ids), rng.integers(4, VOCAB, size).tolist()
            w = float(rng.choice([0.5, 1.0, 2.0])) if weights and good else float(good)
            ids += x
            labels += x if good else [IGNORE] * size
            lw += [w] * size
            spans.append({"step": step, "start": start, "end": len(ids), "weight": w})
            obs = int(rng.integers(1, 8))
            ids += rng.integers(4, VOCAB, obs).tolist()
            labels += [IGNORE] * obs
            lw += [0.0] * obs
        row = {"input_ids": ids, "labels": labels, "step_spans": spans, "trajectory_id": f"t{r:03d}",
               "instance_id": f"repo__x-{r}", "resolved": bool(r % 2), "policy": "srft"}
        if weights:
            row["loss_weights"] = lw
        rows.append(row)
    return rows


def save_build(path, rows):
    import datasets

    datasets.Dataset.from_list(rows).save_to_disk(str(path / "dataset"))
    return path


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    make_word_tokenizer(root / "tok", VOCAB - 4)
    init_model(root / "tok", root / "model", InitConfig(preset="tiny", seed=0))
    return root / "model"


def config(model, **kw) -> TrainConfig:
    return TrainConfig(**{"model": str(model), "method": "full", "lr": 1e-3, "max_grad_norm": 0.0, **kw})


# -- the loss is the hand-computed masked (weighted) cross-entropy -------------------------------------------------

def hand_loss(model, rows: list[dict], mode: str) -> float:
    """The definition in docs/training.md, computed row by row without padding, from the model's plain logits."""
    units, tokens = [], []
    for row in rows:
        ids, labels = row["input_ids"], row["labels"]
        w = row.get("loss_weights") or [1.0] * len(ids)
        with torch.no_grad():
            logp = F.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), -1)
        ce = {p: (-logp[p - 1, labels[p]].item(), w[p]) for p in range(1, len(ids)) if labels[p] != IGNORE}
        tokens += ce.values()
        if mode == "sequence":
            units.append(sum(c * wt for c, wt in ce.values()) / len(ce))
        elif mode == "step":
            for span in row["step_spans"]:
                inside = [ce[p] for p in range(span["start"], span["end"]) if p in ce]
                if inside:
                    units.append(sum(c * wt for c, wt in inside) / len(inside))
    if mode == "token":
        return sum(c * wt for c, wt in tokens) / len(tokens)
    return sum(units) / len(units)


@pytest.mark.parametrize("mode", ["token", "sequence", "step"])
@pytest.mark.parametrize("weights", [False, True])
def test_loss_equals_hand_computed_masked_weighted_ce(tiny_model, tmp_path, mode, weights):
    rows = synthetic_rows(5, seed=1, weights=weights)
    build = save_build(tmp_path / "build", rows)
    trainer = build_trainer(build, tmp_path / "work", config(tiny_model, loss_norm=mode)).trainer
    batch = trainer.data_collator(rows)  # padded to the longest row: padding must not change anything
    loss = trainer.compute_loss(trainer.model, batch).item()
    assert loss == pytest.approx(hand_loss(trainer.model, rows, mode), rel=2e-6)


def test_modes_really_differ(tiny_model, tmp_path):
    """Guard for the test above: on this data the three normalisations give clearly different numbers."""
    rows = synthetic_rows(5, seed=1)
    trainer = build_trainer(save_build(tmp_path / "b", rows), tmp_path / "w", config(tiny_model)).trainer
    values = [hand_loss(trainer.model, rows, m) for m in ("token", "sequence", "step")]
    assert min(abs(a - b) for a, b in [(values[0], values[1]), (values[0], values[2]), (values[1], values[2])]) > 1e-4


def test_row_coefficients_step_mode_with_residual():
    labels = np.array([IGNORE, 5, 6, IGNORE, 7, 8, 9, 10])
    weights = np.array([0, 1, 1, 0, 2, 2, 2, 1.0])
    spans = [{"step": 1, "start": 1, "end": 3, "weight": 1}, {"step": 2, "start": 4, "end": 7, "weight": 2}]
    coef, units = row_coefficients(labels, weights, spans, "step")
    # step 1: two tokens weight 1 -> 1/2 each; step 2: three tokens weight 2 -> 2/3; position 7 is trained outside
    # every span: its own (residual) unit.
    assert units == 3
    np.testing.assert_allclose(coef, [0, .5, .5, 0, 2 / 3, 2 / 3, 2 / 3, 1.0])
    coef, units = row_coefficients(labels, weights, spans, "sequence")
    assert units == 1 and coef.sum() == pytest.approx(weights[labels != IGNORE].sum() / 6)


# -- masked steps carry no loss and no gradient, but stay in context ---------------------------------------------

def _loss_and_grads(trainer, rows):
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, trainer.data_collator(rows))
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in trainer.model.named_parameters()}


def _masked_last_row():
    ids = list(range(10, 22)) + list(range(30, 38)) + list(range(50, 56))   # prompt | step 1 | step 2 (masked)
    labels = [IGNORE] * 12 + list(range(30, 38)) + [IGNORE] * 6
    spans = [{"step": 1, "start": 12, "end": 20, "weight": 1.0}, {"step": 2, "start": 20, "end": 26, "weight": 0.0}]
    return {"input_ids": ids, "labels": labels, "step_spans": spans}


@pytest.mark.parametrize("mode", ["token", "step"])
def test_masked_step_targets_change_neither_loss_nor_any_gradient(tiny_model, tmp_path, mode):
    row = _masked_last_row()
    trainer = build_trainer(save_build(tmp_path / "b", [row]), tmp_path / "w",
                            config(tiny_model, loss_norm=mode)).trainer
    base_loss, base_grads = _loss_and_grads(trainer, [row])
    changed = {**row, "input_ids": row["input_ids"][:20] + [200, 201, 202, 203, 204, 205]}
    loss, grads = _loss_and_grads(trainer, [changed])
    assert loss == base_loss
    assert all(torch.equal(grads[n], base_grads[n]) for n in grads)
    # ... while changing one trained token does change the loss and the gradients
    trained = {**row, "input_ids": row["input_ids"][:15] + [99] + row["input_ids"][16:],
               "labels": row["labels"][:15] + [99] + row["labels"][16:]}
    loss, grads = _loss_and_grads(trainer, [trained])
    assert abs(loss - base_loss) > 1e-4
    assert not torch.allclose(grads["model.embed_tokens.weight"], base_grads["model.embed_tokens.weight"])


def test_masked_step_stays_in_context(tiny_model, tmp_path):
    """A masked step followed by a trained one: the masked tokens are no targets, but later steps see them."""
    row = _masked_last_row()
    row = {"input_ids": row["input_ids"] + list(range(60, 66)), "labels": row["labels"] + list(range(60, 66)),
           "step_spans": row["step_spans"] + [{"step": 3, "start": 26, "end": 32, "weight": 1.0}]}
    trainer = build_trainer(save_build(tmp_path / "b", [row]), tmp_path / "w", config(tiny_model)).trainer
    base, _ = _loss_and_grads(trainer, [row])
    changed, _ = _loss_and_grads(trainer, [{**row, "input_ids": row["input_ids"][:20] + [200] * 6
                                            + row["input_ids"][26:]}])
    assert abs(changed - base) > 1e-5


def test_selective_head_and_chunks_equal_full_logits(tiny_model, tmp_path):
    rows = synthetic_rows(4, seed=3, weights=True)
    build = save_build(tmp_path / "b", rows)
    results = []
    for kw in ({}, {"skip_untrained_logits": False}, {"loss_chunk_tokens": 7}):
        trainer = build_trainer(build, tmp_path / "w", config(tiny_model, loss_norm="step", **kw)).trainer
        results.append(_loss_and_grads(trainer, rows))
    # A model whose config scales its logits is scored through its own forward (full logits, then selected):
    # Llama ignores `logit_scale`, so that path must give the very same loss here.
    from transformers import AutoModelForCausalLM

    from srft.train.loss import HeadInputs, add_selective_head, select_positions

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    model.config.logit_scale = 1.5
    add_selective_head(model)
    batch = trainer.data_collator(rows)
    rows_, cols, targets, coef = select_positions(batch["labels"], batch["loss_coef"])
    own = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                srft_head=HeadInputs(rows_, cols, targets, coef)).loss / batch["n_units"]
    results.append((own.item(), None))
    (loss0, g0), *others = results
    for loss, grads in others:
        assert loss == pytest.approx(loss0, rel=1e-6)
        for name in g0 if grads is not None else []:
            torch.testing.assert_close(grads[name], g0[name], rtol=1e-5, atol=1e-7)


# -- gradient accumulation is exact in every mode ------------------------------------------------------------------

class GradCapture:
    """Copies every gradient just before the first optimizer step (clipping is off in these configs)."""

    def __init__(self):
        from transformers import TrainerCallback

        capture = self

        class _CB(TrainerCallback):
            def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
                if not capture.grads:
                    capture.grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

        self.grads, self.callback = {}, _CB()


@pytest.mark.parametrize("mode", ["token", "sequence", "step"])
def test_gradient_accumulation_is_exact(tiny_model, tmp_path, mode):
    build = save_build(tmp_path / "b", synthetic_rows(8, seed=2, weights=True))
    runs = []
    for batch, accum in ((4, 1), (2, 2), (1, 4)):  # same seed: the same 4 rows form the first optimizer step
        cap = GradCapture()
        trainer = build_trainer(build, tmp_path / f"w{batch}", config(tiny_model, loss_norm=mode, batch_size=batch,
                                                                      grad_accum=accum, max_steps=1),
                                callbacks=[cap.callback]).trainer
        trainer.train()
        runs.append((trainer.state.log_history[0]["loss"], cap.grads))
    (loss0, g0), *others = runs
    for loss, grads in others:
        assert loss == pytest.approx(loss0, rel=1e-5)
        for name in g0:
            torch.testing.assert_close(grads[name], g0[name], rtol=1e-4, atol=1e-7)
    if mode == "sequence":
        return  # one unit per row: a mean of equal-sized micro-batch means is already exact
    # Sensitivity: the naive mean of per-micro-batch means (what a per-batch mean loss gives under accumulation)
    # differs from the exact global loss on this data, so the equalities above are not vacuous.
    trainer = build_trainer(build, tmp_path / "naive", config(tiny_model, loss_norm=mode, batch_size=1)).trainer
    first = [trainer.train_dataset[i] for b in trainer.plan.batches(0)[:4] for i in b]
    naive = np.mean([trainer.compute_loss(trainer.model, trainer.data_collator([r])).item() for r in first])
    assert abs(naive - loss0) > 1e-3


# -- batch plans and budgets ---------------------------------------------------------------------------------------

def test_batch_tokens_plan_packs_within_budget_and_is_deterministic():
    lengths = [5, 50, 12, 7, 33, 8, 90, 41, 3, 17, 22, 64]
    plan = BatchPlan(lengths, batch_tokens=100, seed=7)
    batches = plan.batches(0)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(len(b) == 1 or max(lengths[i] for i in b) * len(b) <= 100 for b in batches)
    assert batches == BatchPlan(lengths, batch_tokens=100, seed=7).batches(0)
    assert sorted(map(sorted, plan.batches(1))) == sorted(map(sorted, batches))  # same composition, new order
    assert len(plan) == len(batches)


def test_budget_tokens_stops_at_the_first_step_reaching_it(tiny_model, tmp_path):
    build = save_build(tmp_path / "b", synthetic_rows(6, seed=4))
    report = run_train(build, tmp_path / "out", config(tiny_model, budget_tokens=250, batch_size=2))
    curve = report["loss_curve"]
    assert curve[-1]["trained_tokens"] >= 250 > curve[-2]["trained_tokens"]
    assert report["budget"]["steps"] == report["steps"] == len(curve)
    assert report["trained_tokens"] == report["budget"]["planned"]


def test_steps_for_budget_walks_epochs():
    plan = BatchPlan([10, 10, 10], batch_size=1, seed=0)
    # An epoch of 3 batches makes steps of 2 + 1 batches (a short last step, as the Trainer does); 13 tokens are
    # first reached by the first step of epoch 2.
    assert steps_for_budget(plan, [4, 4, 4], 13, batches_per_step=2) == (3, 20)
    assert steps_for_budget(plan, [4, 4, 4], 12, batches_per_step=2) == (2, 12)


# -- pinned CPU losses, crash and resume (STYLE.md item 12) ---------------------------------------------------------

PINNED = [4.293295, 4.638544, 4.573087, 6.447519]  # tiny llama seed 0, rows seed 5, step norm, weights, lr 1e-3


class CrashAfter:
    def __init__(self, step: int):
        from transformers import TrainerCallback

        class _CB(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                if state.global_step == step:
                    raise RuntimeError(f"simulated crash after step {step}")

        self.callback = _CB()


def test_pinned_losses_and_resume_after_crash(tiny_model, tmp_path):
    build = save_build(tmp_path / "b", synthetic_rows(16, seed=5, weights=True))
    cfg = config(tiny_model, batch_size=4, max_steps=4, save_steps=2, loss_norm="step", max_grad_norm=1.0)
    report = run_train(build, tmp_path / "out", cfg)
    losses = [e["loss"] for e in report["loss_curve"]]
    assert losses == pytest.approx(PINNED, abs=1e-4)
    # A run that dies after step 2 leaves only OUT.partial (with checkpoint-2); --resume continues it exactly.
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_train(build, tmp_path / "crash", cfg, callbacks=[CrashAfter(2).callback])
    assert not (tmp_path / "crash").exists() and (tmp_path / "crash.partial" / "checkpoints" / "checkpoint-2").is_dir()
    for n, files in ((3, ()), (4, ("trainer_state.json",))):  # killed while saving (no srft_plan.json yet): skipped
        (tmp_path / "crash.partial" / "checkpoints" / f"checkpoint-{n}").mkdir()
        for f in files:
            shutil.copy(tmp_path / "crash.partial" / "checkpoints" / "checkpoint-2" / f,
                        tmp_path / "crash.partial" / "checkpoints" / f"checkpoint-{n}" / f)
    resumed = run_train(build, tmp_path / "crash", cfg, resume=True)
    assert [e["loss"] for e in resumed["loss_curve"]] == pytest.approx(losses, abs=1e-6)
    assert resumed["resumed_from"].endswith("checkpoint-2") and resumed["steps"] == 4
    assert (resumed["tokens_seen"], resumed["trained_tokens"]) == (report["tokens_seen"], report["trained_tokens"])
    assert not (tmp_path / "crash.partial").exists()
    # A finished run trained further: --resume picks up OUT's last checkpoint and OUT is replaced at the end.
    longer = run_train(build, tmp_path / "out", cfg.model_copy(update={"max_steps": 6}), resume=True)
    assert longer["resumed_from"].endswith("checkpoint-4") and longer["steps"] == 6
    assert [e["loss"] for e in longer["loss_curve"]][:4] == pytest.approx(losses, abs=1e-6)
    assert json.loads((tmp_path / "out" / "train_report.json").read_text())["steps"] == 6


def test_outputs_report_png_and_reload(tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM

    rows = synthetic_rows(6, seed=6)
    report = run_train(save_build(tmp_path / "b", rows), tmp_path / "out", config(tiny_model, max_steps=3,
                                                                                  batch_size=2))
    out = tmp_path / "out"
    on_disk = json.loads((out / "train_report.json").read_text())
    assert on_disk["steps"] == report["steps"] == 3 and len(on_disk["loss_curve"]) == 3
    trained = sum(sum(1 for p, x in enumerate(r["labels"]) if p and x != IGNORE) for r in rows)
    assert on_disk["dataset"]["trained_tokens"] == trained and on_disk["trained_tokens"] == trained  # one epoch
    assert on_disk["tokens_seen"] == sum(len(r["input_ids"]) for r in rows)
    assert on_disk["tokens_per_s"] > 0 and on_disk["peak_rss_mb"] > 50
    assert json.loads((out / "train_config.json").read_text())["config"]["method"] == "full"
    assert (out / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "out.partial").exists()
    model = AutoModelForCausalLM.from_pretrained(out)
    before = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert model.config.use_cache and not torch.equal(model.model.norm.weight, before.model.norm.weight)


def test_bad_rows_are_dropped_and_counted(tiny_model, tmp_path):
    good = synthetic_rows(3, seed=7)
    r = synthetic_rows(6, seed=8)
    bad = [
        {**r[0], "labels": r[0]["labels"][:-1]},                                   # labels_length_mismatch
        {**r[1], "labels": r[1]["labels"][1:] + [IGNORE]},                         # shifted upstream
        {**r[2], "labels": [IGNORE] * len(r[2]["input_ids"])},                     # every step masked
        {**r[3], "step_spans": [{"step": 1, "start": 5, "end": 10_000, "weight": 1.0}]},
    ]
    report = run_train(save_build(tmp_path / "b", good + bad), tmp_path / "out",
                       config(tiny_model, loss_norm="step", max_steps=1))
    assert report["dataset"]["drops"] == {"bad_step_span": 1, "label_not_input_id": 1,
                                          "labels_length_mismatch": 1, "no_trained_tokens": 1}
    assert report["dataset"]["drop_examples"]["label_not_input_id"] == [4]
    assert report["dataset"]["rows_trained"] == 3


def test_truncation_and_batch_tokens(tiny_model, tmp_path):
    rows = synthetic_rows(8, seed=9)
    report = run_train(save_build(tmp_path / "b", rows), tmp_path / "out",
                       config(tiny_model, max_length=40, batch_tokens=120, epochs=1))
    long = sum(len(r["input_ids"]) > 40 for r in rows)
    assert long and report["dataset"]["truncated_rows"] == long
    assert report["tokens_seen"] == sum(min(len(r["input_ids"]), 40) for r in rows)
    assert report["resolved"]["micro_batches_per_epoch"] == report["steps"]


def test_validation_lists_every_problem(tmp_path):
    from srft.train.run import TrainError

    with pytest.raises(TrainError) as err:
        run_train(tmp_path / "nothing", tmp_path / "out", TrainConfig(model=str(tmp_path / "no-model")))
    assert "no config.json" in str(err.value) and "no saved dataset" in str(err.value)


def test_config_rejects_typos_and_conflicts():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="lora_rank"):
        TrainConfig(model="m", lora_rank=8)
    with pytest.raises(ValidationError, match="either max_steps or budget_tokens"):
        TrainConfig(model="m", max_steps=3, budget_tokens=100)


# -- the CLI -------------------------------------------------------------------------------------------------------

def test_cli_train_json(tiny_model, tmp_path):
    from typer.testing import CliRunner

    from srft.cli import app

    build = save_build(tmp_path / "b", synthetic_rows(4, seed=10))
    result = CliRunner().invoke(app, ["train", str(build), "--model", str(tiny_model), "--out", str(tmp_path / "o"),
                                      "--full", "--max-steps", "2", "--batch-size", "2", "--loss-norm", "sequence",
                                      "--set", "lr=0.001", "--json"])
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    data = json.loads(lines[0])
    assert data["steps"] == 2 and data["config"]["loss_norm"] == "sequence" and data["config"]["lr"] == 0.001
    assert math.isfinite(data["final_loss"]) and data["report"].endswith("train_report.json")
    bad = CliRunner().invoke(app, ["train", str(build), "--model", str(tiny_model), "--out", str(tmp_path / "x"),
                                   "--set", "lora_rnak=4", "--json"])
    assert bad.exit_code == 2 and "lora_rnak" in json.loads(bad.stdout)["error"]


def test_python_dash_m_entry_point():
    """`accelerate launch -m srft train ...` runs `python -m srft` (the `srft` command) on every process."""
    done = subprocess.run([sys.executable, "-m", "srft", "train", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "--loss-norm" in done.stdout


# -- launch configs (parsed here; run with 2 CPU processes in test_train_dist.py) ---------------------------------

@pytest.mark.parametrize("name", ["ddp", "fsdp", "zero3"])
def test_accelerate_configs_parse(name):
    from pathlib import Path

    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.commands.launch import launch_command_parser

    root = Path(__file__).resolve().parents[1]
    path = root / "configs" / "accelerate" / f"{name}.yaml"
    config = ClusterConfig.from_yaml_file(path)  # raises on unknown top-level keys
    assert config.num_processes == 8 and config.distributed_type.value == {
        "ddp": "MULTI_GPU", "fsdp": "FSDP", "zero3": "DEEPSPEED"}[name]
    known = {a.dest for a in launch_command_parser()._actions}  # nested keys become `accelerate launch` options
    for key in {**config.fsdp_config, **config.deepspeed_config}:
        assert key in known, f"{path}: {key} is not an accelerate launch option"
    if name == "fsdp":
        assert config.fsdp_config["fsdp_version"] == 2 and config.fsdp_config["fsdp_state_dict_type"] == \
            "FULL_STATE_DICT"
    if name == "zero3":
        ds = json.loads((root / config.deepspeed_config["deepspeed_config_file"]).read_text())
        assert ds["zero_optimization"]["stage"] == 3
        # every batch-shaped number comes from srft train's own flags, so the two cannot disagree
        assert {ds[k] for k in ("gradient_accumulation_steps", "train_micro_batch_size_per_gpu",
                                "gradient_clipping")} == {"auto"}


def test_lora_with_checkpointing_and_bf16(tiny_model, tmp_path):
    """LoRA adapters only; activation checkpointing changes nothing numerically; bf16 autocast stays close."""
    build = save_build(tmp_path / "b", synthetic_rows(4, seed=12))
    runs = {}
    for name, kw in {"plain": {}, "ckpt": {"gradient_checkpointing": True}, "bf16": {"bf16": True}}.items():
        runs[name] = run_train(build, tmp_path / name, config(tiny_model, method="lora", lora_dropout=0.0,
                                                               max_steps=2, batch_size=2, **kw))
    first = {k: r["loss_curve"][0]["loss"] for k, r in runs.items()}
    assert first["ckpt"] == pytest.approx(first["plain"], rel=1e-6)
    assert first["bf16"] == pytest.approx(first["plain"], rel=2e-2)
    plain = runs["plain"]["model"]
    assert 0 < plain["trainable_parameters"] < plain["parameters"]
    assert (tmp_path / "ckpt" / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "ckpt" / "model.safetensors").exists()
