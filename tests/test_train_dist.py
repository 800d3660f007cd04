"""Training that scales out exactly, with real processes: `accelerate launch` starts 2 CPU processes (gloo,
OMP_NUM_THREADS=1) with the shipped configs/accelerate/{ddp,fsdp,zero3}.yaml (`--num_processes 2
--mixed_precision no`), and every optimizer step trains the rows of the one-process plan's step: same per-step
losses, same first-step gradients and final weights (fp32, rtol 1e-5), same token and row counts, each row once
per epoch. One launch runs many cases in one process group (tests/dist_worker.py); the one-process references run
in this process. Measured on the project machine (2 cores, load average ~4.5, each including its one-process
references): DDP 29 s, FSDP2 22 s, ZeRO-3 26 s (plus ~2.5 min once per machine while deepspeed compiles its CPU
collective op into ~/.cache/torch_extensions), `srft run` train.launch 18 s (plus the shared tiny_run fixture)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from dist_worker import FirstGrads
from test_train import save_build, synthetic_rows

from srft.train import TrainConfig, run_train
from srft.train.launch import free_port
from srft.train.models import InitConfig, init_model, make_word_tokenizer

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "dist_worker.py"
# gloo processes on CPU against an in-process CPU reference (GPUs: benchmarks/bench_gpu.py)
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU references would run on the GPU")]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """An untied tiny Qwen2 (its LM head is a separate module, as in the big students) and 13 rows with soft
    weights: 13 is odd, so every plan below ends its epoch with an uneven step."""
    root = tmp_path_factory.mktemp("dist")
    make_word_tokenizer(root / "tok", 252)
    init_model(root / "tok", root / "model", InitConfig(arch="qwen2", preset="tiny", tie_word_embeddings=False))
    return {"root": root, "model": root / "model", "build": save_build(root / "build", synthetic_rows(13, seed=5,
                                                                                                      weights=True))}


def cfg(data, **kw) -> dict:
    return {"model": str(data["model"]), "method": "full", "lr": 1e-3, "max_grad_norm": 0.0, "seed": 3, **kw}


def launch(config: str, cases: list[dict], work: Path) -> None:
    spec = work / "spec.json"
    spec.write_text(json.dumps({"cases": cases}))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ROOT / config),
           "--num_processes", "2", "--mixed_precision", "no", "--main_process_port", str(free_port()), str(WORKER),
           str(spec)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": str(ROOT / "tests")}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
                          check=False)
    (work / "launch.log").write_text(done.stdout + done.stderr)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]


def weights(out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(next(p for p in (out / "model.safetensors", out / "adapter_model.safetensors") if p.exists()))


def assert_same_run(one: Path, two: Path, per_process: tuple[str, ...] = ("grad_accum",)) -> dict:
    """The 2-process run `two` equals the one-process run `one`: losses, counts, weights; returns its report.
    Weights agree to rtol 1e-5 plus 5% of one update (lr): Adam divides by the gradient's own running size, so
    float noise in a near-zero gradient (another summation order) can move that one element by up to lr."""
    a, b = (json.loads((d / "train_report.json").read_text()) for d in (one, two))
    assert b["world_size"] == 2 and len(b["processes"]) == 2 and a["world_size"] == 1
    assert [e["loss"] for e in b["loss_curve"]] == pytest.approx([e["loss"] for e in a["loss_curve"]], rel=1e-5)
    # Adam hides a wrongly scaled gradient in the weights; the logged gradient norm does not
    # (logged where clipping is on: max_grad_norm > 0)
    assert [e.get("grad_norm") for e in b["loss_curve"]] == pytest.approx(
        [e.get("grad_norm") for e in a["loss_curve"]], rel=1e-4)
    for key in ("steps", "rows_seen", "tokens_seen", "trained_tokens"):
        assert b[key] == a[key], key
    # per_process: what may differ (by default each of 2 processes accumulates half the step); rows never do
    assert b["global_batch"]["rows"] == a["global_batch"]["rows"]
    assert {k: v for k, v in b["global_batch"].items() if k not in per_process} == \
        {k: v for k, v in a["global_batch"].items() if k not in per_process}
    wa, wb = weights(one), weights(two)
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], rtol=1e-5, atol=0.05 * a["resolved"]["lr"], msg=name)
    return b


def assert_same_grads(one: Path, two: Path) -> None:
    ga, gb = torch.load(one, weights_only=True), torch.load(two, weights_only=True)
    assert ga.keys() == gb.keys() and ga
    for name in ga:
        torch.testing.assert_close(gb[name], ga[name], rtol=1e-5, atol=1e-8, msg=name)


def reference(data, name: str, config: dict, *, grads: bool = False, **kw) -> Path:
    """The one-process run (here, in-process) of a case."""
    out = data["root"] / "one" / name
    callbacks = [FirstGrads(out.parent / f"{name}.grads.pt")] if grads else []
    run_train(data["build"], out, TrainConfig(**config), callbacks=callbacks, **kw)
    return out


def test_ddp_two_processes_equal_one(data, tmp_path):
    """Every loss normalisation, LoRA and full, batch_tokens groups, packing, soft weights, an uneven last step,
    explicit grad_accum x processes, and crash + --resume under 2 processes (and a 2-process checkpoint resumed by
    one process): all equal to the uninterrupted one-process runs."""
    cases = {
        "token": (cfg(data, batch_size=2, global_batch=4, max_grad_norm=1.0), {}),
        "sequence": (cfg(data, loss_norm="sequence", grad_accum=2), {"grad_accum": 4}),
        "step_tokens": (cfg(data, loss_norm="step", batch_tokens=120, global_batch=2), {}),
        "lora": (cfg(data, method="lora", lora_r=4, lora_dropout=0.0, lr=1e-2, batch_size=2, global_batch=4), {}),
        "packed": (cfg(data, loss_norm="step", batch_tokens=160, packing=True, global_batch=2), {}),
    }
    two = tmp_path / "two"
    specs = [{"build": str(data["build"]), "out": str(two / n), "config": c, "grads": str(two / f"{n}.grads.pt")}
             for n, (c, _) in cases.items()]
    resumable = cfg(data, batch_size=2, global_batch=4, max_steps=4, save_steps=2)
    specs += [{"build": str(data["build"]), "out": str(two / "resumed"), "config": resumable, "crash_after": 2},
              {"build": str(data["build"]), "out": str(two / "resumed"), "config": resumable, "resume": True},
              {"build": str(data["build"]), "out": str(two / "crashed"), "config": resumable, "crash_after": 2}]
    launch("configs/accelerate/ddp.yaml", specs, tmp_path)
    for name, (config, one_process) in cases.items():
        one = reference(data, name, {**config, **one_process}, grads=True)
        report = assert_same_run(one, two / name)
        assert_same_grads(one.parent / f"{name}.grads.pt", two / f"{name}.grads.pt")
        assert report["rows_seen"] == 13 and report["resolved"]["launch"]["distributed_type"] == "MULTI_CPU"
    uninterrupted = reference(data, "uninterrupted", resumable)
    resumed = assert_same_run(uninterrupted, two / "resumed")
    assert resumed["resumed_from"].endswith("checkpoint-2")
    # A checkpoint of 2 DDP processes continues exactly in one process: the global plan is the same.
    across = run_train(data["build"], two / "crashed", TrainConfig(**resumable), resume=True)
    assert across["world_size"] == 1 and across["resumed_from"].endswith("checkpoint-2")
    assert [e["loss"] for e in across["loss_curve"]] == pytest.approx(
        [e["loss"] for e in json.loads((uninterrupted / "train_report.json").read_text())["loss_curve"]], rel=1e-5)


def test_fsdp2_two_processes_equal_one(data, tmp_path):
    """FSDP2 (accelerate's fsdp_version 2 over gloo) shards the model; same results as one process. Its
    checkpoints hold per-process optimizer shards, so one process refuses to resume them, before loading."""
    from srft.train.run import TrainError

    cases = {"token": cfg(data, batch_size=2, global_batch=4, max_grad_norm=1.0),
             "lora_packed": cfg(data, method="lora", lora_r=4, lora_dropout=0.0, lr=1e-2, loss_norm="sequence",
                                batch_tokens=160, packing=True, global_batch=2)}
    two = tmp_path / "two"
    specs = [{"build": str(data["build"]), "out": str(two / n), "config": c, "grads": str(two / f"{n}.grads.pt")}
             for n, c in cases.items()]
    crashing = cfg(data, batch_size=2, global_batch=4, max_steps=3, save_steps=2)
    specs.append({"build": str(data["build"]), "out": str(two / "crashed"), "config": crashing, "crash_after": 2})
    launch("configs/accelerate/fsdp.yaml", specs, tmp_path)
    for name, config in cases.items():
        one = reference(data, name, config, grads=True)
        report = assert_same_run(one, two / name)
        assert_same_grads(one.parent / f"{name}.grads.pt", two / f"{name}.grads.pt")
        assert report["resolved"]["launch"]["distributed_type"] == "FSDP"
        assert report["resolved"]["launch"]["fsdp_version"] == 2
    with pytest.raises(TrainError, match="2 process.*fsdp.*1 under single"):
        run_train(data["build"], two / "crashed", TrainConfig(**crashing), resume=True)


def test_zero3_two_processes_equal_one(data, tmp_path):
    """DeepSpeed ZeRO-3 (deepspeed's CPU accelerator, gloo) partitions parameters, gradients and optimizer state;
    same losses and weights as one process."""
    pytest.importorskip("deepspeed", reason="deepspeed is installed by `make test` (requirements-test.txt)")
    cases = {"token": cfg(data, batch_size=2, global_batch=4, max_grad_norm=1.0),
             "lora_sequence": cfg(data, method="lora", lora_r=4, lora_dropout=0.0, lr=1e-2, loss_norm="sequence",
                                  batch_size=1, global_batch=4, max_grad_norm=1e6)}  # logs the norm, never clips
    two = tmp_path / "two"
    launch("configs/accelerate/zero3.yaml",
           [{"build": str(data["build"]), "out": str(two / n), "config": c} for n, c in cases.items()], tmp_path)
    for name, config in cases.items():
        report = assert_same_run(reference(data, name, config), two / name)
        assert all(e["grad_norm"] > 0 for e in report["loss_curve"])  # so the gradient's scale was compared
        assert report["resolved"]["launch"]["distributed_type"] == "DEEPSPEED"
        assert report["resolved"]["launch"]["zero_stage"] == 3
        assert report["model"]["parameters"] == json.loads(
            (data["root"] / "one" / name / "train_report.json").read_text())["model"]["parameters"]


def test_srft_run_train_launch_two_processes(tiny_run, tmp_path):
    """`srft run` with `train.launch` (2 processes, the shipped ddp.yaml) trains the node the one-process run
    trained: the same per-step losses and weights, with batch_size 4 per process instead of 8 in one."""
    import shutil

    from srft.run.graph import load_recipe, pipeline_nodes
    from srft.run.runner import Runner

    run = tmp_path / "run"
    shutil.copytree(tiny_run["dir"], run)
    recipe, _ = load_recipe(ROOT / "tests" / "fixtures" / "pipeline" / "tiny.yaml", [
        "train.batch_size=4", f"train.launch.accelerate_config={ROOT / 'configs/accelerate/ddp.yaml'}",
        "train.launch.num_processes=2", "train.launch.extra_args=[--mixed_precision, 'no']"])
    runner = Runner(run, pipeline_nodes(recipe))
    runner.run_node(runner.by_key["train/rft/seed0"])
    two = run / "train" / "rft" / "seed0" / "model"
    assert_same_run(tiny_run["dir"] / "train" / "rft" / "seed0" / "model", two, ("batch_size", "micro_batches"))
    log = (run / "train" / "rft" / "seed0" / "train.log").read_text()
    assert "with 2 processes (global batch 8 rows)" in log
