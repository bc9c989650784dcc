"""Preference losses (DPO and its variants, ORPO, SimPO, KTO, Bradley-Terry reward models) and the batch step that
computes them for lmtune's own loop.

Every loss reproduces the formula of trl 1.16 (the version lmtune trained these tasks with before), so a run moved
off trl optimises the same objective: each function names the trl code it matches, and tests/train compares losses
and gradients against trl's own code on the same batches. Losses come per pair (per example for KTO); the step
returns their sum and the pair count, so the loop normalises over a whole optimizer step as for every other task.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from lmtune.data.types import IGNORE

DPO_LOSS_TYPES = ("sigmoid", "hinge", "ipo", "robust", "bco_pair", "sppo_hard", "nca_pair", "apo_zero")
KINDS = ("dpo", "orpo", "simpo", "reward")

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
