"""The pre-flight estimate: exact parameter counts, peak memory and run time, computed before any compute is spent.

Memory is a sum of terms, each with its formula below: weights, gradients, AdamW states, the activations autograd
keeps for backward, the logits and loss tensors, and (under autocast) the 16-bit weight copies. The activation
terms follow the method of Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer
Models", section 4.1): count, op by op, the tensors each layer saves for backward. Their per-layer total for a GPT
block, s·b·h·(34 + 5·a·s/h) bytes at 16-bit, assumes trainable weights, dropout and the softmax of unfused
attention; here the count is redone for the Llama/Qwen/Mistral block as transformers 5 writes it (RMSNorm, RoPE,
SDPA, gated MLP) and for what the method freezes: a frozen linear layer saves no input, a LoRA layer saves its
dropout mask and the adapter's input. Each term was checked against autograd's saved tensors on small models
(see tests/test_estimate.py); other architectures fall back to Korthikanti's per-layer formula.

Time is FLOPs over a measured matmul throughput (rough), or, after a probe, the measured time per padded token
carried over to the run's own batches (calibrated).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import PreTrainedModel

from lmtune.config import ModelConfig
from lmtune.estimate.spec import LinearSpec, ModelSpec, lora_parameters
from lmtune.model import is_classifier, is_token_classifier, load_model

_LLAMA_LINEARS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def meta_model(cfg: ModelConfig) -> PreTrainedModel:
    """The configured causal LM on the meta device: every parameter's shape, dtype and tying, no memory, no
    weights read (`lmtune.model.load_model` with meta=True; `lmtune.api.setup.build_model` builds any task's)."""
    return load_model(cfg, "causal", meta=True)


def _linear_shape(module: torch.nn.Module) -> tuple[int, int] | None:
    """(in, out) of a linear layer: torch Linear, or GPT-2's Conv1D (weight stored as in x out)."""
    if isinstance(module, torch.nn.Linear):
        return module.in_features, module.out_features
    if type(module).__name__ == "Conv1D" and hasattr(module, "nf"):
        return module.weight.shape[0], module.nf
    return None


def describe_model(
    model: torch.nn.Module, blocks: Sequence[torch.nn.Module], gradient_checkpointing: bool
) -> ModelSpec:
    """Read the spec off a model (meta device is enough: only shapes, dtypes and requires_grad are used)."""
    config = getattr(model, "config", None) or model.get_base_model().config
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    hidden = getattr(config, "hidden_size", None) or config.n_embd
    heads = getattr(config, "num_attention_heads", None) or config.n_head
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    intermediate = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * hidden
    attn_impl = getattr(config, "_attn_implementation", None) or "sdpa"

    params = dict(model.named_parameters())  # named_parameters() yields a tied weight once
    block_of: dict[int, int] = {}
    for i, block in enumerate(blocks):
        for p in block.parameters():
            block_of[id(p)] = i
    nbytes = lambda ps: sum(p.numel() * p.element_size() for p in ps)  # noqa: E731
    trainable = [p for p in params.values() if p.requires_grad]
    block_grads = [nbytes(p for p in b.parameters() if p.requires_grad) for b in blocks]
    block_norms = tuple(any(p.requires_grad and p.ndim == 1 for p in b.parameters()) for b in blocks)
    embed = model.get_input_embeddings()
    embed_grads = nbytes(p for p in embed.parameters() if p.requires_grad) if embed is not None else 0
    head_grads = nbytes(p for p in trainable if id(p) not in block_of) - embed_grads

    linears = _linears(model, block_of)
    trained_blocks = [i for i, g in enumerate(block_grads) if g]
    first_active = 0 if embed_grads else (trained_blocks[0] if trained_blocks else len(blocks))
    matmul = sum(
        x.in_features * x.out_features + lora_parameters(x.in_features, x.out_features, x.lora_rank) for x in linears
    )
    active = [x for x in linears if x.block is None or x.block >= first_active]
    backward_matmul = sum(x.in_features * x.out_features for x in active)
    trainable_matmul = sum(
        x.in_features * x.out_features * x.weight_trainable
        + lora_parameters(x.in_features, x.out_features, x.lora_rank)
        for x in linears
    )
    names = {x.name for x in linears if x.block is not None}
    base_dtype = (
        next((p.dtype for p in params.values() if not p.requires_grad), None) or next(iter(params.values())).dtype
    )
    final_norm = [p for n, p in params.items() if id(p) not in block_of and p.ndim == 1 and "norm" in n.lower()]
    return ModelSpec(
        layers=len(blocks),
        hidden=hidden,
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        intermediate=intermediate,
        vocab=_outputs(model, embed, config),
        llama_like=_LLAMA_LINEARS.issubset(names),
        eager_attention=attn_impl == "eager",
        weight_itemsize=torch.empty((), dtype=base_dtype).element_size(),
        total_params=sum(p.numel() for p in params.values()),
        trainable_params=sum(p.numel() for p in trainable),
        weight_bytes=nbytes(params.values()) + nbytes(model.buffers()),
        gradient_bytes=nbytes(trainable),
        largest_gradient_bytes=max((p.numel() * p.element_size() for p in trainable), default=0),
        block_gradient_bytes=tuple(block_grads),
        block_norms_trainable=block_norms,
        head_gradient_bytes=head_grads,
        embed_gradient_bytes=embed_grads,
        first_active_block=first_active,
        final_norm_trainable=any(p.requires_grad for p in final_norm),
        linears=tuple(linears),
        gradient_checkpointing=gradient_checkpointing,
        matmul_params=matmul,
        backward_matmul_params=backward_matmul,
        trainable_matmul_params=trainable_matmul,
    )


def _linears(model: torch.nn.Module, block_of: dict[int, int]) -> list[LinearSpec]:
    """Every linear layer with its block (None outside the blocks); a LoRA layer counts once, with its adapter."""
    from peft.tuners.lora import LoraLayer

    linears: list[LinearSpec] = []
    lora_inner: set[int] = set()
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer) and "default" in getattr(module, "lora_A", {}):
            base = module.get_base_layer()
            shape = _linear_shape(base)
            if shape is None:
                continue
            lora_inner.update(id(m) for m in module.modules() if m is not module)
            dropout = module.lora_dropout["default"]
            linears.append(
                LinearSpec(
                    block_of.get(id(base.weight)),
                    name.rsplit(".", 1)[-1],
                    *shape,
                    weight_trainable=base.weight.requires_grad,
                    lora_rank=module.r["default"],
                    lora_dropout=isinstance(dropout, torch.nn.Dropout) and dropout.p > 0,
                )
            )
        elif id(module) not in lora_inner and (shape := _linear_shape(module)) is not None:
            linears.append(
                LinearSpec(
                    block_of.get(id(module.weight)),
                    name.rsplit(".", 1)[-1],
                    *shape,
                    weight_trainable=module.weight.requires_grad,
                )
            )
    return linears


def _outputs(model: torch.nn.Module, embed: Any, config: Any) -> int:
    """Logits per position: the vocabulary of a language model; the labels of a classification or tagging head
    (their logits are a few per example or word, not a vocabulary's)."""
    if is_classifier(model) or is_token_classifier(model):
        return int(config.num_labels)
    return embed.weight.shape[0] if embed is not None else config.vocab_size
