"""Preference losses (DPO and its variants, ORPO, SimPO, KTO, Bradley-Terry reward models) and the batch step that
computes them for lmtune's own loop.

Every loss reproduces the formula of trl 1.16 (the version lmtune trained these tasks with before), so a run moved
off trl optimises the same objective: each function names the trl code it matches, and tests/train compares losses
and gradients against trl's own code on the same batches. Losses come per pair (per example for KTO); the step
returns their sum and the pair count, so the loop normalises over a whole optimizer step as for every other task.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F

from lmtune.data.tokenize import IGNORE

DPO_LOSS_TYPES = ("sigmoid", "hinge", "ipo", "robust", "bco_pair", "sppo_hard", "nca_pair", "apo_zero")
KINDS = ("dpo", "orpo", "simpo", "reward")
# `reference` of `preference_step`: the policy itself with its peft adapter switched off, or log-probs computed once
# before training and carried in the batch (`ref_chosen_logps`, `ref_rejected_logps`); else a frozen module.
ADAPTER_DISABLED = "adapter_disabled"
PRECOMPUTED = "precomputed"

Tensor = torch.Tensor


class _RowLogSumExp(torch.autograd.Function):
    """logsumexp over the vocabulary in float32, one sequence at a time, keeping only the logits themselves (in
    their own dtype) for the backward pass: torch's logsumexp of `logits.float()` would keep a float32 copy of a
    bf16 batch's logits, and log_softmax a whole (batch, tokens, vocab) float32 result, until the backward."""

    @staticmethod
    def forward(ctx: Any, logits: Tensor) -> Tensor:  # type: ignore[override]
        out = torch.stack([torch.logsumexp(row.float(), dim=-1) for row in logits])
        ctx.save_for_backward(logits, out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:  # type: ignore[override]
        logits, out = ctx.saved_tensors
        grad_in = torch.empty_like(logits)
        for i, row in enumerate(logits):  # d lse / d x = softmax(x), rebuilt one sequence at a time
            grad_in[i] = (torch.exp(row.float() - out[i, :, None]) * grad[i, :, None]).to(logits.dtype)
        return grad_in


def token_logps(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Log-probability (float32) of each next token and the mask of the labelled ones, both (batch, tokens - 1).

    log p = logit[label] - logsumexp(logits), with the logsumexp of `_RowLogSumExp`: at most one sequence's float32
    (tokens x vocab) at a time. Prompt tuning prepends virtual tokens: only the last logits, the real tokens', count.
    """
    if logits.shape[1] > labels.shape[1]:
        logits = logits[:, logits.shape[1] - labels.shape[1] :, :]
    logits = logits[:, :-1, :]
    targets = labels[:, 1:]
    mask = targets != IGNORE
    picked = logits.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1).float()
    norm = _RowLogSumExp.apply(logits)
    return torch.where(mask, picked - norm, torch.zeros_like(picked)), mask


def sequence_logps(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Per-sequence sums of the log-probabilities of the labelled next tokens (causal shift, IGNORE left out), in
    float32, and the number of those tokens: ((batch,), (batch,)). trl's `get_batch_logps` / fused LM head sum."""
    logps, mask = token_logps(logits, labels)
    return logps.sum(-1), mask.sum(-1)


def dpo_loss(
    chosen_logps: Tensor,
    rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    *,
    beta: float,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    chosen_lengths: Tensor | None = None,
    rejected_lengths: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-pair DPO losses and the implicit rewards beta * (log pi - log pi_ref) of both answers (detached).

    DPO: Rafailov et al. 2023, "Direct Preference Optimization" (https://arxiv.org/abs/2305.18290). Each loss type
    is trl 1.16's `DPOTrainer._compute_loss` (reverse-KL divergence, no length weighting, one loss type):
      sigmoid   -log sigmoid(beta * delta), delta the difference of the two log-ratios (label_smoothing unused, as
                in trl 1.16; use `robust` for noisy labels);
      hinge     relu(1 - beta * delta) (SLiC, Zhao et al. 2023);
      ipo       (delta' - 1 / (2 beta))^2, delta' from log-ratios divided by each answer's completion length: trl
                normalises by length (confirmed with the IPO authors, Azar et al. 2023), so `chosen_lengths` and
                `rejected_lengths` (completion token counts) are required;
      robust    the label-noise-robust loss of Chowdhury et al. 2024 (needs label_smoothing < 0.5);
      bco_pair  -log sigmoid(r_chosen) - log sigmoid(-r_rejected) (Jung et al. 2024): trl 1.16 has no running reward
                mean here, so nothing outside the batch is needed;
      sppo_hard (logratio_c - 1/(2 beta))^2 + (logratio_r + 1/(2 beta))^2 (Wu et al. 2024, hard-label SPPO);
      nca_pair  -log sigmoid(r_c) - 0.5 log sigmoid(-r_c) - 0.5 log sigmoid(-r_r) (Chen et al. 2024);
      apo_zero  1 - sigmoid(r_c) + sigmoid(r_r) (D'Oosterlinck et al. 2024, eq. 7).
    """
    chosen_logratios = chosen_logps - ref_chosen_logps
    rejected_logratios = rejected_logps - ref_rejected_logps
    delta = chosen_logratios - rejected_logratios
    r_chosen, r_rejected = beta * chosen_logratios, beta * rejected_logratios
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(beta * delta)
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * delta)
    elif loss_type == "ipo":
        if chosen_lengths is None or rejected_lengths is None:
            raise ValueError("loss_type ipo normalises by completion length: pass chosen_lengths and rejected_lengths")
        ipo_delta = chosen_logratios / chosen_lengths.clamp(min=1.0) - rejected_logratios / rejected_lengths.clamp(
            min=1.0
        )
        losses = (ipo_delta - 1 / (2 * beta)) ** 2
    elif loss_type == "robust":
        clean = -(1 - label_smoothing) * F.logsigmoid(beta * delta)
        flipped = -label_smoothing * F.logsigmoid(-beta * delta)
        losses = (clean - flipped) / (1 - 2 * label_smoothing)
    elif loss_type == "bco_pair":
        losses = -F.logsigmoid(r_chosen) - F.logsigmoid(-r_rejected)
    elif loss_type == "sppo_hard":
        losses = (chosen_logratios - 0.5 / beta) ** 2 + (rejected_logratios + 0.5 / beta) ** 2
    elif loss_type == "nca_pair":
        losses = -F.logsigmoid(r_chosen) - 0.5 * F.logsigmoid(-r_chosen) - 0.5 * F.logsigmoid(-r_rejected)
    elif loss_type == "apo_zero":
        losses = 1 - torch.sigmoid(r_chosen) + torch.sigmoid(r_rejected)
    else:
        raise ValueError(f"unknown DPO loss_type {loss_type!r}: one of {', '.join(DPO_LOSS_TYPES)}")
    return losses, r_chosen.detach(), r_rejected.detach()


def orpo_loss(
    chosen_logps: Tensor, rejected_logps: Tensor, chosen_nll: Tensor | float, *, beta: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-pair ORPO losses chosen_nll - beta * log sigmoid(log odds ratio), and the rewards beta * logps (detached).

    ORPO: Hong et al. 2024, "ORPO: Monolithic Preference Optimization without Reference Model"
    (https://arxiv.org/abs/2403.07691), eqs. 4-7. `chosen_logps` and `rejected_logps` are length-averaged
    log-probabilities of the answers; odds(y) = p / (1 - p), computed in log space with a stable log(1 - exp(x)).
    Matches trl 1.16's `ORPOTrainer.odds_ratio_loss` and `get_batch_loss_metrics`, whose NLL is one token-mean over
    the batch's chosen sequences: pass that scalar as `chosen_nll` and the mean of these losses is trl's loss.
    """
    chosen_logps, rejected_logps = chosen_logps.float(), rejected_logps.float()
    log_odds = (chosen_logps - rejected_logps) - (_log1mexp(chosen_logps) - _log1mexp(rejected_logps))
    losses = chosen_nll - beta * F.logsigmoid(log_odds)
    return losses, beta * chosen_logps.detach(), beta * rejected_logps.detach()


def _log1mexp(x: Tensor) -> Tensor:
    # log(1 - exp(x)) for x < 0, branching at -ln 2 to avoid cancellation (Maechler 2012), as trl's log1mexp.
    return torch.where(x < -0.6931471805599453, torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def simpo_loss(
    chosen_logps: Tensor, rejected_logps: Tensor, *, beta: float, gamma: float, label_smoothing: float = 0.0
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-pair SimPO losses -log sigmoid(beta * (avg logp_c - avg logp_r) - gamma) and rewards beta * avg logps.

    SimPO: Meng et al. 2024, "SimPO: Simple Preference Optimization with a Reference-Free Reward"
    (https://arxiv.org/abs/2405.14734), eq. 6: `chosen_logps`/`rejected_logps` are length-averaged, gamma the target
    margin. Matches trl 1.16's `CPOTrainer.cpo_loss` with loss_type simpo (alpha 0), label smoothing included.
    """
    logits = (chosen_logps - rejected_logps) - gamma / beta
    losses = -F.logsigmoid(beta * logits) * (1 - label_smoothing) - F.logsigmoid(-beta * logits) * label_smoothing
    return losses, beta * chosen_logps.detach(), beta * rejected_logps.detach()


def kto_kl(kl_logps: Tensor, ref_kl_logps: Tensor) -> Tensor:
    """KTO's reference point: the batch mean of log pi - log pi_ref on mismatched (prompt, answer) pairs, detached
    and clamped at 0 (trl 1.16 `KTOTrainer._compute_loss`; one process: trl also averages it over processes)."""
    return (kl_logps - ref_kl_logps).mean().detach().clamp(min=0)


def kto_loss(
    chosen_logps: Tensor,
    ref_chosen_logps: Tensor,
    rejected_logps: Tensor,
    ref_rejected_logps: Tensor,
    kl: Tensor | float,
    *,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
    loss_type: str = "kto",
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-example KTO losses (desirable first, then undesirable, each weighted) and the rewards of both groups.

    KTO: Ethayarajh et al. 2024, "KTO: Model Alignment as Prospect Theoretic Optimization"
    (https://arxiv.org/abs/2402.01306), eq. 7: 1 - sigmoid(beta (r - KL)) for desirable answers, 1 - sigmoid(beta
    (KL - r)) for undesirable ones, r the log-ratio to the reference and KL from `kto_kl`. loss_type
    apo_zero_unpaired drops KL (APO, D'Oosterlinck et al. 2024). Matches trl 1.16's `KTOTrainer._compute_loss`,
    whose loss is the mean of these (examples are unpaired: normalise by their count, not by pairs).
    """
    chosen_logratios = chosen_logps - ref_chosen_logps
    rejected_logratios = rejected_logps - ref_rejected_logps
    if loss_type == "kto":
        chosen_losses = 1 - torch.sigmoid(beta * (chosen_logratios - kl))
        rejected_losses = 1 - torch.sigmoid(beta * (kl - rejected_logratios))
    elif loss_type == "apo_zero_unpaired":
        chosen_losses = 1 - torch.sigmoid(beta * chosen_logratios)
        rejected_losses = torch.sigmoid(beta * rejected_logratios)
    else:
        raise ValueError(f"unknown KTO loss_type {loss_type!r}: kto or apo_zero_unpaired")
    losses = torch.cat((desirable_weight * chosen_losses, undesirable_weight * rejected_losses))
    return losses, beta * chosen_logratios.detach(), beta * rejected_logratios.detach()


def reward_loss(
    chosen_scores: Tensor,
    rejected_scores: Tensor,
    margin: Tensor | None = None,
    center_rewards_coefficient: float | None = None,
) -> Tensor:
    """Per-pair Bradley-Terry losses -log sigmoid(s_chosen - s_rejected - margin) of a reward model's scores.

    Bradley & Terry 1952; as a reward-model loss Ouyang et al. 2022 ("Training language models to follow
    instructions with human feedback", eq. 1), the margin from Touvron et al. 2023 (Llama 2) and the centring term
    coefficient * (s_c + s_r)^2 from Eisenstein et al. 2023. Matches trl 1.16's `RewardTrainer.compute_loss`: the mean
    of these losses is its loss (its centring term is a mean over pairs as well).
    """
    diff = chosen_scores.float() - rejected_scores.float()
    if margin is not None:
        diff = diff - margin
    losses = -F.logsigmoid(diff)
    if center_rewards_coefficient is not None:
        losses = losses + center_rewards_coefficient * (chosen_scores.float() + rejected_scores.float()) ** 2
    return losses


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
    model: torch.nn.Module, batch: Mapping[str, Tensor], reference: torch.nn.Module | str
) -> tuple[Tensor, Tensor]:
    """Reference log-probs of the chosen and rejected answers of a collated pair batch, without gradient.

    `reference`: ADAPTER_DISABLED (the peft policy `model` with its adapter switched off, so no second copy of the
    weights is held: trl's default for peft), PRECOMPUTED (read from the batch), or a frozen module.
    """
    if isinstance(reference, str) and reference == PRECOMPUTED:
        return batch["ref_chosen_logps"].float(), batch["ref_rejected_logps"].float()
    module = model if isinstance(reference, str) else reference
    if isinstance(reference, str) and reference != ADAPTER_DISABLED:
        raise ValueError(f"reference must be {ADAPTER_DISABLED!r}, {PRECOMPUTED!r} or a module, got {reference!r}")
    if isinstance(reference, str) and not hasattr(model, "disable_adapter"):
        raise ValueError("reference adapter_disabled needs a peft model: give a frozen copy of the model instead")
    adapter_off = model.disable_adapter() if isinstance(reference, str) else contextlib.nullcontext()
    device = _device(module)
    with torch.no_grad(), adapter_off:
        logits = module(**_inputs(batch, device), use_cache=False).logits
        logps, _ = sequence_logps(logits, batch["labels"].to(device))
    return logps.chunk(2)


def preference_step(
    model: torch.nn.Module,
    batch: Mapping[str, Tensor],
    *,
    kind: str,
    settings: PreferenceSettings | Mapping[str, Any] | None = None,
    reference: torch.nn.Module | str | None = None,
) -> tuple[Tensor, int, dict[str, float]]:
    """One micro-batch of pairs (from `lmtune.data.pairs.collate_pairs`: chosen rows, then rejected rows): the summed
    per-pair loss, the pair count and metrics summed over the pairs (divide by the pairs of a whole validation set):
    `accuracy` (pairs whose chosen reward is above the rejected one), `margin`, `reward_chosen`, `reward_rejected`,
    and for policies `logps_chosen`/`logps_rejected`.

    kind: dpo (needs `reference`), orpo, simpo (no reference), reward (`model` a sequence classifier with one label;
    its score is logits[:, 0]; an optional `margin` (pairs,) in the batch). One forward pass scores both answers.
    """
    s = PreferenceSettings.of(settings)
    device = _device(model)
    n_pairs = batch["input_ids"].shape[0] // 2
    logits = model(**_inputs(batch, device), use_cache=False).logits
    if kind == "reward":
        return _reward_step(logits, batch, s, n_pairs, device)
    labels = batch["labels"].to(device)
    per_token, mask = token_logps(logits, labels)
    logps, n_tokens = per_token.sum(-1), mask.sum(-1)
    chosen, rejected = logps.chunk(2)
    if kind == "dpo":
        if reference is None:
            raise ValueError("kind dpo needs a reference: ADAPTER_DISABLED, PRECOMPUTED or a frozen module")
        ref_chosen, ref_rejected = reference_logps(model, batch, reference)
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
    elif kind in ("orpo", "simpo"):
        avg = logps / n_tokens.clamp(min=1)
        avg_chosen, avg_rejected = avg.chunk(2)
        if kind == "orpo":
            losses, r_chosen, r_rejected = orpo_loss(
                avg_chosen, avg_rejected, _orpo_nll(logits, batch, device), beta=s.beta
            )
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
