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
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from transformers import PreTrainedModel

from lmtune.config import ModelConfig
from lmtune.data.batching import Row, epoch_batches
from lmtune.errors import LmtuneError
from lmtune.model import is_preset, preset_dir

# Linear layers that read the same input tensor (the output of one norm), so a saved input is stored once for all.
_SHARED_INPUT = {
    "q_proj": "attn_in",
    "k_proj": "attn_in",
    "v_proj": "attn_in",
    "gate_proj": "mlp_in",
    "up_proj": "mlp_in",
}
# Linear layers of a Llama-like block whose input already comes out of an op in the compute dtype (SDPA, the MLP
# product) rather than out of a norm in the residual dtype: autocast does not copy it, and o_proj's input is the
# SDPA output that attention saves anyway.
_INNER_INPUT = {"o_proj", "down_proj"}
_LLAMA_LINEARS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def lora_parameters(in_features: int, out_features: int, r: int) -> int:
    """Parameters LoRA adds to one linear layer: A is r x in, B is out x r (Hu et al. 2021), so r·(in + out).

    A 512x512 layer at rank 8 gains 8·(512 + 512) = 8,192 parameters.
    """
    return r * (in_features + out_features)


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
    width: int  # padded length: the longest row of the batch
    trained: int  # target tokens the loss is computed on
    masked: bool  # an attention mask reaches attention (padding in the batch, or packed rows)
    packed: bool = False  # rows carry their own position ids

    @property
    def tokens(self) -> int:
        return self.rows * self.width


def plan_steps(rows: Sequence[Row], batch_size: int, grad_accum: int, seed: int, steps: int) -> list[list[MicroBatch]]:
    """The micro-batches of every optimizer step in the order `train_loop` forms them (same seeded shuffle per
    epoch, `grad_accum` micro-batches per step, one process), so memory and time see the run's real batches."""
    lengths = [len(r.input_ids) for r in rows]
    trained = [r.trained_tokens for r in rows]
    packed = bool(rows) and rows[0].position_ids is not None
    plan: list[list[MicroBatch]] = []
    epoch = 0
    while len(plan) < steps:
        batches = epoch_batches(len(rows), batch_size, seed, epoch)
        for i in range(0, len(batches), grad_accum):
            step = []
            for idx in batches[i : i + grad_accum]:
                width = max(lengths[j] for j in idx)
                masked = packed or any(lengths[j] < width for j in idx)
                step.append(MicroBatch(len(idx), width, sum(trained[j] for j in idx), masked, packed))
            plan.append(step)
            if len(plan) == steps:
                break
        epoch += 1
    return plan


@dataclass(frozen=True)
class Precision:
    """How the forward pass computes: the bytes of a matmul's inputs/outputs, and whether autocast casts weights."""

    compute_itemsize: int
    autocast: bool  # mixed precision over wider weights: every linear layer works on a 16-bit copy of its weight

    @classmethod
    def of(cls, weight_itemsize: int, mixed_precision: str) -> Precision:
        if mixed_precision in ("bf16", "fp16"):
            return cls(2, autocast=weight_itemsize > 2)
        return cls(weight_itemsize, autocast=False)


def _linear_saves(x: LinearSpec, tokens: int, p: int, prec: Precision, kept: set[str], input_grad: bool = True) -> int:
    """Bytes a linear layer saves for backward beyond its weight (Korthikanti's 'inputs of the linear layers').

    y = x·Wᵀ needs x only for W's gradient, so a frozen layer saves no input. Under autocast each layer reads its
    own 16-bit copy of a norm output and saves that copy; otherwise layers reading the same tensor share it
    (`kept` records which were counted). A LoRA branch (peft: B(A(dropout(x)))·scale with A, B in fp32) saves
    the dropout mask (fp32, as dropout is `x * mask` on CPU; only when x needs a gradient), A's input (the
    dropped-out x, or its autocast copy) and B's input (r values per token).
    """
    c = prec.compute_itemsize
    inner = x.name in _INNER_INPUT
    in_itemsize = c if inner else p  # o_proj/down_proj read SDPA/MLP outputs; the rest read a norm output
    group = _SHARED_INPUT.get(x.name, x.name)

    def the_input() -> int:  # the input tensor itself, stored once however many layers save it
        if x.name == "o_proj" or group in kept:  # o_proj's input is the SDPA output, counted with attention
            return 0
        kept.add(group)
        return tokens * x.in_features * in_itemsize

    saved = 0
    if x.weight_trainable:
        saved += tokens * x.in_features * 2 if prec.autocast and not inner else the_input()
    if x.lora_rank:
        adapter = 2 if prec.autocast else 4
        if x.lora_dropout:
            saved += tokens * x.in_features * (4 * input_grad + adapter)
        elif prec.autocast:
            saved += tokens * x.in_features * 2
        else:
            saved += the_input() if in_itemsize == 4 else tokens * x.in_features * 4
        saved += tokens * x.lora_rank * adapter
    return saved


def _weight_copies(linears: Iterable[LinearSpec]) -> int:
    """Autocast's 16-bit copies of the weights: kept in its cache (trainable weights) or saved by the linear op
    for the input gradient (frozen ones) until backward has passed the layer: 2 bytes per weight."""
    return sum(
        2 * (x.in_features * x.out_features + lora_parameters(x.in_features, x.out_features, x.lora_rank))
        for x in linears
    )


def block_activations(spec: ModelSpec, i: int, mb: MicroBatch, prec: Precision) -> int:
    """Bytes transformer block i saves for backward on micro-batch mb (0 for a block before anything trains).

    Llama-like block, per token (h hidden, a heads of d dims, k kv-heads, f intermediate, p residual-dtype bytes,
    c compute bytes), as counted from autograd's saved tensors:
      2 RMSNorms        2·(4h + 4 [+ p·h when the norm weight trains]): fp32 input, 1/rms, normalised input
      attention (SDPA)  c·d·(2a + 2k') + 4a: q, k, v, output, logsumexp, where k' = a when a padding mask makes
                        transformers repeat the kv heads (repeat_kv), else k; plus the additive mask, c·s per token
                        (SDPA keeps a b·s·s copy per layer); eager attention keeps the probabilities instead
      gated MLP         3·c·f: gate output, SiLU output, up output
      linear inputs     see _linear_saves
    Other architectures: Korthikanti et al.'s s·b·h·(34 + 5·a·s/h) at 16-bit, scaled to c bytes.
    """
    if i < spec.first_active_block:
        return 0
    h, a, d, f = spec.hidden, spec.heads, spec.head_dim, spec.intermediate
    tokens, c, p = mb.tokens, prec.compute_itemsize, spec.weight_itemsize
    linears = [x for x in spec.linears if x.block == i]
    if not spec.llama_like:
        generic = tokens * h * (34 + 5 * a * mb.width / h) * c / 2
        lora_only = [
            LinearSpec(x.block, x.name, x.in_features, x.out_features, False, x.lora_rank, x.lora_dropout)
            for x in linears
        ]
        return int(generic) + sum(_linear_saves(x, tokens, p, prec, set()) for x in lora_only)
    normed = p * h if spec.block_norms_trainable[i] else 0
    # The first block's input needs no gradient unless the embeddings train: its first norm keeps only what its
    # own weight's gradient needs.
    input_grad = i > spec.first_active_block or spec.embed_gradient_bytes > 0
    saved = tokens * ((4 * h + 4) * (1 + input_grad) + 2 * normed)
    kv = a if (mb.masked and spec.kv_heads < a) else spec.kv_heads
    saved += tokens * (c * d * (2 * a + 2 * kv) + 4 * a)
    if spec.eager_attention:  # no logsumexp or mask copy: the fp32 softmax output and its 16-bit copy instead
        saved += mb.rows * a * mb.width**2 * (4 + (c if c != 4 else 0)) - tokens * 4 * a
    elif mb.masked:
        saved += mb.rows * mb.width**2 * c
    saved += 3 * tokens * f * c
    kept: set[str] = set()
    return saved + sum(
        _linear_saves(x, tokens, p, prec, kept, input_grad or _SHARED_INPUT.get(x.name) != "attn_in") for x in linears
    )


def head_activations(spec: ModelSpec, mb: MicroBatch, prec: Precision) -> int:
    """Saved by the final norm, the output head and the embedding (its token ids, when it trains), and RoPE's
    cos/sin tables, which every layer saves (one position row per batch, or per row when packed)."""
    tokens, h, p = mb.tokens, spec.hidden, spec.weight_itemsize
    saved = 8 * tokens if spec.embed_gradient_bytes else 0
    if spec.first_active_block < spec.layers:
        saved += tokens * (4 * h + 4 + (p * h if spec.final_norm_trainable else 0))
        if spec.llama_like:
            saved += 2 * (mb.rows if mb.packed else 1) * mb.width * spec.head_dim * p
    kept: set[str] = set()
    return saved + sum(_linear_saves(x, tokens, p, prec, kept) for x in spec.linears if x.block is None)


def logits_bytes(spec: ModelSpec, mb: MicroBatch, prec: Precision) -> int:
    """The logits and the loss at their largest, beyond the activations (L = b·s·V logits, n target tokens).

    causal_lm_loss gathers the n target rows in fp32 and keeps their log-softmax for backward. The moments that
    compete (l: bytes per logit as the model returns it, 4 under mixed precision as accelerate converts the
    outputs to fp32):
      loss                 l·L + 8nV      the logits, the gathered rows, the log-softmax
      backward of the loss 12nV           the log-softmax and two n x V gradients
      gradient of logits   2·l·L          the index and slice backwards each build a zero-filled b x s x V
      fp32 conversion      6·L            both copies while accelerate converts (mixed precision only)
    Chat data trains few tokens per row (n << b·s), so the gradient of the logits often wins; small models
    with large vocabularies peak here.
    """
    n, v, logits = mb.trained, spec.vocab, mb.tokens * spec.vocab
    per_logit = 4 if prec.autocast else prec.compute_itemsize
    moments = [per_logit * logits + 8 * n * v, 12 * n * v, 2 * per_logit * logits]
    if prec.autocast and prec.compute_itemsize == 2:
        moments.append(6 * logits)
    return max(moments) + 8 * n + mb.rows * mb.width  # + targets and label mask


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak memory of one training step, by term (bytes): the tensors torch allocates, which is what CUDA's
    max_memory_allocated counts. `peak` = weights + optimizer states + the largest of the phases in
    step_memory; the other terms list each quantity at its full size (they do not all coexist)."""

    weights: int
    gradients: int
    optimizer_states: int
    activations: int  # saved for backward by all blocks and the head, at the peak micro-batch
    logits: int  # logits and loss tensors (see logits_bytes)
    autocast_copies: int
    optimizer_temporaries: int
    phase: str  # where the step peaks: 'forward' (end of forward / start of backward), 'backward', 'optimizer'
    peak: int
    rows: int  # the micro-batch whose activations are counted: rows x width (padded)
    width: int

    def as_dict(self) -> dict[str, Any]:
        return {k if k in ("phase", "rows", "width") else f"{k}_bytes": v for k, v in asdict(self).items()}


# AdamW's single-tensor path (CPU) makes ~3 temporaries the size of the parameter it updates; the multi-tensor
# path (CUDA's default) makes them for a whole parameter group at once (torch.optim.adamw._multi_tensor_adamw).
_ADAM_TEMPS_CPU = 3


def step_memory(
    spec: ModelSpec, micro: Sequence[MicroBatch], prec: Precision, *, device: str = "cpu"
) -> MemoryEstimate:
    """Peak memory of one optimizer step made of `micro` (the largest micro-batch sets the activations).

    Phases (W weights, O = 2 AdamW states per trainable parameter in its dtype, G gradients, S activations):
      forward   S_blocks + S_head + copies + logits (+ G when accumulating: earlier micro-batches' gradients)
      backward  walking the blocks in reverse, block i still holds S_j for j ≤ i while the gradients of the head
                and of blocks ≥ i exist; with gradient checkpointing S_j is the block's input, and the block being
                recomputed holds its full S_i
      optimizer G + AdamW temporaries
    """
    mb = max(micro, key=lambda m: block_activations(spec, spec.layers - 1, m, prec) + logits_bytes(spec, m, prec))
    full = [block_activations(spec, i, mb, prec) for i in range(spec.layers)]
    copies = [
        _weight_copies(x for x in spec.linears if x.block == i) if prec.autocast and i >= spec.first_active_block else 0
        for i in range(spec.layers)
    ]
    head_copies = _weight_copies(x for x in spec.linears if x.block is None) if prec.autocast else 0
    if spec.gradient_checkpointing:
        kept = [mb.tokens * spec.hidden * spec.weight_itemsize if s else 0 for s in full]
        block_copies = [0] * spec.layers  # recomputed with the block
    else:
        kept, block_copies = full, copies
    head = head_activations(spec, mb, prec)
    logits = logits_bytes(spec, mb, prec)
    g = spec.gradient_bytes
    accumulating = g if len(micro) > 1 else 0
    forward = sum(kept) + sum(block_copies) + head + head_copies + logits + accumulating
    # Inside a block's backward the gradients of its widest tensors (the MLP's T x f) exist beside its saved ones;
    # a recomputed block also holds its output and that output's gradient.
    transient = 2 * mb.tokens * spec.intermediate * prec.compute_itemsize
    if spec.gradient_checkpointing:
        transient += mb.tokens * spec.hidden * (spec.weight_itemsize + 4)
    backward = 0
    grads_done = spec.head_gradient_bytes
    for i in reversed(range(spec.layers)):
        grads_done += spec.block_gradient_bytes[i]
        live = sum(kept[:i]) + sum(block_copies[:i]) + full[i] + copies[i] + max(grads_done, accumulating)
        backward = max(backward, live + (transient if full[i] else 0))
    backward = max(backward, g)
    temps = (_ADAM_TEMPS_CPU * spec.largest_gradient_bytes) if device == "cpu" else g
    optimizer = g + temps
    phases = {"forward": forward, "backward": backward, "optimizer": optimizer}
    phase = max(phases, key=phases.__getitem__)
    return MemoryEstimate(
        weights=spec.weight_bytes,
        gradients=g,
        optimizer_states=2 * g,
        activations=sum(kept) + head,
        logits=logits,
        autocast_copies=sum(block_copies) + head_copies,
        optimizer_temporaries=temps,
        phase=phase,
        peak=spec.weight_bytes + 2 * g + phases[phase],
        rows=mb.rows,
        width=mb.width,
    )


def run_memory(
    spec: ModelSpec, plan: Sequence[Sequence[MicroBatch]], prec: Precision, *, device: str
) -> MemoryEstimate:
    """The step of the plan with the highest estimated peak. Memory grows with a micro-batch's tokens, width and
    targets, so only the steps leading on one of those are evaluated."""
    lead = lambda key: sorted(range(len(plan)), key=lambda k: max(key(m) for m in plan[k]))[-8:]  # noqa: E731
    candidates = set(lead(lambda m: m.tokens)) | set(lead(lambda m: m.trained)) | set(lead(lambda m: m.width))
    return max((step_memory(spec, plan[k], prec, device=device) for k in sorted(candidates)), key=lambda e: e.peak)


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
