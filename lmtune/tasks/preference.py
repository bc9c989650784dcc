"""What the preference tasks (reward, dpo) share: pair tokenization and their objective on lmtune's loop."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from lmtune.data.pairs import PairRow, collate_pairs, tokenize_pairs
from lmtune.tasks.base import TokenizeOptions
from lmtune.train.reference import ADAPTER_DISABLED, PRECOMPUTED

if TYPE_CHECKING:
    import torch

    from lmtune.train.objectives import Objective

# loss_type values that are objectives of their own (no reference model), not DPO variants.
REFERENCE_FREE = ("orpo", "simpo")


def tokenize_for(for_reward: bool):
    def tokenize(pairs, tokenizer, opts: TokenizeOptions):
        return tokenize_pairs(
            pairs, tokenizer, max_length=opts.max_length, overlong=opts.overlong, for_reward=for_reward, chat=opts.chat
        )

    return tokenize


def collate(rows: Sequence[PairRow], pad_id: int, multiple: int | str = 1, cap: int | None = None) -> dict:
    """The loop's collate for pair rows: chosen then rejected, one padded batch."""
    return collate_pairs(rows, pad_id, multiple, cap)


def _step(model: Any, batch: dict[str, torch.Tensor], device: torch.device, head: Any = None, **options: Any) -> tuple:
    from lmtune.train.preference_step import preference_step

    return preference_step(model, batch, head=head, **options)


def uses_adapter(model: Any) -> bool:
    """Whether the reference is the model with its adapter switched off (a peft model), else precomputed."""
    return hasattr(model, "disable_adapter")


def dpo_objective(cfg: Any, model: Any) -> Objective:
    """Task dpo's objective with the run's settings: the DPO family against a reference (the adapter switched off,
    or log-probs precomputed before training), or ORPO/SimPO without one."""
    from lmtune.train.objectives import Objective
    from lmtune.train.preference_step import PreferenceSettings

    p = cfg.preference
    kind = p.loss_type if p.loss_type in REFERENCE_FREE else "dpo"
    settings = PreferenceSettings(
        beta=p.beta,
        loss_type="sigmoid" if kind != "dpo" else p.loss_type,
        label_smoothing=p.label_smoothing,
        simpo_gamma=p.simpo_gamma,
    )
    reference = None if kind != "dpo" else (ADAPTER_DISABLED if uses_adapter(model) else PRECOMPUTED)
    step = partial(_step, kind=kind, settings=settings, reference=reference)
    return Objective(loss=_no_logit_loss, step=step, collate=collate, uses_head=kind == "dpo")


def reward_objective(cfg: Any, model: Any) -> Objective:
    """Task reward's objective: the Bradley-Terry loss of the scores of the chosen and rejected answers."""
    from lmtune.train.objectives import Objective

    return Objective(loss=_no_logit_loss, step=partial(_step, kind="reward"), collate=collate)


def needs_reference_logps(objective: Objective) -> bool:
    step = objective.step
    return isinstance(step, partial) and step.keywords.get("reference") == PRECOMPUTED


def _no_logit_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    raise AssertionError("preference objectives run their own step")  # the loop calls `step`, never `loss`


def _before_after(summary: dict[str, Any], key: str) -> str:
    before = summary.get(f"val_{key}_before")
    return f"{'?' if before is None else f'{before:.3f}'} -> {summary.get(f'val_{key}_after', float('nan')):.3f}"


def dpo_summary(cfg: Any, model: Any, summary: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    p = cfg.preference
    if p.loss_type in REFERENCE_FREE:
        reference = f"none ({p.loss_type})"
    else:
        reference = "adapter disabled (implicit)" if uses_adapter(model) else "the base before training (precomputed)"
    extra = {"beta": p.beta, "loss_type": p.loss_type, "reference": reference}
    if "val_accuracy_after" not in summary:
        return extra, None
    line = (
        f"dpo: validation loss {_before_after(summary, 'loss')}, preference accuracy "
        f"{_before_after(summary, 'accuracy')}, reward margin {_before_after(summary, 'margin')}"
    )
    return extra, line


def reward_summary(cfg: Any, model: Any, summary: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    if "val_accuracy_after" not in summary:
        return {}, None
    line = (
        f"reward model: validation pairwise accuracy {_before_after(summary, 'accuracy')}, score margin chosen - "
        f"rejected {_before_after(summary, 'margin')}"
    )
    return {}, line
