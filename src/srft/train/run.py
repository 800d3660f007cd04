"""`run_train`: validate -> load data -> load model -> train -> save -> report, read top to bottom.

Output layout (OUT appears only when training finished: the run works in `OUT.partial/` and renames it):
  OUT/adapter_model.safetensors + adapter_config.json   (LoRA; `PeftModel.from_pretrained(base, OUT)`)
  OUT/model.safetensors + config.json                   (full; `AutoModelForCausalLM.from_pretrained(OUT)`)
  OUT/tokenizer files, train_config.json, train_report.json, loss_curve.png
  OUT/checkpoints/checkpoint-N/                         (only with save_steps; what `resume` continues from)
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import srft
from srft.io import atomic_write_json
from srft.train.config import TrainConfig
from srft.train.data import Collator, DatasetError, RowCheck, check_rows, dataset_path, load_dataset
from srft.train.launch import enable_cpu_fsdp, launch_problems, requested
from srft.train.plan import PLAN_FILE, BatchPlan, steps_for_budget
from srft.train.report import build_report, plot_loss


class TrainError(ValueError):
    """Training cannot start (every problem is listed) or cannot resume."""


@dataclass
class Prepared:
    """A ready-to-train Trainer plus what was learned on the way (for the report and for tests)."""

    trainer: Any
    check: RowCheck
    dataset_dir: Path
    rows_total: int
    budget: dict[str, Any] | None
    record: dict[str, Any]  # the batch plan and launch, as written into every checkpoint (srft_plan.json)


def validate(build_dir: str | Path, config: TrainConfig) -> list[str]:
    """Every reason training cannot start, at once, each saying what to set."""
    problems = []
    model = Path(config.model)
    if not (model / "config.json").is_file():
        problems.append(f"{model}: not a model directory (no config.json); point --model at a local Hugging Face "
                        "model dir, e.g. the output of `srft models prepare smollm2` or `srft models init`")
    elif not any((model / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        problems.append(f"{model}: no tokenizer files next to the weights; save the tokenizer into the model dir")
    try:
        data = dataset_path(build_dir)
    except DatasetError as exc:
        problems.append(str(exc))
    else:
        if not problems:  # the model's vocabulary and tokenizer against the build's (ids past the embedding)
            from srft.dataset.vocab import model_problems

            problems += model_problems(data, model)
    return problems


def _training_args(work: Path, config: TrainConfig, grad_accum: int):
    import torch
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(work / "checkpoints"), per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=grad_accum, learning_rate=config.resolved_lr(),
        lr_scheduler_type=config.lr_scheduler, warmup_steps=config.warmup_ratio, weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm, num_train_epochs=config.epochs, max_steps=config.max_steps or -1,
        logging_steps=1, save_strategy="steps" if config.save_steps else "no", save_steps=config.save_steps or 500,
        save_total_limit=config.save_total_limit, report_to="none", seed=config.seed, data_seed=config.seed,
        bf16=config.bf16, activation_checkpointing=config.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if config.gradient_checkpointing else None,
        dataloader_num_workers=0, use_cpu=not torch.cuda.is_available(), disable_tqdm=True,
        remove_unused_columns=False)


def load_model(config: TrainConfig):
    """The base model with the selective LM head, wrapped in LoRA adapters unless method == 'full'."""
    import torch
    from transformers import AutoModelForCausalLM

    from srft.train.loss import add_selective_head

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "auto": "auto"}[config.model_dtype]
    model = AutoModelForCausalLM.from_pretrained(str(Path(config.model).resolve()), dtype=dtype,
                                                 attn_implementation=config.attn_implementation)
    model.config.use_cache = False
    add_selective_head(model)  # before PEFT wraps it: PEFT calls the inner model's (patched) forward
    if config.method == "full":
        return model
    from peft import LoraConfig, get_peft_model

    alpha = int(config.lora_alpha) if float(config.lora_alpha).is_integer() else config.lora_alpha
    lora = LoraConfig(r=config.lora_r, lora_alpha=alpha, lora_dropout=config.lora_dropout,
                      target_modules=config.lora_targets, task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def build_trainer(build_dir: str | Path, work: str | Path, config: TrainConfig, *, callbacks=(),
                  console=None, resume_from: Path | None = None) -> Prepared:
    """Validate (inputs, launch, resume point), load the data and the model, return a Trainer ready for
    `.train()`. Every check runs before the model loads."""
    from transformers import AutoTokenizer, set_seed
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from srft.train.trainer import ConsoleProgress, PlanRecord, SessionClock, SRFTTrainer

    problems = validate(build_dir, config) + launch_problems(config)
    if problems:
        raise TrainError("cannot train:\n  - " + "\n  - ".join(problems) if len(problems) > 1 else problems[0])
    ds, ds_dir = load_dataset(build_dir, config.loss_norm)
    check = check_rows(ds, config.max_length)
    if not check.kept:
        raise TrainError(f"{ds_dir}: no trainable rows; drops by reason {dict(check.drops)}, "
                         f"example rows {check.examples}")
    launch = requested()
    grad_accum, per_step = config.step_shape(launch["world_size"])
    record = plan_record(config, check, ds_dir, launch, per_step)
    if resume_from is not None:
        check_resume(resume_from, record)
    args = _training_args(Path(work), config, grad_accum)  # before loading the model: ZeRO-3 must see it first
    if args.world_size != launch["world_size"]:
        raise TrainError(f"the launch announced {launch['world_size']} processes but {args.world_size} joined")
    enable_cpu_fsdp()
    set_seed(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(config.model)
    model = load_model(config)
    pad = next(t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if t is not None)
    plan = BatchPlan(check.lengths, batch_size=config.batch_size, batch_tokens=config.batch_tokens, seed=config.seed,
                     packed=config.packing)
    budget = None
    if config.budget_tokens is not None:
        per_row = check.trained if config.budget_unit == "trained" else check.lengths
        steps, reached = steps_for_budget(plan, per_row, config.budget_tokens, per_step)
        args.max_steps = steps
        budget = {"unit": config.budget_unit, "tokens": config.budget_tokens, "steps": steps, "planned": reached}
    trainer = SRFTTrainer(model=model, args=args, train_dataset=ds.select(check.kept),
                          data_collator=Collator(pad, config.loss_norm, config.max_length, config.packing),
                          processing_class=tokenizer, plan=plan, per_step=per_step,
                          full_logits=not config.skip_untrained_logits, loss_chunk_tokens=config.loss_chunk_tokens,
                          callbacks=list(callbacks))
    for callback in (SessionClock(trainer), PlanRecord(record)):
        trainer.add_callback(callback)
    for noisy in (ProgressCallback, PrinterCallback):  # they print to stdout, which --json reserves
        trainer.remove_callback(noisy)
    if console is not None:
        trainer.add_callback(ConsoleProgress(console))
    return Prepared(trainer, check, ds_dir, len(ds), budget, record)


def plan_record(config: TrainConfig, check: RowCheck, ds_dir: Path, launch: dict[str, Any],
                per_step: int) -> dict[str, Any]:
    """What decides which rows each optimizer step trains (`plan`), and how the processes share it (`launch`)."""
    from srft.train.report import dataset_fingerprint

    plan = {"rows": len(check.kept), "dataset": dataset_fingerprint(ds_dir), "seed": config.seed,
            "batch_size": None if config.batch_tokens else config.batch_size, "batch_tokens": config.batch_tokens,
            "packing": config.packing, "max_length": config.max_length, "micro_batches_per_step": per_step}
    return {"plan": plan, "launch": {"world_size": launch["world_size"], "mode": launch["mode"]}}


def check_resume(checkpoint: Path, record: dict[str, Any]) -> None:
    """Continue only a checkpoint that this run continues exactly: the same global batch plan (the processes may
    differ under DDP, whose every process holds the whole optimizer state; FSDP and ZeRO-3 shard it per process,
    so they resume with the same launcher and process count). One line, before any model loads."""
    path = checkpoint / PLAN_FILE
    if not path.is_file():
        raise TrainError(f"resume: {checkpoint} has no {PLAN_FILE} (written by srft train with every checkpoint), "
                         "so whether it continues exactly cannot be checked; start a new --out")
    old = json.loads(path.read_text(encoding="utf-8"))
    diffs = [f"{k} {old['plan'].get(k)} (this run: {v})" for k, v in record["plan"].items() if old["plan"].get(k) != v]
    if diffs:
        hint = " (grad_accum x processes; global_batch keeps it fixed across process counts)" \
            if any(d.startswith("micro_batches_per_step") for d in diffs) else ""
        raise TrainError(f"resume: {checkpoint.name} was written with {'; '.join(diffs)}{hint}; another batch plan "
                         "would not continue the run exactly: use the same settings or start a new --out")
    was, now = old["launch"], record["launch"]
    sharded = {"fsdp", "deepspeed"} & {was["mode"], now["mode"]}
    if sharded and (was["mode"], was["world_size"]) != (now["mode"], now["world_size"]):
        raise TrainError(f"resume: {checkpoint.name} was written by {was['world_size']} process(es) under "
                         f"{was['mode']}, this run is {now['world_size']} under {now['mode']}; "
                         f"{'/'.join(sorted(sharded))} checkpoints hold per-process optimizer shards: relaunch it "
                         "the same way")


def last_checkpoint(folder: Path) -> Path | None:
    """The newest complete `checkpoint-N` under `folder`, or None. Complete: it has the Trainer's
    trainer_state.json and then srft's plan record, written last (a kill while saving leaves one without)."""
    import re

    done = [(int(m.group(1)), c) for c in (folder.iterdir() if folder.is_dir() else ())
            if (m := re.fullmatch(r"checkpoint-(\d+)", c.name)) and (c / "trainer_state.json").is_file()
            and (c / PLAN_FILE).is_file()]
    return max(done)[1] if done else None


def _resume_point(resume: bool | str | Path, work: Path, out: Path) -> tuple[Path | None, bool]:
    """(checkpoint to continue, whether it lives in a finished OUT that must become the partial run again)."""
    if not resume:
        return None, False
    if not isinstance(resume, bool):
        path = Path(resume)
        if not (path / "trainer_state.json").is_file():
            raise TrainError(f"{path}: not a Trainer checkpoint (no trainer_state.json)")
        return path, False
    for base, adopt in ((work, False), (out, True)):
        last = last_checkpoint(base / "checkpoints")
        if last is not None:
            return last, adopt
    raise TrainError(f"resume: no checkpoint under {work}/checkpoints or {out}/checkpoints "
                     "(checkpoints are written only with --save-steps)")


def is_main_process() -> bool:
    """Rank 0 of a launch (or the only process)."""
    return int(os.environ.get("RANK", "0")) == 0


def _promote(work: Path, out: Path) -> None:
    """Move the finished run into place in one rename (replacing an earlier OUT)."""
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(work, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(work, out)


def run_train(build_dir: str | Path, out_dir: str | Path, config: TrainConfig, *, resume: bool | str = False,
              console=None, callbacks=()) -> dict[str, Any]:
    """Train on `BUILD_DIR/dataset/`; write weights, tokenizer, config, report and loss curve to `out_dir`.
    Under `accelerate launch` every process runs this; each returns the same report, rank 0 writes the files."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    out = Path(out_dir).resolve()
    work = out.with_name(out.name + ".partial")
    checkpoint, adopt = _resume_point(resume, work, out)
    if (checkpoint is None or adopt) and work.exists() and is_main_process():
        shutil.rmtree(work)  # a crashed earlier run that was not asked to resume
    prepared = build_trainer(build_dir, work, config, callbacks=callbacks, console=console, resume_from=checkpoint)
    trainer = prepared.trainer
    if adopt:  # continue a finished run: OUT becomes the partial run again (only now that everything validated)
        if trainer.is_world_process_zero():
            shutil.rmtree(work, ignore_errors=True)  # just the empty checkpoints dir the Trainer made
            os.replace(out, work)
        trainer.accelerator.wait_for_everyone()
        checkpoint = work / "checkpoints" / checkpoint.name
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    report = build_report(prepared, config, out, checkpoint)  # every process: it gathers per-process peaks
    _save_outputs(trainer, work, config, report)
    trainer.accelerator.wait_for_everyone()
    if trainer.is_world_process_zero():
        _promote(work, out)
    return report


def _save_outputs(trainer, work: Path, config: TrainConfig, report: dict[str, Any]) -> None:
    """Weights on every process (FSDP and ZeRO-3 gather the sharded model collectively; rank 0 writes), then
    rank 0 writes the rest."""
    unwrapped = trainer.accelerator.unwrap_model(trainer.model)
    getattr(unwrapped, "config", unwrapped).use_cache = True  # training turned it off; inference wants it
    trainer.save_model(str(work))
    if not trainer.is_world_process_zero():
        return
    if (work / "checkpoints").is_dir() and not any((work / "checkpoints").iterdir()):
        (work / "checkpoints").rmdir()  # the Trainer creates it even when it saves no checkpoint
    atomic_write_json(work / "train_config.json", {"srft_version": srft.__version__,
                                                   "config": config.model_dump(mode="json"),
                                                   "resolved": report["resolved"]})
    atomic_write_json(work / "train_report.json", report)
    if report["loss_curve"]:
        title = (f"{Path(config.model).name} {config.method} loss_norm={config.loss_norm} "
                 f"lr={config.resolved_lr():g} seed={config.seed}")
        plot_loss(report["loss_curve"], work / "loss_curve.png", title)
