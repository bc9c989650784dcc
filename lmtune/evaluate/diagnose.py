"""Over- and underfitting diagnosis from a run's loss curves, as plain advice a person can act on.

The rules are the ones an ML engineer applies by eye to a loss plot: validation loss rising while training
loss falls (overfitting), a wide gap between the two (memorising), a training loss that barely moved or
plateaued high (underfitting), a curve still falling at the end (stopped too early), and losses that blew up
(divergence). Each finding carries the figures it is based on, so the advice can be checked against the plot.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Thresholds:
    rise: float = 0.05  # validation loss this far (relative) above its best, after it, is overfitting
    gap: float = 0.35  # validation minus training loss (nats) at the end beyond this is a generalisation gap
    plateau: float = 0.1  # training loss falling less than this share of its start is underfitting
    still_falling: float = 0.01  # validation loss still improving this much (relative) per evaluation at the end


@dataclass(frozen=True)
class Finding:
    kind: str  # overfitting | gap | underfitting | not_converged | diverged
    message: str
    advice: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def diagnose(records: Sequence[Mapping[str, Any]], thresholds: Thresholds = Thresholds()) -> list[Finding]:
    """Findings from a run's metrics.jsonl records (``split`` train/validation, ``step``, ``loss``)."""
    # Skipped updates (a non-finite loss, see lmtune.train.guard) are not part of the curve; they are reported apart.
    train = [
        (r["step"], r["loss"]) for r in records if r.get("split") == "train" and "loss" in r and not r.get("skipped")
    ]
    val = [(r["step"], r["loss"]) for r in records if r.get("split") == "validation" and "loss" in r]
    if not train:
        return _step_findings(records)
    if any(not _finite(loss) for _, loss in train + val):
        step = next(s for s, loss in train + val if not _finite(loss))
        # metrics.jsonl holds a non-finite loss as null (JSON has no NaN); older runs wrote NaN itself.
        kind = "infinite" if all(v is None or math.isinf(v) for _, v in train + val if not _finite(v)) else "NaN"
        kind = "not a finite number" if any(v is None for _, v in train + val) else kind
        return [Finding("diverged", f"the loss became {kind} at step {step}", _DIVERGED_ADVICE)]
    findings: list[Finding] = _step_findings(records)
    first, last = _smooth_start(train), _smooth_end(train)
    after_training = [v for v in val if v[0] > 0]
    if len(after_training) >= 2:
        best_step, best = min(after_training, key=lambda v: v[1])
        end_step, end = after_training[-1]
        train_at_best = _train_near(train, best_step)
        if end > best * (1 + thresholds.rise) and last < train_at_best:
            findings.append(
                Finding(
                    "overfitting",
                    f"validation loss rose from {best:.4f} (step {best_step}) to {end:.4f} (step {end_step}) while "
                    f"training loss kept falling ({train_at_best:.4f} -> {last:.4f})",
                    f"train for fewer steps (the lowest validation loss was at step {best_step}; final/ holds the "
                    "best evaluation by default, and train.early_stopping stops the run there), add data, or "
                    "regularise more: train.weight_decay, dropout, a smaller LoRA rank, a lower lr",
                )
            )
    if val:
        end = val[-1][1]
        if end - last > thresholds.gap:
            findings.append(
                Finding(
                    "gap",
                    f"validation loss {end:.4f} is {end - last:.2f} above the training loss {last:.4f} at the end",
                    "the model fits the training examples much better than new ones: add or deduplicate data, check "
                    "that validation is the same kind of data as train, regularise more",
                )
            )
    if first > 0 and (first - last) / first < thresholds.plateau:
        findings.append(
            Finding(
                "underfitting",
                f"training loss barely moved ({first:.4f} -> {last:.4f}, {100 * (first - last) / first:.1f}% lower)",
                "raise train.lr, train longer (more epochs), or give the method more capacity (method: full, or "
                "a larger LoRA rank); check that the loss mask covers the answers (`lmtune data preview`)",
            )
        )
    if len(after_training) >= 3:
        (_, a), (_, b) = after_training[-2], after_training[-1]
        if b < a * (1 - thresholds.still_falling) and not any(f.kind == "overfitting" for f in findings):
            findings.append(
                Finding(
                    "not_converged",
                    f"validation loss was still falling at the end ({a:.4f} -> {b:.4f} over the last evaluation)",
                    "train longer (more epochs or steps) or with a somewhat higher learning rate",
                )
            )
    return findings


_DIVERGED_ADVICE = (
    "lower train.lr (e.g. by 3-10x), keep train.max_grad_norm on, and check the data for empty or extreme examples"
)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _step_findings(records: Sequence[Mapping[str, Any]]) -> list[Finding]:
    """Skipped updates and loss spikes, which the loop marks on its train records."""
    train = [r for r in records if r.get("split") == "train"]
    skipped = [r["step"] for r in train if r.get("skipped")]
    spikes = [r["step"] for r in train if r.get("warning") and not r.get("skipped")]
    findings = []
    if skipped:
        findings.append(
            Finding(
                "skipped_updates",
                f"{len(skipped)} updates were skipped because the loss or gradient norm was not finite (steps "
                f"{_steps(skipped)})",
                _DIVERGED_ADVICE,
            )
        )
    if spikes:
        findings.append(
            Finding(
                "loss_spikes",
                f"the training loss spiked to more than 5x its recent median at steps {_steps(spikes)}",
                "a rare spike from an unusual batch is harmless; frequent ones announce a divergence: lower "
                "train.lr, warm up longer, keep train.max_grad_norm on, and check those batches' examples",
            )
        )
    return findings


def _steps(steps: Sequence[int]) -> str:
    return ", ".join(map(str, steps[:10])) + (f" and {len(steps) - 10} more" if len(steps) > 10 else "")


def _smooth_start(train: Sequence[tuple[int, float]]) -> float:
    head = [loss for _, loss in train[: max(1, len(train) // 10)]]
    return sum(head) / len(head)


def _smooth_end(train: Sequence[tuple[int, float]]) -> float:
    """Mean of the last tenth of the logged losses: single-batch losses are too noisy to compare."""
    tail = [loss for _, loss in train[-max(1, len(train) // 10) :]]
    return sum(tail) / len(tail)


def _train_near(train: Sequence[tuple[int, float]], step: int) -> float:
    window = [loss for s, loss in train if abs(s - step) <= max(1, len(train) // 20)]
    return sum(window) / len(window) if window else train[-1][1]
