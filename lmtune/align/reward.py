"""Task reward: a reward model (a sequence classifier with one output) trained on preference pairs by trl's
RewardTrainer (Bradley-Terry loss: -log sigmoid(score(chosen) - score(rejected)))."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from datasets import Dataset
from trl import RewardConfig, RewardTrainer

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


def train_reward(
    cfg: RunConfig, run_dir: Path, splits: AlignSplits, *, resume: bool, say: Callable[..., Any]
) -> dict[str, Any]:
    """Train the reward model; summary: pairwise accuracy and score margin on validation before and after."""
    model, tokenizer = load_trainable(cfg, run_dir, resume=resume, say=say)
    chat = uses_chat_template(cfg, splits.train)
    describe_run(run_dir, cfg, splits, resume=resume, chat=chat)
    train_ds = Dataset.from_list([to_trl(p, chat) for p in splits.train])
    val_ds = Dataset.from_list([to_trl(p, chat) for p in splits.validation]) if splits.validation else None
    # trl leaves out pairs longer than max_length (it does not truncate them).
    args = trl_args(RewardConfig, cfg, run_dir, evaluate=val_ds is not None, max_length=cfg.data.max_length)
    metrics = MetricsLog(run_dir / "metrics.jsonl")
    checkpoint = resume_point(run_dir, metrics, resume)
    trainer = RewardTrainer(
        model=model, args=args, train_dataset=train_ds, eval_dataset=val_ds, processing_class=tokenizer
    )
    quiet(trainer, metrics, say)
    _report_filtered(trainer, len(train_ds), val_ds, cfg.data.max_length, say)
    if val_ds is not None and checkpoint is None:
        trainer.evaluate()
    elapsed = train(trainer, checkpoint)
    if val_ds is not None and last_eval_step(metrics) != trainer.state.global_step:
        trainer.evaluate()
    summary = base_summary(run_dir, trainer, elapsed, model)
    summary.update(before_after(run_dir, ("loss", "accuracy", "margin")))
    if "val_accuracy_after" in summary:
        before = summary.get("val_accuracy_before")
        say(
            f"reward model: validation pairwise accuracy "
            f"{'?' if before is None else f'{before:.3f}'} -> {summary['val_accuracy_after']:.3f}, "
            f"score margin chosen - rejected {summary.get('val_margin_after', 0.0):.3f}"
        )
    return finish(run_dir, trainer.model, tokenizer, summary, say)


def _report_filtered(trainer: Any, n_train: int, val_ds: Any, max_length: int, say: Callable[..., Any]) -> None:
    left_out = n_train - len(trainer.train_dataset)
    if val_ds is not None:
        left_out += len(val_ds) - len(trainer.eval_dataset)
    if left_out:
        say(f"{left_out} pairs longer than data.max_length {max_length} tokens were left out", warning=True)
