"""DeepSpeed ZeRO states read and written whole, keyed by parameter name, so its checkpoints load anywhere.

DeepSpeed keeps the fp32 master weights and Adam moments partitioned over the processes inside its optimizer
(ZeRO-1/2), and the module's weights too (ZeRO-3). Its own checkpoints hold one partition per process and load on
the same process count only (or after an offline conversion). lmtune's checkpoints hold whole tensors keyed by
parameter name instead, read and written through DeepSpeed's public `deepspeed.utils.safe_*_full_*` functions.
A ZeRO run then resumes on one process, under DDP or FSDP2, or under ZeRO on another stage or process count, and
the other way round. Every function here is collective: all processes call it.

Nothing imports deepspeed unless a run uses it: a model is DeepSpeed's only when deepspeed was imported.
"""

from __future__ import annotations

import sys
from typing import Any

import torch

_STEP = "step"


def engine_of(model: Any) -> Any | None:
    """The DeepSpeed engine `model` is (accelerate's `prepare` returns one under DeepSpeed), or None."""
    deepspeed = sys.modules.get("deepspeed")
    return model if deepspeed is not None and isinstance(model, deepspeed.DeepSpeedEngine) else None


def uses_zero(module: torch.nn.Module) -> bool:
    """Whether a ZeRO optimizer holds the module's master weights: its parameters carry DeepSpeed's links (on every
    process, also where the link is None because another process holds that parameter's partition)."""
    return any(hasattr(p, "ds_id") or hasattr(p, "_hp_mapping") for p in module.parameters())


def is_zero3(module: torch.nn.Module) -> bool:
    """Whether ZeRO-3 partitions the module's weights (then every forward gathers them: a collective)."""
    return any(hasattr(p, "ds_id") for p in module.parameters())


def _trainable(module: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in module.named_parameters() if p.requires_grad}


def trainable_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trainable weights as whole fp32 CPU tensors: DeepSpeed's master copies, not the bf16 ones the module
    computes with, so a resumed run goes on from exactly the weights the optimizer held."""
    from deepspeed.utils import safe_get_full_fp32_param

    out = {}
    for name, p in _trainable(module).items():
        full = safe_get_full_fp32_param(p)
        out[name] = (p.detach() if full is None else full).contiguous().cpu()
    return out


def model_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every weight and buffer whole on the CPU (the trainable ones as their fp32 masters). Frozen weights are the
    module's own, in the precision DeepSpeed holds them in (bf16 when the run trains in bf16)."""
    import deepspeed

    state = {}
    # One tensor at a time: a process never holds more than one whole weight beyond its partitions.
    for key, value in module.state_dict(keep_vars=True).items():
        with deepspeed.zero.GatheredParameters([value], enabled=hasattr(value, "ds_id")):
            state[key] = value.detach().cpu().clone()
    state.update(trainable_state(module))
    return state


def load_weights(module: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Put whole trainable weights into the optimizer's fp32 masters and into the module's own copies."""
    import deepspeed
    from deepspeed.utils import safe_set_full_fp32_param

    for name, p in _trainable(module).items():
        value = weights[name]
        safe_set_full_fp32_param(p, value.to(torch.float32))
        # ZeRO-3: gathered, changed on every process alike, and partitioned again on leaving.
        gathered = deepspeed.zero.GatheredParameters([p], modifier_rank=0, enabled=hasattr(p, "ds_id"))
        with gathered, torch.no_grad():
            p.copy_(value.to(device=p.device, dtype=p.dtype))


def _inner(optimizer: Any) -> torch.optim.Optimizer:
    """The torch optimizer under accelerate's wrapper and DeepSpeed's ZeRO optimizer (it steps DeepSpeed's flat
    partitions, so its state holds the step count; the moments are read per parameter through DeepSpeed)."""
    while hasattr(optimizer, "optimizer"):
        optimizer = optimizer.optimizer
    return optimizer


def optimizer_state(module: torch.nn.Module, optimizer: Any) -> dict[str, Any]:
    """The optimizer state as torch's full state dict keyed by parameter name: {"state": {name: {"step",
    "exp_avg", ...}}}. Its "param_groups" are left out: DeepSpeed's groups hold flat partitions, not parameters;
    `param_groups_by_name` rebuilds them from the optimizer that loads the state."""
    from deepspeed.utils import safe_get_full_optimizer_state

    inner = _inner(optimizer)
    fields = sorted({k for s in inner.state.values() for k, v in s.items() if k != _STEP and torch.is_tensor(v)})
    steps = [s[_STEP] for s in inner.state.values() if _STEP in s]
    state: dict[str, dict[str, torch.Tensor]] = {}
    if fields and steps:
        step = torch.as_tensor(steps[0]).detach().cpu().clone()
        for name, p in _trainable(module).items():
            state[name] = {_STEP: step.clone()}
            for key in fields:
                state[name][key] = safe_get_full_optimizer_state(p, key).detach().cpu().clone()
    return {"state": state}


def param_groups_by_name(module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    """`optimizer`'s param groups with each parameter named (torch's full state dict form), for loading a state
    that `optimizer_state` wrote into a plain, DDP or FSDP run."""
    names = {id(p): n for n, p in module.named_parameters()}
    groups = []
    for group in optimizer.param_groups:
        settings = {k: v for k, v in group.items() if k != "params"}
        groups.append({**settings, "params": [names[id(p)] for p in group["params"]]})
    return groups


def _initialise_optimizer(engine: Any, optimizer: Any) -> None:
    """Have DeepSpeed create its optimizer states (they appear at the first step) with a step that changes
    nothing: a zero loss, at learning rate 0. Its values are then overwritten by the checkpoint's."""
    inner = _inner(optimizer)
    rates = [g["lr"] for g in inner.param_groups]
    for g in inner.param_groups:
        g["lr"] = 0.0
    module = engine.module
    was_training = module.training
    module.eval()
    dummy = {k: v.to(engine.device) for k, v in module.dummy_inputs.items()}
    out = engine(**dummy, use_cache=False)
    engine.set_gradient_accumulation_boundary(True)
    engine.backward(out.logits.float().sum() * 0.0, scale_wrt_gas=False)
    engine.step()
    module.train(was_training)
    for g, lr in zip(inner.param_groups, rates, strict=True):
        g["lr"] = lr


def load_optimizer(engine: Any, optimizer: Any, saved: dict[str, Any]) -> None:
    """Put a full, name-keyed optimizer state (from any launch) into DeepSpeed's partitions."""
    from deepspeed.utils import safe_set_full_optimizer_state

    if not saved["state"]:
        return  # saved before any step: nothing to restore
    inner = _inner(optimizer)
    if not inner.state:
        _initialise_optimizer(engine, optimizer)
    step = float(next(iter(saved["state"].values()))[_STEP])
    for name, p in _trainable(engine.module).items():
        for key, value in saved["state"].get(name, {}).items():
            if key != _STEP:
                safe_set_full_optimizer_state(p, value.to(torch.float32), key)
    for s in inner.state.values():  # one step count per flat partition: every parameter's is the same
        s[_STEP] = torch.full_like(s[_STEP], step) if torch.is_tensor(s[_STEP]) else step
