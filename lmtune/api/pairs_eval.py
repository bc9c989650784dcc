"""`lmtune eval` of a preference run on held-out pairs: a reward model's pairwise accuracy and score margin, a DPO
policy's preference accuracy and implicit-reward margins (beta times the log-prob change from the reference), each
accuracy with a bootstrap confidence interval. The pairs are read and tokenized exactly as the run trained on them
(its columns, template, max_length and overlong rule), and the cut or dropped ones are counted."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lmtune.api.heads import EvalResult, head_result, refuse_unknown_metrics
from lmtune.config import RunConfig
from lmtune.data.load import load_records
from lmtune.data.pairs import PairRow, collate_pairs
from lmtune.data.preferences import load_align_splits, pairs_use_chat, parse_preferences
from lmtune.errors import LmtuneError
from lmtune.evaluate.bootstrap import bootstrap_ci
from lmtune.export import load_tuned
from lmtune.tasks import TASKS, TokenizeOptions

PAIR_METRICS = ("accuracy", "margin")


def evaluate_pairs(
    run_dir: Path,
    data: str | None,
    metrics: Sequence[str],
    limit: int | None,
    batch_size: int,
    save: bool,
    start: float,
) -> EvalResult:
    """A reward or DPO run scored on preference pairs (`data`, or the run's validation split)."""
    refuse_unknown_metrics(metrics, PAIR_METRICS, "preference",
                           "accuracy: share of pairs ranked right (with a 95% bootstrap interval); margin: mean chosen - "
                           "rejected")  # fmt: skip
    model, tokenizer, cfg = load_tuned(run_dir)
    pairs, source = _pairs(cfg, data)
    pairs = pairs[:limit]
    opts = TokenizeOptions(cfg.data.max_length, cfg.data.overlong, cfg.data.template,
                           chat=pairs_use_chat(cfg.data.template, pairs))  # fmt: skip
    task = TASKS[cfg.task]
    assert task.tokenize is not None
    rows, stats = task.tokenize(pairs, tokenizer, opts)
    if not rows:
        raise LmtuneError(f"{source}: no preference pair to evaluate", hint="check the file and data.max_length")
    if task.model == "reward":  # a score head; dpo's policy is a causal LM against its reference
        chosen, rejected = _reward_scores(model, rows, batch_size, tokenizer.pad_token_id)
        why = "reward: pairwise accuracy (chosen scored above rejected) and the mean score margin"
    else:
        chosen, rejected = _implicit_rewards(model, cfg, rows, batch_size, tokenizer.pad_token_id)
        why = f"dpo: preference accuracy and the implicit reward margin, beta {cfg.preference.beta:g} x log-prob change"
    ranked = ["chosen" if c > r else "rejected" for c, r in zip(chosen, rejected, strict=True)]
    ci = bootstrap_ci("accuracy", ranked, [("chosen",)] * len(ranked))
    margins = [c - r for c, r in zip(chosen, rejected, strict=True)]
    scores: dict[str, Any] = {
        "accuracy": ci.value,
        "accuracy_ci": [ci.low, ci.high],
        "margin": sum(margins) / len(margins),
        "chosen": sum(chosen) / len(chosen),
        "rejected": sum(rejected) / len(rejected),
    }
    if metrics:
        scores = {k: v for k, v in scores.items() if k.split("_")[0] in metrics}
    samples = [
        {
            "input": str(p.prompt),
            "reference": [str(p.chosen)],
            "outputs": {"tuned": f"chosen {c:.4f}, rejected {r:.4f}"},
        }
        for p, c, r in zip(pairs[:8], chosen, rejected, strict=False)
    ]
    extra = {"pairs": len(pairs), "truncated": stats.truncated, "dropped": stats.dropped}
    return head_result(run_dir, source, len(rows), why, {"tuned": scores}, samples, save=save, start=start, extra=extra)


def _pairs(cfg: RunConfig, data: str | None) -> tuple[list[Any], str]:
    if data is None:
        validation = load_align_splits(cfg.data, cfg.seed, cfg.task).validation
        if not validation:
            raise LmtuneError("the run has no validation pairs to evaluate on", hint="pass --data FILE")
        return validation, cfg.data.validation or f"{cfg.data.train} (the run's validation carve)"
    skipped: list[Any] | None = [] if cfg.data.on_bad_record == "skip" else None
    pairs, _ = parse_preferences(load_records(data), cfg.data.columns, skipped=skipped)
    return pairs, data


def _reward_scores(model: Any, rows: list[PairRow], batch_size: int, pad_id: int) -> tuple[list[float], list[float]]:
    """The reward model's score of every chosen and rejected sequence (one forward pass per batch of pairs)."""
    import torch

    chosen: list[float] = []
    rejected: list[float] = []
    with torch.no_grad():
        for i in range(0, len(rows), batch_size):
            batch = collate_pairs(rows[i : i + batch_size], pad_id)
            scores = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, 0].float()
            half = len(scores) // 2
            chosen += scores[:half].tolist()
            rejected += scores[half:].tolist()
    return chosen, rejected


def _implicit_rewards(
    model: Any, cfg: RunConfig, rows: list[PairRow], batch_size: int, pad_id: int
) -> tuple[list[float], list[float]]:
    """DPO's implicit rewards beta * (log p_policy - log p_reference) of both answers; the reference is the LoRA
    base with the adapter switched off, or the base model loaded again for full and freeze runs."""
    from lmtune.model import load_model
    from lmtune.train.preference_step import with_reference_logps

    policy = with_reference_logps(model, rows, batch_size, pad_id)
    if hasattr(model, "disable_adapter"):
        with model.disable_adapter():
            reference = with_reference_logps(model, rows, batch_size, pad_id)
    else:
        reference = with_reference_logps(load_model(cfg.model, "causal").eval(), rows, batch_size, pad_id)
    beta = cfg.preference.beta
    chosen = [beta * (p.ref_chosen_logp - r.ref_chosen_logp) for p, r in zip(policy, reference, strict=True)]
    rejected = [beta * (p.ref_rejected_logp - r.ref_rejected_logp) for p, r in zip(policy, reference, strict=True)]
    return chosen, rejected  # type: ignore[operator]
