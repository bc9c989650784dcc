"""One training or validation step of a preference objective on a batch of pairs: the policy's (and the
reference's) log-probs of both answers, the loss of `lmtune.train.preference`, and the pair metrics.

The log-probs come from the model's logits, or, given the output layer (`head`), from its last hidden states
through the chunked head (`lmtune.train.linear_ce`): only the answer positions reach the head and no
full-vocabulary logits are kept, which is where DPO's memory goes on a long batch of pairs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

import torch
from torch import Tensor, nn

from lmtune.data.pairs import PairRow, collate_pairs
from lmtune.data.types import IGNORE
from lmtune.train.linear_ce import sequence_logps_hidden
from lmtune.train.preference import (
    KINDS,
    dpo_loss,
    orpo_loss,
    reward_loss,
    sequence_logps,
    simpo_loss,
    token_logps,
)
from lmtune.train.reference import ADAPTER_DISABLED, PRECOMPUTED


@dataclass(frozen=True)
class PreferenceSettings:
    """The loss settings of `preference_step` (config `preference:` and trl's defaults)."""

    beta: float = 0.1
    loss_type: str = "sigmoid"  # dpo only
    label_smoothing: float = 0.0  # dpo robust, simpo
    simpo_gamma: float = 0.5
    # CPO's NLL weight on the chosen answers added to SimPO (trl's CPOConfig defaults to 1.0; SimPO proper is 0).
    cpo_alpha: float = 0.0
    center_rewards_coefficient: float | None = None  # reward

    @classmethod
    def of(cls, settings: PreferenceSettings | Mapping[str, Any] | None) -> PreferenceSettings:
        if settings is None or isinstance(settings, PreferenceSettings):
            return settings or cls()
        unknown = sorted(set(settings) - {f.name for f in fields(cls)})
        if unknown:  # a misspelt setting would otherwise train with the default silently
            raise ValueError(f"unknown preference settings {unknown}")
        return cls(**settings)


def _inputs(batch: Mapping[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    return {k: batch[k].to(device) for k in ("input_ids", "attention_mask") if k in batch}


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def reference_logps(
    model: torch.nn.Module,
    batch: Mapping[str, Tensor],
    reference: torch.nn.Module | str,
    head: nn.Linear | None = None,
) -> tuple[Tensor, Tensor]:
    """Reference log-probs of the chosen and rejected answers of a collated pair batch, without gradient.

    `reference`: ADAPTER_DISABLED (the peft policy `model` with its adapter switched off, so no second copy of the
    weights is held: trl's default for peft), PRECOMPUTED (read from the batch), or a frozen module.
    """
    if isinstance(reference, str) and reference == PRECOMPUTED:
        return batch["ref_chosen_logps"].float(), batch["ref_rejected_logps"].float()
    if isinstance(reference, str) and not hasattr(model, "disable_adapter"):
        model = getattr(model, "module", model)  # a DDP-wrapped peft model: switch the adapter of the inner one
    module = model if isinstance(reference, str) else reference
    if isinstance(reference, str) and reference != ADAPTER_DISABLED:
        raise ValueError(f"reference must be {ADAPTER_DISABLED!r}, {PRECOMPUTED!r} or a module, got {reference!r}")
    if isinstance(reference, str) and not hasattr(model, "disable_adapter"):
        raise ValueError("reference adapter_disabled needs a peft model: give a frozen copy of the model instead")
    adapter_off = model.disable_adapter() if isinstance(reference, str) else contextlib.nullcontext()
    device = _device(module)
    with torch.no_grad(), adapter_off:
        logps, _ = policy_logps(module, batch, device, head)
    return logps.chunk(2)


def policy_logps(
    model: torch.nn.Module, batch: Mapping[str, Tensor], device: torch.device, head: nn.Linear | None = None
) -> tuple[Tensor, Tensor]:
    """Per-sequence summed log-probs of the answers and their token counts: through the chunked head from the last
    hidden states when `head` is given (no full-vocabulary logits), else from the logits."""
    labels = batch["labels"].to(device)
    if head is not None:
        out = model(**_inputs(batch, device), use_cache=False, output_hidden_states=True, logits_to_keep=1)
        return sequence_logps_hidden(out.hidden_states[-1], head, labels)
    logits = model(**_inputs(batch, device), use_cache=False).logits
    return sequence_logps(logits, labels)


def preference_step(
    model: torch.nn.Module,
    batch: Mapping[str, Tensor],
    *,
    kind: str,
    settings: PreferenceSettings | Mapping[str, Any] | None = None,
    reference: torch.nn.Module | str | None = None,
    head: nn.Linear | None = None,
) -> tuple[Tensor, int, dict[str, float]]:
    """One micro-batch of pairs (from `lmtune.data.pairs.collate_pairs`: chosen rows, then rejected rows): the summed
    per-pair loss, the pair count and metrics summed over the pairs (divide by the pairs of a whole validation set):
    `accuracy` (pairs whose chosen reward is above the rejected one), `margin`, `reward_chosen`, `reward_rejected`,
    and for policies `logps_chosen`/`logps_rejected`.

    kind: dpo (needs `reference`; `head`, the model's output layer, computes its log-probs without logits), orpo,
    simpo (no reference), reward (`model` a sequence classifier with one label; its score is logits[:, 0]; an
    optional `margin` (pairs,) in the batch). One forward pass scores both answers.
    """
    s = PreferenceSettings.of(settings)
    device = _device(model)
    n_pairs = batch["input_ids"].shape[0] // 2
    if kind == "dpo":
        losses, chosen, rejected, r_chosen, r_rejected = _dpo(model, batch, s, reference, head, device)
    elif kind in ("orpo", "simpo", "reward"):
        logits = model(**_inputs(batch, device), use_cache=False).logits
        if kind == "reward":
            return _reward_step(logits, batch, s, n_pairs, device)
        labels = batch["labels"].to(device)
        per_token, mask = token_logps(logits, labels)
        logps, n_tokens = per_token.sum(-1), mask.sum(-1)
        chosen, rejected = logps.chunk(2)
        avg_chosen, avg_rejected = (logps / n_tokens.clamp(min=1)).chunk(2)
        if kind == "orpo":
            nll = _orpo_nll(logits, batch, device)
            losses, r_chosen, r_rejected = orpo_loss(avg_chosen, avg_rejected, nll, beta=s.beta)
        else:
            losses, r_chosen, r_rejected = simpo_loss(
                avg_chosen, avg_rejected, beta=s.beta, gamma=s.simpo_gamma, label_smoothing=s.label_smoothing
            )
            if s.cpo_alpha:
                # CPO's NLL: one token-mean over the chosen answers of the batch, as trl's nn.CrossEntropyLoss.
                nll = -per_token[:n_pairs].sum() / mask[:n_pairs].sum().clamp(min=1)
                losses = losses + s.cpo_alpha * nll
    else:
        raise ValueError(f"unknown preference kind {kind!r}: one of {', '.join(KINDS)}")
    metrics = _pair_metrics(r_chosen, r_rejected)
    metrics.update(logps_chosen=float(chosen.detach().sum()), logps_rejected=float(rejected.detach().sum()))
    return losses.sum(), n_pairs, metrics


def _dpo(
    model: torch.nn.Module,
    batch: Mapping[str, Tensor],
    s: PreferenceSettings,
    reference: torch.nn.Module | str | None,
    head: nn.Linear | None,
    device: torch.device,
) -> tuple[Tensor, ...]:
    """The DPO family's per-pair losses, the policy's log-probs and the implicit rewards of a batch of pairs."""
    if reference is None:
        raise ValueError("kind dpo needs a reference: ADAPTER_DISABLED, PRECOMPUTED or a frozen module")
    labels = batch["labels"].to(device)
    # The reference first: its forward (no gradient) is over before the policy's activations are kept for backward,
    # so the two never occupy memory together.
    ref_chosen, ref_rejected = reference_logps(model, batch, reference, head)
    logps, _ = policy_logps(model, batch, device, head)
    chosen, rejected = logps.chunk(2)
    # trl divides IPO's log-ratios by the completion mask's count before the shift (the labelled tokens).
    lengths = (labels != IGNORE).sum(-1).float().chunk(2)
    losses, r_chosen, r_rejected = dpo_loss(
        chosen,
        rejected,
        ref_chosen.to(device),
        ref_rejected.to(device),
        beta=s.beta,
        loss_type=s.loss_type,
        label_smoothing=s.label_smoothing,
        chosen_lengths=lengths[0],
        rejected_lengths=lengths[1],
    )
    return losses, chosen, rejected, r_chosen, r_rejected


def _orpo_nll(logits: Tensor, batch: Mapping[str, Tensor], device: torch.device) -> Tensor:
    """trl's ORPO NLL: token-mean cross-entropy over the chosen sequences, prompt included (trl labels every
    attended token there, 'computed over the full prompt and response'), padding left out."""
    n_pairs = batch["input_ids"].shape[0] // 2
    ids = batch["input_ids"][:n_pairs].to(device)
    attended = batch["attention_mask"][:n_pairs].to(device) if "attention_mask" in batch else torch.ones_like(ids)
    per_token, mask = token_logps(logits[:n_pairs], ids.masked_fill(attended == 0, IGNORE))
    return -per_token.sum() / mask.sum().clamp(min=1)


def _reward_step(
    logits: Tensor, batch: Mapping[str, Tensor], s: PreferenceSettings, n_pairs: int, device: torch.device
) -> tuple[Tensor, int, dict[str, float]]:
    scores = logits[:, 0].float()
    chosen, rejected = scores.chunk(2)
    margin = batch["margin"].to(device).float() if "margin" in batch else None
    losses = reward_loss(chosen, rejected, margin, s.center_rewards_coefficient)
    return losses.sum(), n_pairs, _pair_metrics(chosen.detach(), rejected.detach())


def _pair_metrics(chosen: Tensor, rejected: Tensor) -> dict[str, float]:
    return {
        "accuracy": float((chosen > rejected).float().sum()),  # strictly above, as trl: a tie is not a win
        "margin": float((chosen - rejected).sum()),
        "reward_chosen": float(chosen.sum()),
        "reward_rejected": float(rejected.sum()),
    }


@torch.no_grad()
def with_reference_logps(
    model: torch.nn.Module,
    rows: list[PairRow],
    batch_size: int,
    pad_id: int,
    autocast: Any = contextlib.nullcontext,
    head: nn.Linear | None = None,
) -> list[PairRow]:
    """The rows with the reference's log-probs of both answers, computed once by `model` as it is now (before
    training: the reference of full and freeze runs), in eval mode, so no second copy of the model is held."""
    was_training = model.training
    model.eval()
    out: list[PairRow] = []
    for i in range(0, len(rows), batch_size):
        part = rows[i : i + batch_size]
        with autocast():  # a fresh context each batch (accelerate's autocast enters once)
            chosen, rejected = reference_logps(model, collate_pairs(part, pad_id), model, head)
        out += [
            replace(r, ref_chosen_logp=float(c), ref_rejected_logp=float(j))
            for r, c, j in zip(part, chosen.tolist(), rejected.tolist(), strict=True)
        ]
    model.train(was_training)
    return out
