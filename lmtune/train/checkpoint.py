"""Checkpoints that resume exactly, and atomic file writes.

A checkpoint holds the trainable weights (safetensors), the optimizer and scheduler states, the RNG states and
the loop position (step, epoch, micro-batch) in `checkpoints/step-NNNNNN/`. It is written to a temporary folder
and renamed into place, so a crash never leaves a half-written checkpoint that resume would pick up. Only the
trainable parameters are saved: for LoRA that is the adapter, so checkpoints stay small.

Under FSDP the parameters and optimizer states are sharded over the processes. Every process then takes part in
gathering them (torch.distributed.checkpoint's state-dict API, which also reads DDP-wrapped and plain models), and
the checkpoint holds whole tensors keyed by parameter name, so it loads into any launch: one process, DDP, or
FSDP on another number of processes. DeepSpeed ZeRO runs read and write the same whole, name-keyed tensors
through DeepSpeed's own functions (`lmtune.train.zero`), so they load anywhere too.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor

from lmtune.errors import Diverged, LmtuneError
from lmtune.fileio import atomic_dir, dumps_json
from lmtune.rundir import disk_errors
from lmtune.train import zero

CHECKPOINTS = "checkpoints"
_PREFIX = "step-"


# Whole tensors on the CPU of the first process (the others get none): what a checkpoint file holds.
_WHOLE = StateDictOptions(full_state_dict=True, cpu_offload=True)
_FULL = StateDictOptions(full_state_dict=True)  # loading: every process holds the whole tensors


def unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    """The model under a DDP wrapper or DeepSpeed engine (FSDP2 shards a model in place, so it has none)."""
    if isinstance(model, torch.nn.parallel.DistributedDataParallel) or zero.engine_of(model) is not None:
        return model.module
    return model


def is_sharded(model: torch.nn.Module) -> bool:
    """Whether the model's weights are sharded over processes (FSDP2's DTensors, or ZeRO-3's partitions), so that
    every forward is a collective."""
    return any(isinstance(p, DTensor) for p in model.parameters()) or zero.is_zero3(model)


def gathers(model: torch.nn.Module) -> bool:
    """Whether reading the model's whole weights or optimizer states takes every process: they are sharded, or
    ZeRO partitions the optimizer's master copies."""
    inner = unwrapped(model)
    return is_sharded(inner) or zero.uses_zero(inner)


def _resharded(model: torch.nn.Module) -> torch.nn.Module:
    """FSDP2 leaves the root module's parameters whole after a forward without backward (an evaluation); the
    state-dict functions read every parameter as its shard, so shard them back first."""
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()
    return model


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trainable weights as whole CPU tensors, keyed by the model's own parameter names.

    Takes a plain, DDP-wrapped, FSDP-sharded or DeepSpeed model. Sharded, it is collective (every process must
    call it) and only the first process gets the weights (under FSDP; the others get {}).
    """
    inner = unwrapped(model)
    if zero.uses_zero(inner):
        return zero.trainable_state(inner)
    # named_parameters() lists a tied weight once, which safetensors requires.
    trainable = {n: p for n, p in inner.named_parameters() if p.requires_grad}
    if not is_sharded(inner):
        return {n: p.detach().contiguous().cpu() for n, p in trainable.items()}
    options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
    state = get_model_state_dict(_resharded(inner), options=options)
    return {n: state[n].contiguous() for n in trainable if n in state}


def model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every weight and buffer as whole CPU tensors (collective when sharded; the first process gets them)."""
    if zero.uses_zero(unwrapped(model)):
        return zero.model_state(unwrapped(model))
    return get_model_state_dict(_resharded(unwrapped(model)), options=_WHOLE)


def load_trainable(model: torch.nn.Module, weights: dict[str, torch.Tensor], source: Path) -> None:
    """Put whole trainable weights (from `trainable_state`) back into a plain, DDP, FSDP or DeepSpeed model."""
    inner = unwrapped(model)
    params = dict(inner.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in weights]
    if missing:
        raise RuntimeError(f"{source} lacks trainable parameters, e.g. {missing[:3]}")
    if zero.uses_zero(inner):
        zero.load_weights(inner, weights)
        return
    if is_sharded(inner):
        # Every process holds the whole tensors (read from disk); each keeps its own shard of them.
        set_model_state_dict(_resharded(inner), weights, options=StateDictOptions(full_state_dict=True, strict=False))
        return
    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(tensor)


def _torch_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    return getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer wraps it


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    loop_state: dict[str, Any],
    keep: int,
    *,
    write: bool = True,
) -> Path:
    """Save a checkpoint of `model` (plain, DDP, FSDP or DeepSpeed) and its optimizer. Call it on every process:
    sharded states are gathered collectively; only where `write` (the main process) are files written."""
    final = run_dir / CHECKPOINTS / f"{_PREFIX}{step:06d}"
    if not write and not gathers(model):
        return final  # nothing to gather: the writing process holds every weight and state whole
    weights = trainable_state(model)
    # Keyed by parameter name with whole tensors (not by position in the optimizer, nor sharded): loads anywhere.
    optimizer_state = optimizer_state_of(model, optimizer)
    if not write:
        return final
    check_finite(weights, step)
    needed = tensor_bytes(weights) + tensor_bytes(optimizer_state)
    with disk_errors(final, f"checkpoint of step {step}", needed), atomic_dir(final) as tmp:
        save_file(weights, str(tmp / "trainable.safetensors"))
        torch.save(
            {"optimizer": optimizer_state, "scheduler": scheduler.state_dict(), "rng": rng_state()},
            tmp / "training_state.pt",
        )
        (tmp / "loop_state.json").write_text(dumps_json(loop_state, indent=2) + "\n", encoding="utf-8")
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def tensor_bytes(state: Any) -> int:
    """The bytes of every tensor in a (nested) state: about what writing it takes on disk."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(tensor_bytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(tensor_bytes(v) for v in state)
    return 0


def check_finite(weights: dict[str, torch.Tensor], step: int) -> None:
    """A checkpoint is what a diverged run falls back to: one with NaN or infinite weights is never written. An
    update can make them so while its own loss was finite; that stops the run as a divergence."""
    bad = [n for n, t in weights.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        reason = f"the weights after step {step} hold NaN or infinite values ({len(bad)} tensors, e.g. {bad[0]})"
        raise Diverged(step, step, 0, reason=reason)


def optimizer_state_of(model: torch.nn.Module, optimizer: Any) -> dict[str, Any]:
    """The optimizer's state as torch's full state dict, whole tensors keyed by parameter name (collective when
    sharded or under ZeRO)."""
    inner = unwrapped(model)
    if zero.uses_zero(inner):
        return zero.optimizer_state(inner, optimizer)
    return get_optimizer_state_dict(_resharded(inner), _torch_optimizer(optimizer), options=_WHOLE)


def list_checkpoints(run_dir: Path) -> list[Path]:
    root = run_dir / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [
        p for p in root.iterdir() if p.is_dir() and p.name.startswith(_PREFIX) and (p / "loop_state.json").exists()
    ]
    return sorted(found, key=lambda p: int(p.name.removeprefix(_PREFIX)))


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any) -> dict:
    """Restore weights, optimizer, scheduler and RNG in place; return the loop state to continue from.

    `model` may be plain, DDP-wrapped, FSDP-sharded or a DeepSpeed engine (not its module: loading into ZeRO may
    take a step of the engine), on any number of processes (call it on every process)."""
    load_trainable(model, load_file(str(path / "trainable.safetensors")), path)
    state = torch.load(path / "training_state.pt", map_location="cpu", weights_only=True)
    saved = state["optimizer"]
    inner, torch_optimizer = unwrapped(model), _torch_optimizer(optimizer)
    if zero.uses_zero(inner):
        engine = zero.engine_of(model)
        if engine is None:
            raise ValueError("load_checkpoint under DeepSpeed takes the engine, not the module it wraps")
        zero.load_optimizer(engine, optimizer, saved)
    elif "param_groups" not in saved:  # written under ZeRO: its groups are rebuilt from this optimizer's
        saved = {**saved, "param_groups": zero.param_groups_by_name(inner, torch_optimizer)}
        set_optimizer_state_dict(_resharded(inner), torch_optimizer, saved, options=_FULL)
    elif isinstance(saved["param_groups"][0]["params"][0], int):  # older checkpoints keyed states by position
        torch_optimizer.load_state_dict(saved)
    else:
        set_optimizer_state_dict(_resharded(inner), torch_optimizer, saved, options=_FULL)
    scheduler.load_state_dict(state["scheduler"])
    # The rate of the next step: ZeRO's states and those written under ZeRO carry no param groups to restore it.
    for group, lr in zip(scheduler.optimizer.param_groups, scheduler.get_last_lr(), strict=True):
        group["lr"] = lr
    set_rng_state(state["rng"])
    return json.loads((path / "loop_state.json").read_text(encoding="utf-8"))


_BEST = "best-"


def best_dir(run_dir: Path, step: int) -> Path:
    """Where the weights of the best evaluation are kept: beside the checkpoints, out of their rotation."""
    return run_dir / CHECKPOINTS / f"{_BEST}{step:06d}"


def save_best(
    run_dir: Path, step: int, model: torch.nn.Module, keep: Iterable[int | None] = (), *, write: bool = True
) -> Path:
    """Write the trainable weights of the best evaluation (atomically), then drop older bests not in `keep`.

    The recipe keeps the best that the last checkpoint refers to until the next checkpoint: a crash between the
    two resumes from that checkpoint, whose best must still be on disk. Call it on every process (an FSDP model's
    shards are gathered); only where `write` (the main process) is anything written or deleted.
    """
    final = best_dir(run_dir, step)
    if not write and not gathers(model):
        return final  # nothing to gather: the writing process holds every weight whole
    weights = trainable_state(model)
    if not write:
        return final
    with disk_errors(final, f"best weights of step {step}", tensor_bytes(weights)), atomic_dir(final) as tmp:
        save_file(weights, str(tmp / "trainable.safetensors"))
    prune_best(run_dir, {step, *keep})
    return final


def prune_best(run_dir: Path, keep: Iterable[int | None]) -> None:
    """Delete the kept-best weights of every step but those in `keep` (e.g. ones a crashed run wrote after the
    checkpoint it resumes from)."""
    root = run_dir / CHECKPOINTS
    if not root.is_dir():
        return
    wanted = {best_dir(run_dir, s).name for s in keep if s is not None}
    for path in root.iterdir():
        if path.is_dir() and path.name.startswith(_BEST) and path.name not in wanted:
            shutil.rmtree(path, ignore_errors=True)


def load_best(run_dir: Path, step: int, model: torch.nn.Module) -> None:
    """Put the kept weights of the best evaluation back into the model (in place; plain, DDP or FSDP)."""
    path = best_dir(run_dir, step) / "trainable.safetensors"
    if not path.is_file():
        raise LmtuneError(
            f"the weights of the best evaluation (step {step}) are missing: {path}",
            hint="they are written when the validation metric improves; was the checkpoints folder changed?",
        )
    load_trainable(model, load_file(str(path)), path)
