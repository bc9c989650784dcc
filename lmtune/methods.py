"""Fine-tuning methods: each turns a base model into the model to train, deciding what is trainable.

`METHODS` maps the config's `method.name` to a function `(model, method_cfg) -> model`; peft does the work for
adapters. A new method is one function and one entry here (and its config section in `lmtune.config`).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import Any

import torch
from peft import LoraConfig, TaskType, get_peft_model
from transformers import PreTrainedModel

from lmtune.config import FreezeMethod, FullMethod, LoraMethod
from lmtune.errors import LmtuneError


def apply_full(model: PreTrainedModel, cfg: FullMethod) -> PreTrainedModel:
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def apply_lora(model: PreTrainedModel, cfg: LoraMethod) -> Any:
    peft_cfg = LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=cfg.target_modules,
        modules_to_save=cfg.modules_to_save or None,
    )
    try:
        return get_peft_model(model, peft_cfg)
    except ValueError as e:
        raise LmtuneError(
            f"method.target_modules: {e}", hint="use 'all-linear' or names of linear layers (e.g. q_proj, v_proj)"
        ) from None


def transformer_blocks(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The model's stack of transformer blocks: the longest ModuleList (model.layers, transformer.h, ...)."""
    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m) > 0]
    if not lists:
        raise LmtuneError("method freeze: could not find the transformer blocks of this model")
    return max(lists, key=len)


def apply_freeze(model: PreTrainedModel, cfg: FreezeMethod) -> PreTrainedModel:
    for p in model.parameters():
        p.requires_grad_(False)
    blocks = transformer_blocks(model)
    if cfg.train_last_layers > len(blocks):
        raise LmtuneError(
            f"method.train_last_layers: the model has {len(blocks)} blocks, got {cfg.train_last_layers}",
            hint=f"use a number from 0 to {len(blocks)}",
        )
    for block in list(blocks)[len(blocks) - cfg.train_last_layers :]:
        for p in block.parameters():
            p.requires_grad_(True)
    for pattern in cfg.train_modules:
        matched = [p for n, p in model.named_parameters() if fnmatch.fnmatchcase(n, pattern)]
        if not matched:
            names = ", ".join(n for n, _ in list(model.named_parameters())[-4:])
            raise LmtuneError(
                f"method.train_modules: {pattern!r} matches no parameter", hint=f"parameter names look like: {names}"
            )
        for p in matched:
            p.requires_grad_(True)
    if not any(p.requires_grad for p in model.parameters()):
        raise LmtuneError("method freeze: nothing left to train", hint="set train_last_layers > 0 or train_modules")
    return model


METHODS: dict[str, Callable[[PreTrainedModel, Any], Any]] = {
    "full": apply_full,
    "lora": apply_lora,
    "freeze": apply_freeze,
}


def apply_method(model: PreTrainedModel, cfg: FullMethod | LoraMethod | FreezeMethod) -> Any:
    return METHODS[cfg.name](model, cfg)
