"""What `accelerate launch` (or torchrun) asked for, checked against the TrainConfig before any model loads.

`accelerate launch` passes its config to each process as environment variables (ACCELERATE_USE_FSDP,
FSDP_VERSION, ACCELERATE_USE_DEEPSPEED, ACCELERATE_MIXED_PRECISION, ...); torchrun sets WORLD_SIZE and RANK.
`launch_problems` turns every combination a distributed mode cannot honour into a one-line error that says what
to set. Pure except for reading the environment mapping it is given.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from srft.train.config import TrainConfig

WORLD_SIZE_VARS = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def _flag(env: Mapping[str, str], key: str) -> bool:
    return env.get(key, "false").strip().lower() in ("1", "true", "yes")


def requested(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The launch as the environment describes it: processes, sharding mode, mixed precision."""
    env = os.environ if env is None else env
    world = next((int(env[k]) for k in WORLD_SIZE_VARS if env.get(k, "").isdigit()), 1)
    mode = "deepspeed" if _flag(env, "ACCELERATE_USE_DEEPSPEED") else "fsdp" if _flag(env, "ACCELERATE_USE_FSDP") \
        else "ddp" if world > 1 else "single"
    out: dict[str, Any] = {"world_size": world, "mode": mode,
                           "mixed_precision": env.get("ACCELERATE_MIXED_PRECISION", "no").lower()}
    if mode == "fsdp":
        out["fsdp_version"] = int(env.get("FSDP_VERSION", "1"))
    return out


def launch_problems(config: TrainConfig, env: Mapping[str, str] | None = None) -> list[str]:
    """Every reason this launch cannot run `config` as asked (empty: it can)."""
    env = os.environ if env is None else env
    launch, problems = requested(env), []
    try:
        config.step_shape(launch["world_size"])
    except ValueError as exc:
        problems.append(str(exc))
    precision = launch["mixed_precision"]
    if precision == "fp16":
        problems.append("accelerate launch asks for fp16 mixed precision; srft trains in fp32 or bf16: launch with "
                        "--mixed_precision bf16 and pass --bf16, or --mixed_precision no")
    elif precision == "bf16" and not config.bf16:
        problems.append("accelerate launch asks for bf16 mixed precision but srft train runs fp32: pass --bf16 too, "
                        "or launch with --mixed_precision no")
    if launch["mode"] == "fsdp":
        if _flag(env, "FSDP_ACTIVATION_CHECKPOINTING") and config.gradient_checkpointing:
            problems.append("fsdp_activation_checkpointing and --gradient-checkpointing both recompute activations; "
                            "keep one (srft's --gradient-checkpointing works under every launcher)")
        if launch["fsdp_version"] == 1 and config.method == "lora" and not _flag(env, "FSDP_USE_ORIG_PARAMS"):
            problems.append("FSDP1 flattens each wrapped layer into one parameter, so LoRA's trainable adapters and "
                            "the frozen weights they sit beside cannot be told apart: set fsdp_use_orig_params: true "
                            "(or fsdp_version: 2)")
        if launch["fsdp_version"] == 1 and not _cuda():
            problems.append("FSDP1 cannot run on CPU: accelerate's FSDP1 plugin asks for an accelerator device "
                            "('There are currently no available devices found') and torch's FSDP1 refuses 'cpu:0' "
                            "('Inconsistent compute device and `device_id`'); set fsdp_version: 2")
        if _flag(env, "FSDP_OFFLOAD_PARAMS") and not _cuda():
            problems.append("fsdp_offload_params moves parameters to CPU memory between uses; on a CPU-only machine "
                            "they already are there: set fsdp_offload_params: false")
    return problems


def enable_cpu_fsdp(env: Mapping[str, str] | None = None) -> bool:
    """Let an FSDP launch run FSDP2 on CPU processes. accelerate 1.15 switches FSDP on only for GPU-like
    distributed states, so on CPU it would silently train plain DDP, although torch's FSDP2 (`fully_shard`) runs
    over gloo. Call after TrainingArguments has set up the process group and before the Trainer builds its
    Accelerator; returns whether it changed anything."""
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    env = os.environ if env is None else env
    state = PartialState._shared_state
    if requested(env)["mode"] != "fsdp" or state.get("distributed_type") != DistributedType.MULTI_CPU:
        return False
    state["distributed_type"] = DistributedType.MULTI_GPU  # the device stays CPU; only the FSDP switch reads this
    return True


def free_port() -> int:
    """A TCP port nothing listens on now, for torchrun's rendezvous (its default 29500 collides when two
    launches run at once on one machine)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_config_problems(config_file: str | os.PathLike, num_processes: int) -> list[str]:
    """Why `accelerate launch --config_file FILE --num_processes N` would not start N processes. accelerate 1.15
    runs a MULTI_CPU or `use_cpu: true` config through its simple launcher, which starts ONE process unless
    mpirun_hostfile is set: N processes asked, 1 trains, nothing says so."""
    import yaml

    try:
        launch = yaml.safe_load(Path(config_file).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        return [f"{config_file}: cannot read the accelerate config ({exc})"]
    if num_processes <= 1 or launch.get("mpirun_hostfile"):
        return []
    kind = str(launch.get("distributed_type", "NO"))
    if kind == "MULTI_CPU" or launch.get("use_cpu") is True:
        return [(f"{config_file}: accelerate launch starts one process for distributed_type {kind} with use_cpu "
                 f"{launch.get('use_cpu')} (its simple launcher; only mpirun_hostfile makes it start more), not "
                 f"{num_processes}: use configs/accelerate/ddp.yaml with --mixed_precision no (srft trains over gloo "
                 "when there is no GPU)")]
    return []


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def describe(accelerator, trainer_args) -> dict[str, Any]:
    """The launch as it actually ran (for train_config.json and the report)."""
    state = accelerator.state
    out = {"distributed_type": str(state.distributed_type).split(".")[-1], "num_processes": state.num_processes,
           "mixed_precision": str(state.mixed_precision), "backend": getattr(state, "backend", None),
           "device": str(trainer_args.device)}
    if getattr(state, "fsdp_plugin", None) is not None:
        out["fsdp_version"] = state.fsdp_plugin.fsdp_version
    if getattr(state, "deepspeed_plugin", None) is not None:
        out["zero_stage"] = state.deepspeed_plugin.zero_stage
    return out
