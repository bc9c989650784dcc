"""Preference alignment: tasks reward, dpo and rlhf, trained through trl's trainers.

`run_alignment(cfg)` is what `lmtune.finetune` runs for these tasks: run directory -> data (preference pairs or
prompts) -> model and method (lmtune's `apply_method`, so peft does LoRA & co. as for every task) -> trl's trainer
(its algorithm, our settings from `train.*`, its logs into metrics.jsonl) -> final model, summary, report.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import datasets

from lmtune.align.common import start_run
from lmtune.align.data import (
    AlignSplits,
    PreferencePair,
    PromptRecord,
    load_align_splits,
    parse_preferences,
    parse_prompts,
    split_transcript,
)
from lmtune.config import ALIGNMENT_TASKS, RunConfig

__all__ = [
    "ALIGNMENT_TASKS",
    "AlignSplits",
    "PreferencePair",
    "PromptRecord",
    "load_align_splits",
    "parse_preferences",
    "parse_prompts",
    "run_alignment",
    "split_transcript",
]


def run_alignment(
    cfg: RunConfig, *, resume: bool = False, overwrite: bool = False, say: Callable[..., None]
) -> dict[str, Any]:
    """Train a reward model, or a policy by DPO or RLHF, as the config says; returns the run's summary."""
    from lmtune.align.dpo import train_dpo
    from lmtune.align.reward import train_reward
    from lmtune.align.rl import train_rlhf

    run_dir = start_run(cfg, resume=resume, overwrite=overwrite)
    splits = load_align_splits(cfg.data, cfg.seed, cfg.task)
    for warning in splits.warnings:
        say(warning, warning=True)
    what = "prompts" if cfg.task == "rlhf" else "preference pairs"
    say(f"data: {len(splits.train)} training {what}, {len(splits.validation)} validation")
    train = {"reward": train_reward, "dpo": train_dpo, "rlhf": train_rlhf}[cfg.task]
    # trl maps its datasets with `datasets`, whose progress bars would flood stderr for every tiny split.
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        return train(cfg, run_dir, splits, resume=resume, say=say)
    finally:
        if bars:
            datasets.enable_progress_bars()
