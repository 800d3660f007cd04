"""`run_train`: validate -> load data -> load model -> train -> save -> report, read top to bottom.

Output layout (OUT appears only when training finished: the run works in `OUT.partial/` and renames it):
  OUT/adapter_model.safetensors + adapter_config.json   (LoRA; `PeftModel.from_pretrained(base, OUT)`)
  OUT/model.safetensors + config.json                   (full; `AutoModelForCausalLM.from_pretrained(OUT)`)
  OUT/tokenizer files, train_config.json, train_report.json, loss_curve.png
  OUT/checkpoints/checkpoint-N/                         (only with save_steps; what `resume` continues from)
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import srft
from srft.io import atomic_write_json
from srft.train.config import TrainConfig
from srft.train.data import BatchPlan, Collator, DatasetError, RowCheck, check_rows, dataset_path, load_dataset, \
    steps_for_budget
from srft.train.report import dataset_fingerprint, loss_curve, peak_gpu_mb, peak_rss_mb, plot_loss


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
        dataset_path(build_dir)
    except DatasetError as exc:
        problems.append(str(exc))
    return problems


def _training_args(work: Path, config: TrainConfig):
    import torch
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(work / "checkpoints"), per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum, learning_rate=config.resolved_lr(),
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
                  console=None) -> Prepared:
    """Validate, load the data and the model, and return a Trainer ready for `.train()`."""
    from transformers import AutoTokenizer, set_seed
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from srft.train.trainer import ConsoleProgress, SessionClock, SRFTTrainer

    problems = validate(build_dir, config)
    if problems:
        raise TrainError("cannot train:\n  - " + "\n  - ".join(problems))
    ds, ds_dir = load_dataset(build_dir, config.loss_norm)
    check = check_rows(ds, config.max_length)
    if not check.kept:
        raise TrainError(f"{ds_dir}: no trainable rows; drops by reason {dict(check.drops)}, "
                         f"example rows {check.examples}")
    args = _training_args(Path(work), config)  # before loading the model: ZeRO-3 must see it first
    set_seed(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(config.model)
    model = load_model(config)
    pad = next(t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if t is not None)
    plan = BatchPlan(check.lengths, batch_size=config.batch_size, batch_tokens=config.batch_tokens, seed=config.seed)
    budget = None
    if config.budget_tokens is not None:
        per_row = check.trained if config.budget_unit == "trained" else check.lengths
        steps, reached = steps_for_budget(plan, per_row, config.budget_tokens, config.grad_accum * args.world_size)
        args.max_steps = steps
        budget = {"unit": config.budget_unit, "tokens": config.budget_tokens, "steps": steps, "planned": reached}
    trainer = SRFTTrainer(model=model, args=args, train_dataset=ds.select(check.kept),
                          data_collator=Collator(pad, config.loss_norm, config.max_length),
                          processing_class=tokenizer, plan=plan, full_logits=not config.skip_untrained_logits,
                          loss_chunk_tokens=config.loss_chunk_tokens, callbacks=list(callbacks))
    trainer.add_callback(SessionClock(trainer))
    for noisy in (ProgressCallback, PrinterCallback):  # they print to stdout, which --json reserves
        trainer.remove_callback(noisy)
    if console is not None:
        trainer.add_callback(ConsoleProgress(console))
    return Prepared(trainer, check, ds_dir, len(ds), budget)


def _resume_point(resume: bool | str | Path, work: Path, out: Path) -> tuple[Path | None, bool]:
    """(checkpoint to continue, whether it lives in a finished OUT that must become the partial run again)."""
    from transformers.trainer_utils import get_last_checkpoint

    if not resume:
        return None, False
    if not isinstance(resume, bool):
        path = Path(resume)
        if not (path / "trainer_state.json").is_file():
            raise TrainError(f"{path}: not a Trainer checkpoint (no trainer_state.json)")
        return path, False
    for base, adopt in ((work, False), (out, True)):
        last = get_last_checkpoint(str(base / "checkpoints")) if (base / "checkpoints").is_dir() else None
        if last is not None:
            return Path(last), adopt
    raise TrainError(f"resume: no checkpoint under {work}/checkpoints or {out}/checkpoints "
                     "(checkpoints are written only with --save-steps)")


def _is_main() -> bool:
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
    """Train on `BUILD_DIR/dataset/`; write weights, tokenizer, config, report and loss curve to `out_dir`."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    out = Path(out_dir).resolve()
    work = out.with_name(out.name + ".partial")
    checkpoint, adopt = _resume_point(resume, work, out)
    if (checkpoint is None or adopt) and work.exists() and _is_main():
        shutil.rmtree(work)  # a crashed earlier run that was not asked to resume
    prepared = build_trainer(build_dir, work, config, callbacks=callbacks, console=console)
    trainer = prepared.trainer
    if adopt:  # continue a finished run: OUT becomes the partial run again (only now that everything validated)
        if trainer.is_world_process_zero():
            shutil.rmtree(work, ignore_errors=True)  # just the empty checkpoints dir the Trainer made
            os.replace(out, work)
        trainer.accelerator.wait_for_everyone()
        checkpoint = work / "checkpoints" / checkpoint.name
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    report = _report(prepared, config, out, checkpoint)
    if trainer.is_world_process_zero():
        _save_outputs(trainer, work, config, report)
    trainer.accelerator.wait_for_everyone()
    if trainer.is_world_process_zero():
        _promote(work, out)
    return report


def _save_outputs(trainer, work: Path, config: TrainConfig, report: dict[str, Any]) -> None:
    unwrapped = trainer.accelerator.unwrap_model(trainer.model)
    getattr(unwrapped, "config", unwrapped).use_cache = True  # training turned it off; inference wants it
    trainer.save_model(str(work))
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


def _report(prepared: Prepared, config: TrainConfig, out: Path, checkpoint: Path | None) -> dict[str, Any]:
    trainer, check = prepared.trainer, prepared.check
    curve = loss_curve(trainer.state.log_history)
    total_params = sum(p.numel() for p in trainer.model.parameters())
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    seconds = trainer.session_seconds
    return {
        "srft_version": srft.__version__, "out_dir": str(out), "config": config.model_dump(mode="json"),
        "resolved": {"lr": config.resolved_lr(), "max_steps": trainer.state.max_steps,
                     "world_size": trainer.args.world_size, "device": str(trainer.args.device),
                     "micro_batches_per_epoch": len(trainer.plan)},
        "dataset": {"path": str(prepared.dataset_dir), "fingerprint": dataset_fingerprint(prepared.dataset_dir),
                    "rows": prepared.rows_total, "rows_trained": len(check.kept),
                    "drops": dict(sorted(check.drops.items())), "drop_examples": check.examples,
                    "truncated_rows": check.truncated, "tokens": sum(check.lengths),
                    "trained_tokens": sum(check.trained)},
        "model": {"path": str(Path(config.model).resolve()), "method": config.method, "parameters": total_params,
                  "trainable_parameters": trainable},
        "budget": prepared.budget, "resumed_from": str(checkpoint) if checkpoint else None,
        "steps": trainer.state.global_step, "epochs": trainer.state.epoch,
        "tokens_seen": trainer.tokens_seen, "trained_tokens": trainer.trained_seen,
        "train_seconds": round(seconds, 3),
        "tokens_per_s": round(trainer.session_tokens / seconds, 1) if seconds else None,
        "peak_rss_mb": peak_rss_mb(), "peak_gpu_mb": peak_gpu_mb(),
        "first_loss": curve[0]["loss"] if curve else None, "final_loss": curve[-1]["loss"] if curve else None,
        "loss_curve": curve,
    }
