"""The run's micro-batches in the order the training loop forms them, and the FLOPs of a step over them."""

from __future__ import annotations

from collections.abc import Sequence

from lmtune.data.batching import Row, epoch_batches, padded_width
from lmtune.data.pairs import PairRow
from lmtune.estimate.spec import MicroBatch, ModelSpec


def plan_steps(
    rows: Sequence[Row] | Sequence[PairRow],
    batch_size: int,
    grad_accum: int,
    seed: int,
    steps: int,
    grouped: bool = True,
    pad_multiple: int | str = 1,
) -> list[list[MicroBatch]]:
    """The micro-batches of every optimizer step in the order `train_loop` forms them (same seeded shuffle per
    epoch, `grad_accum` micro-batches per step, one process), so memory and time see the run's real batches."""
    lengths = [r.length for r in rows]
    trained = [r.trained_tokens for r in rows]
    packed = bool(rows) and getattr(rows[0], "position_ids", None) is not None
    # A preference pair is two sequences (chosen and rejected) batched together.
    per_row = 2 if rows and isinstance(rows[0], PairRow) else 1
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
                step.append(MicroBatch(per_row * len(idx), width, sum(trained[j] for j in idx), masked, packed))
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
