"""The loop's position and running figures: what a checkpoint saves so a run resumes exactly."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class LoopState:
    step: int = 0
    epoch: int = 0
    batches_done: int = 0  # micro-batches of the current epoch already consumed (all processes)
    tokens: int = 0  # trained (target) tokens so far
    elapsed: float = 0.0  # seconds of training, summed over resumed segments
    best_val_loss: float | None = None
    # Early stopping (saved in every checkpoint, so a resumed run goes on counting where it left off):
    best_metric: float | None = None  # best value of the watched metric so far
    best_step: int | None = None  # the step it was reached at; its weights are kept in checkpoints/best-NNNNNN
    best_loss: float | None = None  # the validation loss of that evaluation (breaks ties of the metric)
    bad_evals: int = 0  # evaluations in a row without an improvement
    stopped_early: bool = False
    # Updates skipped because the loss or gradient norm was not finite (train.max_bad_steps bounds them):
    bad_steps: int = 0
    first_bad_step: int | None = None
    # The launch the run has been training under: a resume on another number of processes keeps the global batch
    # (micro-batches per optimizer step, over all processes) by changing grad_accum (`resume_grad_accum`).
    processes: int = 1
    step_batches: int = 0
    # A stream's position (data.streaming): stream examples before the next row, and pieces of that example
    # (overlong: chunk) already trained; a resume reads on from there (lmtune.data.streaming.RowStream).
    stream_examples: int = 0
    stream_pieces: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
