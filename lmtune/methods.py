"""Fine-tuning methods: each turns a base model into the model to train, deciding what is trainable.

`METHODS` maps the config's `method.name` to a `Method`: the function `(model, method_cfg) -> model` that applies
it. Which methods fit which task is each task entry's `methods` (`lmtune.tasks`). peft does the work for every adapter method except bottleneck
adapters, which peft does not ship (see `lmtune.adapters`). A new method is one function and one entry here (and
its config section in `lmtune.config`).
"""

from __future__ import annotations

import fnmatch
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from peft import (
    IA3Config,
    LoraConfig,
    PrefixTuningConfig,
    PromptTuningConfig,
    PromptTuningInit,
    TaskType,
    get_peft_model,
    prepare_model_for_kbit_training,
)
from transformers import PreTrainedModel

from lmtune.adapters import add_adapters
from lmtune.config import (
    AdaptersMethod,
    FreezeMethod,
    FullMethod,
    Ia3Method,
    LoraMethod,
    PrefixTuningMethod,
    PromptTuningMethod,
    QloraMethod,
)
from lmtune.errors import LmtuneError
from lmtune.model import is_classifier, is_token_classifier


def apply_full(model: PreTrainedModel, cfg: FullMethod) -> PreTrainedModel:
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def _peft(model: PreTrainedModel, peft_cfg: Any) -> Any:
    try:
        return get_peft_model(model, peft_cfg)
    except ValueError as e:
        raise LmtuneError(
            f"method.target_modules: {e}", hint="use 'all-linear' or names of linear layers (e.g. q_proj, v_proj)"
        ) from None


def _task_type(model: PreTrainedModel) -> TaskType:
    """peft's wrapper for the model: an encoder-decoder's (SEQ_2_SEQ_LM) routes decoder inputs and labels; a
    classifier's (SEQ_CLS; TOKEN_CLS for a token classifier) trains and saves the new head in full (modules_to_save)."""
    if is_classifier(model):
        return TaskType.SEQ_CLS
    if is_token_classifier(model):
        return TaskType.TOKEN_CLS
    return TaskType.SEQ_2_SEQ_LM if getattr(model.config, "is_encoder_decoder", False) else TaskType.CAUSAL_LM


def apply_lora(model: PreTrainedModel, cfg: LoraMethod) -> Any:
    """LoRA, DoRA (`use_dora`: a trained magnitude vector per adapted layer) and QLoRA (LoRA on the quantized
    base that `load_model` built from `quantization_config`)."""
    if getattr(model, "is_quantized", False):
        # Casts norms to fp32 and makes the frozen quantized embeddings pass gradients to the adapters.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    exclude = None
    if cfg.target_modules == "all-linear" and is_token_classifier(model):
        # peft leaves the head out of all-linear for SEQ_CLS only; a token classifier's head is trained in full.
        exclude = [name for name in CLASSIFIER_HEADS if hasattr(model, name)]
    peft_cfg = LoraConfig(
        task_type=_task_type(model),
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=cfg.target_modules,
        modules_to_save=cfg.modules_to_save or None,
        use_dora=cfg.name == "dora",
        exclude_modules=exclude,
    )
    return _peft(model, peft_cfg)


def apply_ia3(model: PreTrainedModel, cfg: Ia3Method) -> Any:
    peft_cfg = IA3Config(
        task_type=TaskType.CAUSAL_LM,
        target_modules=cfg.target_modules,
        feedforward_modules=cfg.feedforward_modules,
    )
    return _peft(model, peft_cfg)


def apply_prompt_tuning(model: PreTrainedModel, cfg: PromptTuningMethod) -> Any:
    """Trained virtual-token embeddings prepended to the input; peft prepends -100 labels for them and the
    loss (`causal_lm_loss`) drops their logits."""
    text = {}
    if cfg.init_text is not None:
        # peft tokenizes the text itself; the model's config remembers where it was loaded from.
        source = getattr(model.config, "name_or_path", "") or ""
        if not source:
            raise LmtuneError(
                "method.init_text: the model does not say where its tokenizer lives", hint="unset init_text"
            )
        text = dict(
            prompt_tuning_init=PromptTuningInit.TEXT,
            prompt_tuning_init_text=cfg.init_text,
            tokenizer_name_or_path=source,
        )
    peft_cfg = PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=cfg.num_virtual_tokens, **text)
    return get_peft_model(model, peft_cfg)


def apply_prefix_tuning(model: PreTrainedModel, cfg: PrefixTuningMethod) -> Any:
    """Trained keys and values prepended in every attention layer (peft passes them as the KV cache)."""
    peft_cfg = PrefixTuningConfig(
        task_type=TaskType.CAUSAL_LM,
        num_virtual_tokens=cfg.num_virtual_tokens,
        prefix_projection=cfg.projection,
        encoder_hidden_size=cfg.projection_hidden,
    )
    return get_peft_model(model, peft_cfg)


def apply_adapters(model: PreTrainedModel, cfg: AdaptersMethod) -> PreTrainedModel:
    for p in model.parameters():
        p.requires_grad_(False)
    return add_adapters(model, cfg, transformer_blocks(model))


def quantization_config(cfg: Any) -> Any:
    """The `BitsAndBytesConfig` a qlora run loads its base with (None for other methods).

    Raised here, before any weight is read: bitsandbytes' k-bit kernels need a CUDA GPU and the library itself.
    """
    if not isinstance(cfg, QloraMethod):
        return None

    if not torch.cuda.is_available():
        raise LmtuneError(
            "method qlora: quantizing the base model to 4/8 bits needs a CUDA GPU (bitsandbytes), and none is "
            "available here",
            hint="on this machine use method: lora (same adapter, unquantized base), or run on a CUDA machine",
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise LmtuneError("method qlora: the bitsandbytes package is not installed", hint="pip install bitsandbytes")
    return bnb_config(cfg)


def bnb_config(cfg: QloraMethod) -> Any:
    from transformers import BitsAndBytesConfig

    if cfg.bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=cfg.quant_type,
        bnb_4bit_use_double_quant=cfg.double_quant,
        bnb_4bit_compute_dtype=getattr(torch, cfg.compute_dtype),
    )


def transformer_blocks(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The model's stack of transformer blocks: the longest ModuleList (model.layers, transformer.h, ...); for an
    encoder-decoder, the decoder's (freeze trains the blocks nearest the output)."""
    config = getattr(model, "config", None)
    root = model.get_decoder() if getattr(config, "is_encoder_decoder", False) else model
    lists = [m for m in root.modules() if isinstance(m, torch.nn.ModuleList) and len(m) > 0]
    if not lists:
        raise LmtuneError("method freeze: could not find the transformer blocks of this model")
    return max(lists, key=len)


# What transformers names the head of a sequence classifier (BERT-style encoders; decoders such as Llama).
CLASSIFIER_HEADS = ("classifier", "score")


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
    if is_classifier(model) or is_token_classifier(model):
        # The classification head is new: frozen at its random initialisation it could not learn anything.
        for name, p in model.named_parameters():
            if name.split(".")[0] in CLASSIFIER_HEADS:
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


@dataclass(frozen=True)
class Method:
    apply: Callable[[PreTrainedModel, Any], Any]
    summary: str  # what trains, in words (the README's table); which tasks it fits is each task entry's `methods`


METHODS: dict[str, Method] = {
    "full": Method(apply_full, "every weight"),
    "freeze": Method(apply_freeze, "the last N blocks (+ glob-matched modules; a classifier's head)"),
    "lora": Method(apply_lora, "low-rank A·B beside each adapted linear layer"),
    "dora": Method(apply_lora, "LoRA + a magnitude vector per adapted layer"),
    "qlora": Method(apply_lora, "LoRA on a 4/8-bit quantized base (CUDA)"),
    "ia3": Method(apply_ia3, "one scaling vector per targeted layer"),
    "prompt_tuning": Method(apply_prompt_tuning, "virtual-token input embeddings"),
    "prefix_tuning": Method(apply_prefix_tuning, "virtual keys/values in every layer"),
    "adapters": Method(apply_adapters, "a bottleneck MLP after each block's MLP"),
}


def apply_method(model: PreTrainedModel, cfg: Any) -> Any:
    """The configured method applied to the model (peft does the work; the task entry said it fits)."""
    return METHODS[cfg.name].apply(model, cfg)
