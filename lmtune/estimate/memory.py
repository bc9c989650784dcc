"""The memory terms of a training step, for `lmtune estimate`: each a formula over the model's shape and a batch.

Kept apart from `lmtune.estimate.model` (which describes the model and plans the run's batches) because each term is
its own derivation; see that module's docstring for the method (Korthikanti et al. 2022, redone per op).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from lmtune.estimate.spec import LinearSpec, MicroBatch, ModelSpec, lora_parameters
from lmtune.train.linear_ce import CHUNK_ELEMENTS

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
        lora_only = [replace(x, weight_trainable=False) for x in linears]
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
    if spec.chunked_loss:
        # lmtune.train.linear_ce: the gathered hidden rows and their gradient, and one chunk's logits in float32 with
        # their gradient in the compute dtype; no full-vocabulary tensor.
        rows = min(n, max(1, CHUNK_ELEMENTS // v))
        return 2 * 4 * n * spec.hidden + rows * v * (4 + prec.compute_itemsize) + 8 * n + mb.rows * mb.width
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
