"""One process's share of the batch plan, sequence packing, and the launch/resume checks that run before any model
loads. (The 2-process runs themselves are in test_train_dist.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from test_train import config, save_build, synthetic_rows, tiny_model  # noqa: F401 (fixture)

from srft.train import TrainConfig, build_trainer, run_train
from srft.train.launch import launch_problems
from srft.train.plan import FILLER, BatchPlan, ProcessPlan
from srft.train.run import TrainError


@pytest.mark.parametrize("world, accum", [(1, 3), (2, 1), (2, 2), (3, 2)])
@pytest.mark.parametrize("tokens", [None, 60])
def test_processes_split_each_step_of_the_global_plan(world, accum, tokens):
    """Step k of N processes holds exactly the micro-batches of the global plan's step k, each row once per epoch;
    the empty slots of the last step are fillers, and every process runs the same number of micro-batches."""
    lengths = [5, 50, 12, 7, 33, 8, 41, 3, 17, 22, 9, 30, 4]
    plan = BatchPlan(lengths, batch_size=2, batch_tokens=tokens, seed=4)
    per_step = accum * world
    shares = [ProcessPlan(plan, per_step, world, rank) for rank in range(world)]
    for epoch in (0, 1):
        ours = [s.batches(epoch) for s in shares]
        assert len({len(b) for b in ours}) == 1 and len(ours[0]) == len(shares[0])
        glob = plan.batches(epoch)
        for k in range(shares[0].steps_per_epoch):
            step = [b for mine in ours for b in mine[k * accum:(k + 1) * accum] if b != [FILLER]]
            assert sorted(map(sorted, step)) == sorted(map(sorted, glob[k * per_step:(k + 1) * per_step]))
        rows = [i for mine in ours for b in mine for i in b if i != FILLER]
        assert sorted(rows) == list(range(len(lengths)))
    with pytest.raises(ValueError, match="cannot be split over 2 processes"):
        ProcessPlan(plan, 3, 2, 0)


def test_packed_plan_fills_sequences_up_to_the_budget():
    lengths = [5, 50, 12, 7, 33, 8, 41, 3, 17, 22]
    packed = BatchPlan(lengths, batch_tokens=60, seed=1, packed=True).batches(0)
    padded = BatchPlan(lengths, batch_tokens=60, seed=1).batches(0)
    assert all(sum(lengths[i] for i in b) <= 60 or len(b) == 1 for b in packed)
    assert len(packed) < len(padded)  # the same budget holds more rows without padding


def test_packing_equals_padding(tiny_model, tmp_path):  # noqa: F811
    """Packed micro-batches (one sequence, positions restarted, attention kept inside each row) give the padded
    run's loss, gradients and token counts, micro-batch by micro-batch and over a whole run."""
    build = save_build(tmp_path / "b", synthetic_rows(9, seed=11, weights=True))
    cfg = config(tiny_model, loss_norm="step", batch_tokens=160, packing=True, max_steps=3, max_grad_norm=0.0)
    trainer = build_trainer(build, tmp_path / "w", cfg).trainer
    packed_collate = trainer.data_collator
    padded_collate = type(packed_collate)(packed_collate.pad_id, "step", None, packing=False)
    rows = [trainer.train_dataset[i] for i in max(trainer.plan.batches(0), key=len)]
    assert len(rows) > 1
    packed, padded = packed_collate(rows), padded_collate(rows)
    assert packed["input_ids"].shape[0] == 1 and "attention_mask" not in packed
    assert packed["n_positions"] < padded["n_positions"]
    for key in ("n_units", "n_trained", "n_input", "n_rows"):
        assert packed[key] == padded[key], key
    results = []
    for batch in (packed, padded):
        trainer.model.zero_grad()
        loss = trainer.compute_loss(trainer.model, batch)
        loss.backward()
        results.append((loss.item(), {n: p.grad.clone() for n, p in trainer.model.named_parameters()}))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
    for name, grad in results[0][1].items():
        torch.testing.assert_close(grad, results[1][1][name], rtol=1e-4, atol=1e-7)
    # Sensitivity: without restarted positions and a per-row mask, row 2 would attend to row 1.
    leaky = {**packed, "attention_mask": torch.ones_like(packed["input_ids"])}
    leaky.pop("position_ids")
    assert abs(trainer.compute_loss(trainer.model, leaky).item() - results[0][0]) > 1e-4
    # Whole runs: the same plan packed and padded.
    reports = {}
    for name, collate in (("packed", packed_collate), ("padded", padded_collate)):
        t = build_trainer(build, tmp_path / name, cfg).trainer
        t.data_collator = collate
        t.train()
        reports[name] = t.state.log_history
    losses = {k: [e["loss"] for e in v if "loss" in e] for k, v in reports.items()}
    assert losses["packed"] == pytest.approx(losses["padded"], rel=1e-5) and len(losses["packed"]) == 3
    assert [e["trained_tokens"] for e in reports["packed"] if "loss" in e] == \
        [e["trained_tokens"] for e in reports["padded"] if "loss" in e]


def test_report_counts_rows_tokens_padding_and_the_launch(tiny_model, tmp_path):  # noqa: F811
    rows = synthetic_rows(7, seed=12)
    report = run_train(save_build(tmp_path / "b", rows), tmp_path / "out",
                       config(tiny_model, batch_size=2, global_batch=4))
    assert report["world_size"] == 1 and report["steps"] == 2  # 4 micro-batches of 2, 2 per step
    assert report["global_batch"] == {"micro_batches": 2, "grad_accum": 2, "batch_size": 2, "batch_tokens": None,
                                      "packing": False, "rows": 4}
    assert report["rows_seen"] == 7 and report["tokens_seen"] == sum(len(r["input_ids"]) for r in rows)
    assert 0 < report["padding_share"] < 1 and len(report["processes"]) == 1
    launch = json.loads((tmp_path / "out" / "train_config.json").read_text())["resolved"]["launch"]
    assert launch["num_processes"] == 1 and launch["distributed_type"] == "NO" and launch["mixed_precision"] == "no"


# -- checks before any model loads ---------------------------------------------------------------------------------

def test_a_launch_that_cannot_split_the_global_batch_fails_in_one_line(tiny_model, tmp_path):  # noqa: F811
    """torchrun/accelerate announce the process count in WORLD_SIZE; 3 processes cannot share 2 micro-batches."""
    build = save_build(tmp_path / "b", synthetic_rows(4, seed=13))
    env = {**os.environ, "WORLD_SIZE": "3", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "srft", "train", str(build), "--model", str(tiny_model), "--out",
                           str(tmp_path / "o"), "--full", "--batch-size", "2", "--global-batch", "4"],
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "global_batch 4 cannot be split over 3 processes" in lines[0], done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "o.partial" / "checkpoints").exists()


@pytest.mark.parametrize("env, fields, message", [
    ({"WORLD_SIZE": "2", "ACCELERATE_MIXED_PRECISION": "bf16"}, {}, "pass --bf16 too"),
    ({"WORLD_SIZE": "2", "ACCELERATE_MIXED_PRECISION": "fp16"}, {"bf16": True}, "srft trains in fp32 or bf16"),
    ({"WORLD_SIZE": "2", "ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "FSDP_ACTIVATION_CHECKPOINTING": "true"},
     {"gradient_checkpointing": True}, "keep one"),
    ({"WORLD_SIZE": "2", "ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "1", "FSDP_USE_ORIG_PARAMS": "false"},
     {"method": "lora"}, "fsdp_use_orig_params: true"),
    ({"WORLD_SIZE": "2", "ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "1", "FSDP_USE_ORIG_PARAMS": "true"},
     {"method": "full"}, "FSDP1 cannot run on CPU"),
    ({"WORLD_SIZE": "4"}, {"global_batch": 6}, "6 micro-batches of 1 row per step are not a multiple of 4"),
])
def test_options_a_distributed_mode_cannot_honour(env, fields, message, monkeypatch):
    """What accelerate launch passes each process (its config as environment variables) against the TrainConfig."""
    import srft.train.launch

    monkeypatch.setattr(srft.train.launch, "_cuda", lambda: False)  # the CPU answers, also on a GPU host
    problems = launch_problems(TrainConfig(model="m", **fields), env)
    assert any(message in p for p in problems), problems
    assert launch_problems(TrainConfig(model="m"), {}) == []


def test_resume_with_another_batch_plan_is_refused_before_loading(tiny_model, tmp_path, monkeypatch):  # noqa: F811
    import srft.train.run

    build = save_build(tmp_path / "b", synthetic_rows(8, seed=14))
    cfg = config(tiny_model, batch_size=2, max_steps=2, save_steps=1)
    run_train(build, tmp_path / "out", cfg)
    load = srft.train.run.load_model
    monkeypatch.setattr(srft.train.run, "load_model", lambda c: pytest.fail("the model loaded before the refusal"))
    with pytest.raises(TrainError, match=r"micro_batches_per_step 1 \(this run: 2\).*global_batch keeps it fixed"):
        run_train(build, tmp_path / "out", cfg.model_copy(update={"grad_accum": 2, "max_steps": 3}), resume=True)
    with pytest.raises(TrainError, match=r"batch_size 2 \(this run: 4\)"):
        run_train(build, tmp_path / "out", cfg.model_copy(update={"batch_size": 4, "max_steps": 3}), resume=True)
    monkeypatch.setattr(srft.train.run, "load_model", load)
    # The same plan continues.
    longer = run_train(build, tmp_path / "out", cfg.model_copy(update={"max_steps": 3}), resume=True)
    assert longer["steps"] == 3


def test_a_launch_config_that_would_start_one_process_is_refused(tmp_path):
    """accelerate 1.15 starts ONE process for a MULTI_CPU or use_cpu config (no mpirun), whatever num_processes
    says; `srft run`'s train.launch refuses it instead of training silently with half the global batch."""
    from pathlib import Path

    from srft.train.launch import launch_config_problems

    cpu = tmp_path / "cpu.yaml"
    cpu.write_text("distributed_type: MULTI_CPU\nnum_processes: 2\nuse_cpu: true\nmixed_precision: 'no'\n")
    problems = launch_config_problems(cpu, 2)
    assert len(problems) == 1 and "starts one process for distributed_type MULTI_CPU" in problems[0]
    assert launch_config_problems(cpu, 1) == []
    root = Path(__file__).resolve().parents[1] / "configs" / "accelerate"
    assert all(launch_config_problems(root / f"{name}.yaml", 2) == [] for name in ("ddp", "fsdp", "zero3"))


def test_a_crash_in_the_second_epoch_resumes_with_that_epochs_order(tiny_model, tmp_path):  # noqa: F811
    """Each epoch has its own shuffled order (the plan is seeded per epoch): a run killed in epoch 1 continues
    with epoch 1's order, not epoch 0's, and ends with the uninterrupted run's losses."""
    from test_train import CrashAfter

    build = save_build(tmp_path / "b", synthetic_rows(12, seed=21))
    cfg = config(tiny_model, batch_size=2, grad_accum=2, epochs=2, save_steps=1, seed=4)  # 3 steps an epoch
    whole = [e["loss"] for e in run_train(build, tmp_path / "whole", cfg)["loss_curve"]]
    assert len(whole) == 6
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_train(build, tmp_path / "crash", cfg, callbacks=[CrashAfter(4).callback])
    resumed = run_train(build, tmp_path / "crash", cfg, resume=True)
    assert resumed["resumed_from"].endswith("checkpoint-4")
    assert [e["loss"] for e in resumed["loss_curve"]] == pytest.approx(whole, abs=1e-6)
