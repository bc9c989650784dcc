"""Task rlhf: GRPO/RLOO through trl's trainers, the one recipe outside lmtune's loop (online sampling).

`run_alignment(cfg)` is what `lmtune.finetune` runs for these tasks: run directory -> data (preference pairs or
prompts) -> model and method (lmtune's `apply_method`, so peft does LoRA & co. as for every task) -> trl's trainer
(its algorithm, our settings from `train.*`, its logs into metrics.jsonl) -> final model, summary, report.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import datasets

from lmtune.align.common import start_run
from lmtune.config import ALIGNMENT_TASKS, RunConfig
from lmtune.data.preferences import (
    AlignSplits,
    PreferencePair,
    PromptRecord,
    load_align_splits,
    parse_preferences,
    parse_prompts,
    split_transcript,
)

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
    """Train a policy by RLHF (GRPO/RLOO, trl's trainers) as the config says; returns the run's summary."""
    from lmtune.align.rl import train_rlhf  # trl's trainers load only for the task that uses them

    run_dir = start_run(cfg, resume=resume, overwrite=overwrite)
    splits = load_align_splits(cfg.data, cfg.seed, cfg.task)
    for warning in splits.warnings:
        say(warning, warning=True)
    say(f"data: {len(splits.train)} training prompts, {len(splits.validation)} validation")
    # trl maps its datasets with `datasets`, whose progress bars would flood stderr for every tiny split.
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        return train_rlhf(cfg, run_dir, splits, resume=resume, say=say)
    finally:
        if bars:
            datasets.enable_progress_bars()
