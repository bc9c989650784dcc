"""Catastrophic forgetting: how much worse a model predicts general text after fine-tuning than before.

The measure is the causal-LM loss on a general reference text (a shipped sample or the user's own), cut into
chunks of `max_length` tokens and scored on every token, as pretraining scored it: the tokenizer's BOS (if it
adds one to raw text) starts each chunk, like `lmtune.data.tokenize` does for raw-text examples. The ratio of the
loss after training to the loss before says how much general ability the fine-tune cost: 1.0 is none, 1.1 is a
10% higher loss (the default warning threshold).

A hand-written loop rather than `evaluate.load("perplexity")`: that metric loads its own model by name and scores
one text at a time; here the model is the one in memory (the run's base or tuned model) and the chunks are batched.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from lmtune.data.batching import Row, collate
from lmtune.data.long_text import special_affixes
from lmtune.data.types import IGNORE
from lmtune.errors import LmtuneError
from lmtune.train.objectives import causal_lm_loss

DEFAULT_THRESHOLD = 1.1
DEFAULT_MAX_TOKENS = 16384


def general_rows(
    tokenizer: PreTrainedTokenizerBase,
    text: str,
    *,
    max_length: int = 256,
    stride: int | None = None,
    max_tokens: int | None = DEFAULT_MAX_TOKENS,
) -> list[Row]:
    """The text as rows of at most max_length tokens whose labels score each token of the text once.

    With `stride` below the chunk length the chunks overlap: each starts `stride` tokens after the previous one
    and scores only the tokens not scored before, so every token is predicted with at least
    `chunk - stride` tokens of context (the sliding-window perplexity of the transformers docs). By default the
    chunks follow each other (overlapping by one token when the tokenizer adds no BOS). At most `max_tokens`
    tokens are scored (the first ones of the text).
    """
    prefix, _ = special_affixes(tokenizer)
    window = max_length - len(prefix)
    if window < 2:
        raise LmtuneError(f"max_length {max_length} leaves no room for text after the special tokens")
    if stride is None:
        # Without a BOS to start a chunk on, a chunk's first token is never predicted: overlap chunks by one token so
        # that it is (as the previous chunk's last), and every token of the text but the first is scored.
        stride = window if prefix else window - 1
    if not 0 < stride <= window:
        raise LmtuneError(f"stride must be between 1 and {window} (the chunk length), got {stride}")
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    budget = math.inf if max_tokens is None else max_tokens
    rows: list[Row] = []
    scored_until, scored = 0, 0  # text position up to which tokens were scored; tokens scored so far
    for start in range(0, len(ids), stride):
        chunk = ids[start : start + window]
        row_ids = [*prefix, *chunk]
        # A position is scored when the row predicts it (not the row's first token) and no earlier row did.
        first_new = max(scored_until - start, 0 if prefix else 1)
        take = int(min(len(chunk) - first_new, budget - scored))
        if take <= 0:
            if budget - scored <= 0:
                break
            continue
        labels = [IGNORE] * len(row_ids)
        for j in range(first_new, first_new + take):
            labels[len(prefix) + j] = chunk[j]
        end = len(prefix) + first_new + take
        rows.append(Row(row_ids[:end], labels[:end]))
        scored += take
        scored_until = start + first_new + take
        if start + window >= len(ids) or scored >= budget:
            break
    if not rows:
        raise LmtuneError("the general text is too short to score (it needs at least two tokens)")
    return rows


@torch.no_grad()
def rows_loss(model: torch.nn.Module, rows: list[Row], pad_id: int, batch_size: int = 8) -> dict[str, float]:
    """Token-weighted mean next-token loss and perplexity of a model over rows, on the model's device."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, n, correct = 0.0, 0, 0
    try:
        with torch.no_grad():
            for i in range(0, len(rows), batch_size):
                batch = collate(rows[i : i + batch_size], pad_id)
                inputs = {k: v.to(device) for k, v in batch.items() if k != "labels"}
                logits = model(**inputs, use_cache=False).logits
                labels = batch["labels"].to(device)
                loss, count = causal_lm_loss(logits, labels)
                total += float(loss)
                n += count
                # Mean token accuracy: the logits at t predict the token at t + 1.
                scored = labels[:, 1:] != IGNORE
                correct += int((logits[:, :-1].argmax(-1) == labels[:, 1:])[scored].sum())
    finally:
        model.train(was_training)
    mean = total / max(n, 1)
    return {"loss": mean, "perplexity": math.exp(min(mean, 50.0)), "tokens": n, "token_accuracy": correct / max(n, 1)}


def general_loss(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    text: str | Path,
    *,
    max_length: int = 256,
    stride: int | None = None,
    batch_size: int = 8,
    max_tokens: int | None = DEFAULT_MAX_TOKENS,
) -> dict[str, float]:
    """{"loss", "perplexity", "tokens"} of a causal LM on a general text (a string, or a Path to read)."""
    if isinstance(text, Path):
        text = text.read_text(encoding="utf-8")
    rows = general_rows(tokenizer, text, max_length=max_length, stride=stride, max_tokens=max_tokens)
    return rows_loss(model, rows, _pad_id(tokenizer), batch_size)


def forgetting_report(
    before: dict[str, float],
    after: dict[str, float],
    threshold: float = DEFAULT_THRESHOLD,
    *,
    vocab_size: int | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The before/after general losses as the run records them: `ratio` is after_loss / before_loss (losses,
    not perplexities: a perplexity ratio is exp of the loss difference and grows much faster), and `warning`
    says whether it exceeds the threshold.

    A base model that predicts the general text no better than chance (loss within 2% of ln(vocab_size): a
    randomly initialised one, such as the built-in preset) knows nothing to forget: no warning then.
    """
    ratio = after["loss"] / before["loss"] if before["loss"] > 0 else math.inf
    untrained = vocab_size is not None and before["loss"] >= 0.98 * math.log(vocab_size)
    return {
        **extra,
        "before": before,
        "after": after,
        "ratio": ratio,
        "ratio_of": "loss",
        "perplexity_ratio": after["perplexity"] / before["perplexity"],
        "threshold": threshold,
        "untrained_base": untrained,
        "warning": ratio > threshold and not untrained,
    }


def forgetting(
    base_model: torch.nn.Module,
    tuned_model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    text: str | Path,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    **kwargs: Any,
) -> dict[str, Any]:
    """General-text loss of the base and the tuned model on the same chunks, their ratio and the warning flag.

    `kwargs` go to `general_loss` (max_length, stride, batch_size, max_tokens).
    """
    before = general_loss(base_model, tokenizer, text, **kwargs)
    after = general_loss(tuned_model, tokenizer, text, **kwargs)
    return forgetting_report(before, after, threshold)


def forgetting_advice(report: dict[str, Any], method: str | None = None) -> str:
    """One line for the console: the figures, and what to do when they are over the threshold (`method`: the
    run's fine-tuning method, so that a LoRA run is not told to use LoRA)."""
    line = (
        f"general-text loss {report['before']['loss']:.4f} before training, {report['after']['loss']:.4f} after "
        f"(x{report['ratio']:.3f}; perplexity {report['before']['perplexity']:.2f} -> "
        f"{report['after']['perplexity']:.2f})"
    )
    if report.get("untrained_base"):
        return f"{line}: the base model predicts this text no better than chance, so it had nothing to forget"
    if not report["warning"]:
        return line
    lora = "use LoRA instead of full fine-tuning, " if method in ("full", "freeze") else ""
    return (
        f"{line}: above the forgetting threshold x{report['threshold']:g}; the model lost some general ability. "
        f"Mix general text into training (data.replay), pull the weights toward the base (train.l2sp), {lora}"
        "or train fewer steps / with a lower lr"
    )


def _pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return 0 if pad is None else int(pad)
