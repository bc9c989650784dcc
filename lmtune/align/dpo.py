"""Task dpo: direct preference optimisation (Rafailov et al. 2023) by trl's DPOTrainer.

The reference model is the policy before training. For LoRA-like methods (a peft model) trl computes it by
switching the adapter off, so no second copy is held; for full and freeze a frozen copy is passed in (trl would
otherwise reload the base from its path, which a preset does not have).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

from accelerate.utils import is_peft_model
from datasets import Dataset
from trl import DPOConfig, DPOTrainer

from lmtune.align.common import (
    base_summary,
    before_after,
    describe_run,
    finish,
    last_eval_step,
    load_trainable,
    quiet,
    resume_point,
    train,
    trl_args,
    uses_chat_template,
)
from lmtune.align.data import AlignSplits, to_trl
from lmtune.config import RunConfig
from lmtune.rundir import MetricsLog


def reference_model(model: Any) -> Any:
    """None when trl can disable the adapter to get the reference (peft), else a frozen copy of the policy."""
    if is_peft_model(model):
        return None
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def train_dpo(
    cfg: RunConfig, run_dir: Path, splits: AlignSplits, *, resume: bool, say: Callable[..., Any]
) -> dict[str, Any]:
    """Train the policy on preference pairs; summary: preference accuracy and reward margin before and after."""
    model, tokenizer = load_trainable(cfg, run_dir, resume=resume, say=say)
    chat = uses_chat_template(cfg, splits.train)
    describe_run(run_dir, cfg, splits, resume=resume, chat=chat)
    train_ds = Dataset.from_list([to_trl(p, chat) for p in splits.train])
    val_ds = Dataset.from_list([to_trl(p, chat) for p in splits.validation]) if splits.validation else None
    p = cfg.preference
    args = trl_args(
        DPOConfig,
        cfg,
        run_dir,
        evaluate=val_ds is not None,
        beta=p.beta,
        loss_type=p.loss_type,
        max_length=cfg.data.max_length,
        truncation_mode="keep_start",  # cut the end of overlong pairs; a pair whose prompt fills max_length is left out
    )
    metrics = MetricsLog(run_dir / "metrics.jsonl")
    checkpoint = resume_point(run_dir, metrics, resume)
    trainer = DPOTrainer(
        model=model,
        ref_model=reference_model(model),
        args=args,
        train_dataset=train_ds,
        eval_dataset=val_ds,
        processing_class=tokenizer,
    )
    quiet(trainer, metrics, say)
    if val_ds is not None and checkpoint is None:
        trainer.evaluate()  # the policy is its reference here: loss log 2, margins 0, accuracy 0 (no pair won yet)
    elapsed = train(trainer, checkpoint)
    if val_ds is not None and last_eval_step(metrics) != trainer.state.global_step:
        trainer.evaluate()
    summary = base_summary(run_dir, trainer, elapsed, model)
    summary.update(before_after(run_dir, ("loss", "accuracy", "margin", "reward_chosen", "reward_rejected")))
    summary["beta"], summary["loss_type"] = p.beta, p.loss_type
    summary["reference"] = "adapter disabled (implicit)" if is_peft_model(model) else "frozen copy of the base"
    if "val_accuracy_after" in summary:
        say(
            f"dpo: validation loss {summary.get('val_loss_before') or float('nan'):.4f} -> "
            f"{summary['val_loss_after']:.4f}, preference accuracy {summary.get('val_accuracy_before') or 0:.3f} -> "
            f"{summary['val_accuracy_after']:.3f}, reward margin {summary.get('val_margin_before') or 0:.3f} -> "
            f"{summary['val_margin_after']:.3f}"
        )
    return finish(run_dir, trainer.model, tokenizer, summary, say)
