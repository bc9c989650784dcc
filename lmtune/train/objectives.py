"""Loss functions, one per training type. Each returns the summed loss and the number of target tokens, so the
loop can normalise by the tokens of a whole optimizer step (every target token weighs the same, however the
micro-batches are padded or packed)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial

import torch
import torch.nn.functional as F

from lmtune.data.types import IGNORE
from lmtune.errors import LmtuneError
from lmtune.train.linear_ce import causal_hidden_loss


def causal_lm_loss(
    logits: torch.Tensor, labels: torch.Tensor, *, label_smoothing: float = 0.0
) -> tuple[torch.Tensor, int]:
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
    loss = F.cross_entropy(
        shift_logits[mask].float(), shift_labels[mask], reduction="sum", label_smoothing=label_smoothing
    )
    return loss, n


def seq2seq_loss(
    logits: torch.Tensor, labels: torch.Tensor, *, label_smoothing: float = 0.0
) -> tuple[torch.Tensor, int]:
    """Cross-entropy of an encoder-decoder's decoder logits, summed over the target tokens (in float32).

    No shift: the model feeds the labels shifted right as decoder inputs, so the logits at t score the label at t.
    """
    mask = labels != IGNORE
    n = int(mask.sum())
    if n == 0:
        return logits.sum() * 0.0, 0
    return F.cross_entropy(logits[mask].float(), labels[mask], reduction="sum", label_smoothing=label_smoothing), n


def classification_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    label_smoothing: float = 0.0,
    class_weights: Sequence[float] | None = None,
) -> tuple[torch.Tensor, int]:
    """Cross-entropy of a sequence classifier's logits (batch, classes) against label indices (batch,), summed
    over the examples (in float32), and the number of examples.

    With class weights each example's loss is multiplied by its class's weight and the sum is still divided by the
    example count (not the summed weights, as torch's weighted mean does): with 'balanced' weights the mean weight
    over the training set is 1, so the loss keeps its scale and gradient accumulation stays exact.
    """
    weight = None
    if class_weights is not None:
        weight = torch.tensor(list(class_weights), dtype=torch.float32, device=logits.device)
    loss = F.cross_entropy(logits.float(), labels, weight=weight, reduction="sum", label_smoothing=label_smoothing)
    return loss, int(labels.numel())


def token_classification_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    label_smoothing: float = 0.0,
    class_weights: Sequence[float] | None = None,
) -> tuple[torch.Tensor, int]:
    """Cross-entropy of a token classifier's logits (batch, tokens, tags) against tag ids (IGNORE on the pieces
    after a word's first, on special tokens and padding), summed over the tagged words (in float32), and their
    number. Class weights scale each word's loss by its tag's weight, as `classification_loss` does."""
    mask = labels != IGNORE
    n = int(mask.sum())
    if n == 0:
        return logits.sum() * 0.0, 0
    weight = None
    if class_weights is not None:
        weight = torch.tensor(list(class_weights), dtype=torch.float32, device=logits.device)
    loss = F.cross_entropy(
        logits[mask].float(), labels[mask], weight=weight, reduction="sum", label_smoothing=label_smoothing
    )
    return loss, n


@dataclass(frozen=True)
class Objective:
    loss: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, int]]
    # Encoder-decoders build their decoder inputs from the labels (shifted right, each architecture its own way),
    # so the labels go into the forward pass too (the model's own mean loss it then computes is not used).
    model_takes_labels: bool = False
    # The same loss from the last hidden states and the output layer (`lmtune.train.linear_ce`), for the loop to use
    # instead of `loss` when the model's head allows it: no full-vocabulary logits.
    hidden_loss: Callable[..., tuple[torch.Tensor, int]] | None = None
    # Objectives that need more than logits and labels (preference pairs: both answers scored in one forward, a
    # reference's log-probs) take the whole step: (model, batch, device) -> (summed loss, count, summed metrics).
    step: Callable[..., tuple[torch.Tensor, int, dict[str, float]]] | None = None
    # How the loop batches the task's rows (`lmtune.data.batching.collate` when None): (rows, pad_id, multiple, cap).
    collate: Callable[..., dict[str, torch.Tensor]] | None = None
    # The step can take the model's output layer and compute from the last hidden states (no full logits).
    uses_head: bool = False


# The token-level objectives, by the task entries (`lmtune.tasks`) that train with them.
OBJECTIVES: dict[str, Objective] = {
    "sft": Objective(causal_lm_loss, hidden_loss=causal_hidden_loss),
    "causal_lm": Objective(causal_lm_loss, hidden_loss=causal_hidden_loss),
    "seq2seq": Objective(seq2seq_loss, model_takes_labels=True),
    "classification": Objective(classification_loss),
    "token_classification": Objective(token_classification_loss),
}


def objective_for(
    objective: Objective, *, label_smoothing: float = 0.0, class_weights: Sequence[float] | None = None
) -> Objective:
    """A task's objective with the run's loss settings (train.label_smoothing, the resolved class weights)."""
    options: dict = {"label_smoothing": label_smoothing} if label_smoothing else {}
    if class_weights is not None:
        options["class_weights"] = list(class_weights)
    if not options:
        return objective
    hidden = objective.hidden_loss
    if hidden is not None and label_smoothing:
        hidden = partial(hidden, label_smoothing=label_smoothing)
    return replace(objective, loss=partial(objective.loss, **options), hidden_loss=hidden)


def resolve_class_weights(
    setting: str | Sequence[float], label_ids: Sequence[int], n_labels: int
) -> list[float] | None:
    """train.class_weights as one weight per label index: None for 'none'; 'balanced' from the training label
    counts (scikit-learn's compute_class_weight: n_examples / (n_classes * count)); a list as given."""
    if setting == "none":
        return None
    if setting == "balanced":
        import numpy as np
        from sklearn.utils.class_weight import compute_class_weight

        return [
            float(w) for w in compute_class_weight("balanced", classes=np.arange(n_labels), y=np.asarray(label_ids))
        ]
    weights = [float(w) for w in setting]
    if len(weights) != n_labels:
        raise LmtuneError(
            f"train.class_weights: {len(weights)} weights for {n_labels} labels",
            hint="give one weight per label, in the sorted order of the label names, or 'balanced'",
        )
    return weights


def l2sp_penalty(params: Sequence[torch.Tensor], anchors: Sequence[torch.Tensor]) -> torch.Tensor:
    """L2-SP (Li et al., 2018, "Explicit Inductive Bias for Transfer Learning"): sum of (w - w0)^2 over the
    trainable parameters, w0 being their values before fine-tuning, in float32. Added to the loss it pulls the
    weights back toward the pre-trained ones, where plain weight decay would pull them toward zero."""
    total = torch.zeros((), dtype=torch.float32, device=params[0].device if params else None)
    for p, p0 in zip(params, anchors, strict=True):
        total = total + (p.float() - p0.float()).pow(2).sum()
    return total
