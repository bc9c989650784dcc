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

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from transformers import PreTrainedModel

from lmtune.config import ModelConfig
from lmtune.data.batching import Row, epoch_batches, padded_width
from lmtune.errors import LmtuneError
from lmtune.memory_terms import (
    MemoryEstimate,
    Precision,
    block_activations,
    head_activations,
    logits_bytes,
    lora_parameters,
    run_memory,
    step_memory,
)
from lmtune.model import is_preset, preset_dir

_LLAMA_LINEARS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


@dataclass(frozen=True)
class LinearSpec:
    """One linear layer as the memory formulas see it."""

    block: int | None  # index of its transformer block; None for the output head
    name: str  # the module's own name (q_proj, down_proj, lm_head, ...)
    in_features: int
    out_features: int
    weight_trainable: bool
    lora_rank: int = 0  # 0: no LoRA adapter on this layer
    lora_dropout: bool = False


@dataclass(frozen=True)
class ModelSpec:
    """What the formulas need to know about the model after the method is applied (read off a meta-device model)."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    llama_like: bool  # blocks with q/k/v/o projections and a gated MLP: the op-by-op count applies
    eager_attention: bool  # attention probabilities are materialised (attn_implementation='eager')
    weight_itemsize: int  # bytes per element of the base weights as loaded (model.dtype)
    total_params: int
    trainable_params: int
    weight_bytes: int  # every parameter and buffer once (tied weights once), in its own dtype
    gradient_bytes: int  # trainable parameters in their own dtype: one gradient, and one AdamW state each
    largest_gradient_bytes: int
    block_gradient_bytes: tuple[int, ...]  # gradients of each transformer block
    block_norms_trainable: tuple[bool, ...]
    head_gradient_bytes: int  # final norm and output head
    embed_gradient_bytes: int
    first_active_block: int  # blocks from here on save activations (something at or before them trains)
    final_norm_trainable: bool
    linears: tuple[LinearSpec, ...]
    gradient_checkpointing: bool
    matmul_params: int  # weights of all linear layers: the 2·N of a forward pass (embeddings do no matmul)
    backward_matmul_params: int  # linear weights that backward passes a gradient through (active blocks + head)
    trainable_matmul_params: int  # trainable linear weights: their weight gradient is another 2·N
    chunked_loss: bool = False  # the loss runs the head only at trained positions, in chunks (lmtune.linear_ce)

    @property
    def lora_params(self) -> int:
        return sum(lora_parameters(x.in_features, x.out_features, x.lora_rank) for x in self.linears if x.lora_rank)


def meta_model(cfg: ModelConfig) -> PreTrainedModel:
    """The configured model on the meta device: every parameter's shape, dtype and tying, no memory, no weights
    read (transformers refuses `from_pretrained` on meta, so it is built from the model's config)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    source = str(preset_dir(cfg.name)) if is_preset(cfg.name) else cfg.name
    try:
        config = AutoConfig.from_pretrained(source, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise LmtuneError(
            f"could not read the config of model {cfg.name!r}: {reason}",
            hint="give a local model directory (with config.json), a hub id, or 'preset:tiny-chat'",
        ) from None
    kwargs = {"attn_implementation": cfg.attn_implementation} if cfg.attn_implementation else {}
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(
            config, dtype=getattr(torch, cfg.dtype), trust_remote_code=cfg.trust_remote_code, **kwargs
        )


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
    from peft.tuners.lora import LoraLayer

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
        vocab=embed.weight.shape[0] if embed is not None else config.vocab_size,
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


@dataclass(frozen=True)
class MicroBatch:
    """The shape of one micro-batch as collate() pads it."""

    rows: int
    width: int  # padded length: the longest row of the batch, rounded up (train.pad_to_multiple_of)
    trained: int  # target tokens the loss is computed on
    masked: bool  # an attention mask reaches attention (padding in the batch, or packed rows)
    packed: bool = False  # rows carry their own position ids

    @property
    def tokens(self) -> int:
        return self.rows * self.width


def plan_steps(
    rows: Sequence[Row],
    batch_size: int,
    grad_accum: int,
    seed: int,
    steps: int,
    grouped: bool = True,
    pad_multiple: int | str = 1,
) -> list[list[MicroBatch]]:
    """The micro-batches of every optimizer step in the order `train_loop` forms them (same seeded shuffle per
    epoch, `grad_accum` micro-batches per step, one process), so memory and time see the run's real batches."""
    lengths = [len(r.input_ids) for r in rows]
    trained = [r.trained_tokens for r in rows]
    packed = bool(rows) and rows[0].position_ids is not None
    longest = max(lengths, default=0)  # the data's longest row caps every batch's rounded width
    plan: list[list[MicroBatch]] = []
    epoch = 0
    while len(plan) < steps:
        batches = epoch_batches(len(rows), batch_size, seed, epoch, lengths=lengths if grouped else None)
        for i in range(0, len(batches), grad_accum):
            step = []
            for idx in batches[i : i + grad_accum]:
                width = padded_width(max(lengths[j] for j in idx), pad_multiple, longest)
                masked = packed or any(lengths[j] < width for j in idx)
                step.append(MicroBatch(len(idx), width, sum(trained[j] for j in idx), masked, packed))
            plan.append(step)
            if len(plan) == steps:
                break
        epoch += 1
    return plan


def step_flops(spec: ModelSpec, micro: Sequence[MicroBatch]) -> float:
    """FLOPs of one optimizer step (Kaplan et al. 2020; Hoffmann et al. 2022, appendix F).

    A matmul costs 2 FLOPs per weight per token forward; backward costs another 2 for the input gradient (in
    every layer gradients flow through) and 2 for the weight gradient (trainable weights only): 6·N per token
    for full fine-tuning, about 4·N with frozen weights and a small adapter. Attention adds 4·s·a·d per token and
    layer forward (QKᵀ and AV), twice that backward. Tokens are padded tokens: padding is computed too.
    """
    total = 0.0
    attn = spec.heads * spec.head_dim
    active_layers = spec.layers - spec.first_active_block
    for mb in micro:
        total += 2 * (spec.matmul_params + spec.backward_matmul_params + spec.trainable_matmul_params) * mb.tokens
        total += 4 * mb.rows * mb.width**2 * attn * (spec.layers + 2 * active_layers)
    return total


@dataclass(frozen=True)
class ProbeResult:
    """What N real optimizer steps measured."""

    steps: int
    memory_steps: int  # the first steps, over which `peak` was measured (the rest were timed)
    measures: str  # what `peak` is, in words
    peak: int  # bytes
    rss_peak: int | None  # CPU: peak RSS above the pre-model baseline (bytes)
    step_seconds: tuple[float, ...]
    estimate: MemoryEstimate  # the analytic estimate for the probed steps' own batches
    forecast_s: float  # the run's training time, extrapolated from the probe

    @property
    def ratio(self) -> float:
        return self.estimate.peak / self.peak if self.peak else math.nan

    @property
    def median_step_s(self) -> float:
        times = self.step_seconds[1:] or self.step_seconds
        return statistics.median(times)

    def as_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "memory_steps": self.memory_steps,
            "measures": self.measures,
            "peak_bytes": self.peak,
            "rss_peak_bytes": self.rss_peak,
            "estimate_bytes": self.estimate.peak,
            "estimate_over_measured": round(self.ratio, 3),
            "step_seconds": [round(t, 4) for t in self.step_seconds],
            "median_step_s": round(self.median_step_s, 4),
            "forecast_train_s": round(self.forecast_s, 2),
            "estimate": self.estimate.as_dict(),
        }


@dataclass(frozen=True)
class EstimateResult:
    """The pre-flight figures for one config (bytes, seconds)."""

    config: str
    model: str
    method: str
    device: str
    precision: str  # e.g. 'float32 weights, bf16 autocast'
    total_params: int
    trainable_params: int
    lora_params: int
    steps: int
    micro_batch_size: int
    grad_accum: int
    tokens: int  # padded tokens the run computes on
    trained_tokens: int
    peak_batch: tuple[int, int]  # (rows, width) of the micro-batch setting the peak
    memory: MemoryEstimate
    flops: float
    throughput_flops: float  # measured by a matmul micro-benchmark
    time_s: float  # flops / throughput: rough
    probe: ProbeResult | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def trainable_percent(self) -> float:
        return 100 * self.trainable_params / self.total_params if self.total_params else 0.0

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("memory", "probe")}
        out["trainable_percent"] = round(self.trainable_percent, 4)
        out["peak_batch"] = {"rows": self.peak_batch[0], "width": self.peak_batch[1]}
        out["memory"] = self.memory.as_dict()
        out["time_s"] = round(self.time_s, 2)
        out["throughput_flops_per_s"] = out.pop("throughput_flops")
        out["probe"] = self.probe.as_dict() if self.probe else None
        out["notes"] = list(self.notes)
        return out


def notes(spec: ModelSpec, device: str, probe: ProbeResult | None) -> tuple[str, ...]:
    """What the figures do not cover, in words for the output."""
    out = []
    if not spec.llama_like:
        out.append(
            "activations: this architecture is not Llama-like (q/k/v/o projections, gated MLP), so its blocks use "
            "Korthikanti et al.'s generic per-layer formula: expect a coarser estimate"
        )
    if device == "cuda":
        out.append("memory counts tensors; the CUDA context and the caching allocator's reserve come on top")
    elif probe is not None and probe.rss_peak is not None:
        out.append(
            "CPU: the process's RSS also holds memory glibc keeps after frees and oneDNN's caches, which grow with "
            "the number of distinct batch shapes; the probe's peak RSS shows how much"
        )
    out.append("time without a probe: FLOPs / a benchmark of this machine, rough (small models run slower)")
    return tuple(out)


__all__ = [
    "EstimateResult",
    "LinearSpec",
    "MemoryEstimate",
    "MicroBatch",
    "ModelSpec",
    "Precision",
    "ProbeResult",
    "block_activations",
    "describe_model",
    "head_activations",
    "logits_bytes",
    "lora_parameters",
    "meta_model",
    "notes",
    "plan_steps",
    "run_memory",
    "step_flops",
    "step_memory",
]
