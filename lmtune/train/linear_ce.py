"""The language-model head and its cross-entropy in one pass over the trained positions, chunk by chunk.

A causal LM's usual loss computes full-vocabulary logits for every position of the batch (prompt and padding
included), upcasts them to float32 and keeps them, and their softmax, for the backward pass: for a 150k vocabulary
and 8 x 512 tokens that is 2.5 GB, more than the rest of a small model's activations. Here the head runs only at
the positions whose next token is trained, `CHUNK_ELEMENTS` logits at a time, and each chunk's gradients (with
respect to the hidden states and, when the head trains, its weight) are computed in the forward pass and the
logits dropped at once; the backward pass only scales them. Liger-Kernel's fused linear cross-entropy does the
same with Triton kernels (GPU only); torch and transformers have no such op, hence this small one in plain torch.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from lmtune.data.types import IGNORE

# Logits per chunk: 2^23 float32 values (32 MiB), e.g. 1,048 positions of an 8,000-token vocabulary.
CHUNK_ELEMENTS = 1 << 23


class _LinearCrossEntropy(torch.autograd.Function):
    """sum_i CE(h_i W^T + b, t_i) with label smoothing eps; gradients computed in the forward pass."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        targets: torch.Tensor,
        smoothing: float,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        vocab = weight.shape[0]
        need_h, need_w = hidden.requires_grad, weight.requires_grad
        need_b = bias is not None and bias.requires_grad
        grad_h = torch.empty_like(hidden) if need_h else None
        acc = torch.promote_types(dtype, torch.float32)
        grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_w else None
        grad_b = torch.zeros(vocab, dtype=acc, device=weight.device) if need_b else None
        w = weight.to(dtype)
        total = torch.zeros((), dtype=acc, device=hidden.device)
        step = max(1, CHUNK_ELEMENTS // vocab)
        with torch.autocast(hidden.device.type, enabled=False):
            for s in range(0, hidden.shape[0], step):
                h = hidden[s : s + step].to(dtype)
                t = targets[s : s + step]
                logits = (h @ w.T).to(acc)  # the softmax's precision: at least float32
                if bias is not None:
                    logits += bias.to(acc)
                lse = logits.logsumexp(-1)
                nll = lse - logits.gather(1, t[:, None]).squeeze(1)
                loss = nll if not smoothing else (1 - smoothing) * nll + smoothing * (lse - logits.mean(-1))
                total += loss.sum()
                if not (need_h or need_w or need_b):
                    continue
                # d loss / d logits = softmax - (1 - eps) * onehot - eps / V, computed in place over the logits.
                grad = logits.sub_(lse[:, None]).exp_()
                grad[torch.arange(len(t), device=t.device), t] -= 1 - smoothing
                if smoothing:
                    grad -= smoothing / vocab
                if grad_b is not None:
                    grad_b += grad.sum(0)
                grad = grad.to(dtype)
                if grad_h is not None:
                    grad_h[s : s + step] = (grad @ w).to(hidden.dtype)
                if grad_w is not None:
                    grad_w += (grad.T @ h).to(acc)
        ctx.save_for_backward(
            *(g if g is not None else torch.empty(0) for g in (grad_h, grad_w, grad_b)),
        )
        ctx.needs = (need_h, need_w, need_b)
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple:  # type: ignore[override]
        grad_h, grad_w, grad_b = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs
        return (
            grad_h * grad_out if need_h else None,
            (grad_w * grad_out).to(ctx.weight_dtype) if need_w else None,
            (grad_b * grad_out).to(ctx.weight_dtype) if need_b else None,
            None,
            None,
            None,
        )


def linear_cross_entropy(
    hidden: torch.Tensor,
    head: nn.Linear,
    targets: torch.Tensor,
    *,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Summed cross-entropy of `head(hidden)` (N, d) against `targets` (N,), without keeping the logits.

    Under autocast the head runs in the autocast dtype (as the model's own head would); the softmax in float32.
    """
    device = hidden.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else head.weight.dtype
    return _LinearCrossEntropy.apply(hidden, head.weight, head.bias, targets, label_smoothing, dtype)


def output_head(model: nn.Module) -> nn.Linear | None:
    """The plain linear output layer the chunked loss can use in place of the model's logits, or None when the
    model's logits are more than `hidden @ W^T + b` (soft-capping, scaling) or the head is adapted or wrapped
    (peft modules_to_save, LoRA on the head) or the model cannot skip computing its logits (`logits_to_keep`)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return None
    if any(getattr(config, k, None) not in (None, 1, 1.0) for k in ("final_logit_softcapping", "logit_scale")):
        return None
    if "logits_to_keep" not in inspect.signature(base.forward).parameters:
        return None
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    return head if type(head) is nn.Linear else None


def causal_hidden_loss(
    hidden: torch.Tensor, head: nn.Linear, labels: torch.Tensor, *, label_smoothing: float = 0.0
) -> tuple[torch.Tensor, int]:
    """Next-token cross-entropy from the last hidden states: `causal_lm_loss` without full-vocabulary logits.

    Prompt tuning prepends virtual tokens: only the last positions, those of the real tokens, are scored.
    """
    if hidden.shape[1] > labels.shape[1]:
        hidden = hidden[:, hidden.shape[1] - labels.shape[1] :]
    shift_labels = labels[:, 1:]
    mask = shift_labels != IGNORE
    n = int(mask.sum())
    if n == 0:
        return hidden.sum() * 0.0, 0
    loss = linear_cross_entropy(hidden[:, :-1][mask], head, shift_labels[mask], label_smoothing=label_smoothing)
    return loss, n


def sequence_logps_hidden(
    hidden: torch.Tensor, head: nn.Linear, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence summed log-probs of the labelled next tokens, and their counts: what
    `lmtune.train.preference.sequence_logps` computes from logits, here from the last hidden states through the
    chunked head, one sequence at a time (each sequence's gradient is one scalar, which the chunked function's
    backward scales by), so only the labelled positions reach the head and no logits are kept."""
    shift = labels[:, 1:]
    mask = shift != IGNORE
    logps = [
        -linear_cross_entropy(hidden[i, :-1][mask[i]], head, shift[i][mask[i]])
        if mask[i].any()
        else hidden[i].sum() * 0
        for i in range(hidden.shape[0])
    ]
    return torch.stack([x.float() for x in logps]), mask.sum(-1)
