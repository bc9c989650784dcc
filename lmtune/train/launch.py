"""The Accelerator of a run, and what a distributed launch (accelerate config / torchrun) may combine with the run's
settings, checked up front."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, InitProcessGroupKwargs
from tqdm.auto import tqdm

from lmtune.config import RunConfig, TrainConfig
from lmtune.errors import LmtuneError

FSDP_CONFIG = "configs/accelerate/fsdp-8gpu.yaml"
DEEPSPEED_CONFIG = "configs/accelerate/deepspeed-zero3-8gpu.yaml"


def make_accelerator(mixed_precision: str) -> Accelerator:
    """The run's Accelerator for this launch (plain, torchrun, or `accelerate launch` with its config).

    accelerate recognises a CPU-only torchrun/`accelerate launch` job as distributed only when told cpu=True, but
    takes DeepSpeed only when not told so; DeepSpeed then runs on its CPU accelerator over gloo, which accelerate
    does not pick by itself (it would count one process while DeepSpeed counts them all).
    """
    no_gpu = not (torch.cuda.is_available() or torch.backends.mps.is_available())
    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    if no_gpu and not torch.cuda.device_count():
        # accelerate and transformers import deepspeed whenever it is installed (to recognise its engine when a
        # model is unwrapped or saved); told the accelerator, DeepSpeed skips its probe and its warning on every run
        # ("Setting accelerator to CPU").
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    handlers = [InitProcessGroupKwargs(backend="gloo")] if deepspeed and no_gpu else []
    return Accelerator(mixed_precision=mixed_precision, cpu=no_gpu and not deepspeed, kwargs_handlers=handlers)


@contextmanager
def whole_model_loading(accelerator: Accelerator) -> Iterator[None]:
    """Load the model whole in every process, also under ZeRO-3 (whose `prepare` partitions it afterwards).

    accelerate has transformers build models already partitioned under ZeRO-3 (`deepspeed.zero.Init`), whatever
    the config's zero3_init_flag says. lmtune counts, freezes, wraps and copies the weights before `prepare`, which
    needs them whole; every process holds the whole model until `prepare` (as with FSDP and
    fsdp_cpu_ram_efficient_loading: false).
    """
    if accelerator.distributed_type != DistributedType.DEEPSPEED:
        yield
        return
    from transformers.integrations import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        accelerator.state.deepspeed_plugin.set_deepspeed_weakref()


def unwrap(accelerator: Accelerator, model: Any) -> Any:
    """The model inside accelerate's wrapper (DDP, FSDP, a DeepSpeed engine, torch.compile), or the model itself.

    `Accelerator.unwrap_model` imports deepspeed whenever it is installed, to test for its engine; that import
    takes seconds and prints "Setting accelerator to CPU" on every run. A model without a wrapper's attributes is
    returned as it is, so only runs that wrap (and DeepSpeed's) pay for it."""
    if hasattr(model, "module") or "_orig_mod" in getattr(model, "__dict__", {}):
        return accelerator.unwrap_model(model)
    return model


def configure_deepspeed(accelerator: Accelerator, train: TrainConfig) -> None:
    """Give DeepSpeed the run's batch, accumulation and clipping (train:), before `prepare` builds its engine.

    lmtune's loop drives the engine step by step (`lmtune.train.loop.train_loop`) and normalises the loss itself, so
    these values come from the run's config, whatever the accelerate config says.
    """
    if accelerator.distributed_type != DistributedType.DEEPSPEED:
        return
    ds = accelerator.state.deepspeed_plugin.deepspeed_config
    ds["train_micro_batch_size_per_gpu"] = train.batch_size
    ds["gradient_accumulation_steps"] = train.grad_accum
    ds["train_batch_size"] = train.batch_size * train.grad_accum * accelerator.num_processes
    ds["gradient_clipping"] = train.max_grad_norm if train.max_grad_norm is not None else 0.0


def describe_launch(accelerator: Accelerator) -> dict[str, Any]:
    """How the run was launched, for env.json: processes, mixed precision, and the sharding in force."""
    kind = accelerator.distributed_type
    out: dict[str, Any] = {
        "distributed_type": str(kind.value),
        "processes": accelerator.num_processes,
        "mixed_precision": str(accelerator.mixed_precision),
    }
    if kind == DistributedType.DEEPSPEED:
        out["zero_stage"] = _zero_stage(accelerator)
    if kind == DistributedType.FSDP:
        out["fsdp_version"] = _fsdp_version(accelerator)
    return out


def _zero_stage(accelerator: Accelerator) -> int:
    return int(accelerator.state.deepspeed_plugin.deepspeed_config.get("zero_optimization", {}).get("stage", 0))


def _fsdp_version(accelerator: Accelerator) -> int:
    return getattr(accelerator.state.fsdp_plugin, "fsdp_version", 1)


def check_launch(accelerator: Accelerator, cfg: RunConfig) -> None:
    """Refuse, before any work, the launches whose states lmtune cannot save and load exactly.

    DDP, FSDP2 and DeepSpeed ZeRO 1-3 are supported: `lmtune.train.checkpoint` gathers FSDP2 shards through
    torch.distributed.checkpoint and ZeRO partitions through DeepSpeed's own functions (`lmtune.train.zero`). FSDP1 wraps
    modules in a way whose names and flat parameters that code does not read.
    """
    kind = accelerator.distributed_type
    if kind == DistributedType.DEEPSPEED:
        _check_deepspeed(accelerator, cfg)
        return
    if kind != DistributedType.FSDP:
        return
    version = _fsdp_version(accelerator)
    if version != 2:
        raise LmtuneError(
            f"FSDP version {version}: lmtune saves and resumes sharded runs with FSDP2 only",
            hint=f"set fsdp_version: 2 in the accelerate config's fsdp_config (as {FSDP_CONFIG} does)",
        )
    _check_sharded(cfg, "FSDP")


def _check_sharded(cfg: RunConfig, launch: str) -> None:
    if cfg.train.l2sp > 0:
        raise LmtuneError(
            f"train.l2sp with {launch}: the L2-SP penalty compares whole weights with their starting values, which "
            f"{launch} holds only as shards",
            hint="set train.l2sp: 0 (or train with DDP: --nproc N)",
        )
    if cfg.method.name == "qlora":
        raise LmtuneError(
            f"method qlora with {launch}: lmtune does not shard bitsandbytes 4-bit weights stored as uint8",
            hint=f"use method lora under {launch}, or qlora on one GPU / with DDP",
        )


def _check_deepspeed(accelerator: Accelerator, cfg: RunConfig) -> None:
    ds = accelerator.state.deepspeed_plugin.deepspeed_config
    stage = _zero_stage(accelerator)
    if stage not in (1, 2, 3):
        raise LmtuneError(
            f"DeepSpeed ZeRO stage {stage}: without ZeRO, DeepSpeed is plain data parallel",
            hint="set zero_stage to 1, 2 or 3 in the accelerate config's deepspeed_config, or use --nproc N (DDP)",
        )
    given = [k for k in ("optimizer", "scheduler") if k in ds]
    if given:
        raise LmtuneError(
            f"DeepSpeed config: lmtune builds the optimizer and learning-rate schedule from train: (lr, betas, "
            f"weight_decay, scheduler, warmup), and the config also defines {' and '.join(given)}",
            hint=f"remove the {' and '.join(given)} section(s) from the DeepSpeed config (as {DEEPSPEED_CONFIG})",
        )
    if ds.get("fp16", {}).get("enabled") in (True, "true") or cfg.train.mixed_precision == "fp16":
        raise LmtuneError(
            "DeepSpeed with fp16: its loss scaler skips steps on overflow, which lmtune's schedule and step count "
            "would not know of",
            hint="train in bf16 (train.mixed_precision: bf16, mixed_precision: bf16 in the accelerate config) or fp32",
        )
    _check_sharded(cfg, "DeepSpeed")


def resolve_mixed_precision(choice: str) -> str:
    """'auto' -> bf16 where the hardware computes it natively (a GPU with bf16, or a CPU with AVX512-BF16/AMX)."""
    if choice != "auto":
        return choice
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "no"
    return "bf16" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "no"


@contextmanager
def graceful_interrupt() -> Iterator[Callable[[], bool]]:
    """The first Ctrl-C (or SIGTERM, which schedulers and `kill` send) asks the loop to stop after the current step
    (and checkpoint); a second one kills."""
    requested = False

    def handler(signum: int, frame: Any) -> None:
        nonlocal requested
        if requested:
            raise KeyboardInterrupt
        requested = True
        tqdm.write("Interrupt: finishing this step and saving a checkpoint (Ctrl-C again to abort now)...")

    try:
        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: leave signals alone
        yield lambda: False
        return
    try:
        yield lambda: requested
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def end_process_group() -> None:
    """Shut a distributed launch's process group down before the interpreter exits, as torch asks: left to the
    exit, its threads (and DeepSpeed's) are torn down in no set order, which once aborted a process."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def relaunch(argv: list[str], nproc: int) -> int:
    """This same `lmtune` command (`argv`, without the program name) under torchrun with N processes (torch's
    launcher, not our own distribution layer); its exit code. `--nproc` is left out of the relaunched command."""
    args, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            args.append(arg)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc)]
    if "MASTER_PORT" not in os.environ:
        launcher += ["--master_port", str(_free_port())]
    return subprocess.call([*launcher, "-m", "lmtune", *args])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
