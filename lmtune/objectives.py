"""Loss functions, one per training type. Each returns the summed loss and the number of target tokens, so the
loop can normalise by the tokens of a whole optimizer step (every target token weighs the same, however the
micro-batches are padded or packed)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lmtune.data.tokenize import IGNORE


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Next-token cross-entropy summed over labelled positions (computed in float32)."""
    shift_logits = logits[:, :-1, :]
    shift_labels = labels[:, 1:]
    mask = shift_labels != IGNORE
    n = int(mask.sum())
    if n == 0:
        return logits.sum() * 0.0, 0
    loss = F.cross_entropy(shift_logits[mask].float(), shift_labels[mask], reduction="sum")
    return loss, n
