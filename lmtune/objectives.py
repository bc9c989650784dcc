"""Loss functions, one per training type. Each returns the summed loss and the number of target tokens, so the
loop can normalise by the tokens of a whole optimizer step (every target token weighs the same, however the
micro-batches are padded or packed)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lmtune.data.tokenize import IGNORE


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Next-token cross-entropy summed over labelled positions (computed in float32).

    Prompt tuning prepends virtual tokens, so its logits are longer than the labels by their number: only the
    last positions, those of the real tokens, are scored.
    """
    if logits.shape[1] > labels.shape[1]:
        logits = logits[:, logits.shape[1] - labels.shape[1] :, :]
    shift_logits = logits[:, :-1, :]
    shift_labels = labels[:, 1:]
    mask = shift_labels != IGNORE
    n = int(mask.sum())
    if n == 0:
        return logits.sum() * 0.0, 0
    loss = F.cross_entropy(shift_logits[mask].float(), shift_labels[mask], reduction="sum")
    return loss, n


def seq2seq_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Cross-entropy of an encoder-decoder's decoder logits, summed over the target tokens (in float32).

    No shift: the model feeds the labels shifted right as decoder inputs, so the logits at t score the label at t.
    """
    mask = labels != IGNORE
    n = int(mask.sum())
    if n == 0:
        return logits.sum() * 0.0, 0
    return F.cross_entropy(logits[mask].float(), labels[mask], reduction="sum"), n


@dataclass(frozen=True)
class Objective:
    loss: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, int]]
    # Encoder-decoders build their decoder inputs from the labels (shifted right, each architecture its own way),
    # so the labels go into the forward pass too (the model's own mean loss it then computes is not used).
    model_takes_labels: bool = False


# The objective of each training type (`task:`), where the loop computes the loss.
OBJECTIVES: dict[str, Objective] = {
    "sft": Objective(causal_lm_loss),
    "causal_lm": Objective(causal_lm_loss),
    "seq2seq": Objective(seq2seq_loss, model_takes_labels=True),
}


def l2sp_penalty(params: Sequence[torch.Tensor], anchors: Sequence[torch.Tensor]) -> torch.Tensor:
    """L2-SP (Li et al., 2018, "Explicit Inductive Bias for Transfer Learning"): sum of (w - w0)^2 over the
    trainable parameters, w0 being their values before fine-tuning, in float32. Added to the loss it pulls the
    weights back toward the pre-trained ones, where plain weight decay would pull them toward zero."""
    total = torch.zeros((), dtype=torch.float32, device=params[0].device if params else None)
    for p, p0 in zip(params, anchors, strict=True):
        total = total + (p.float() - p0.float()).pow(2).sum()
    return total
