"""What keeps a diverging run from writing garbage: updates with a non-finite loss or gradient norm are skipped
(the weights and optimizer stay as they were), a bounded number of them stops the run, and loss spikes are
reported while it goes on.

Every process reaches the same verdict: the loss is reduced over processes and DDP's gradients (hence their
norm) are the same everywhere, so all skip the same updates and stop at the same step.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import torch
from accelerate import Accelerator

from lmtune.errors import Diverged
from lmtune.train.state import LoopState

# A loss this many times the median of the recent ones is a spike worth a warning (one bad batch, or the start of
# a divergence); the median of the last `_WINDOW` finite losses, once `_MIN_HISTORY` are known.
SPIKE_FACTOR = 5.0
_WINDOW = 50
_MIN_HISTORY = 10

ADVICE = (
    "lower train.lr (e.g. by 3-10x), warm up longer (train.warmup_fraction or train.warmup_steps), keep "
    "train.max_grad_norm on, and check the data for empty or extreme examples"
)


def guarded_update(
    accelerator: Accelerator, optimizer: Any, params: list[torch.nn.Parameter], max_grad_norm: float | None, loss: float
) -> tuple[float | None, bool]:
    """Clip the gradients and take the optimizer step unless the loss or the gradient norm is not finite.

    Returns (the gradient norm to log: None when not clipping, whether the update was taken). The norm is measured
    even without clipping (an infinite threshold clips nothing), since a non-finite gradient would poison the
    weights. Under fp16 the grad scaler skips overflowing steps itself (routinely, while it calibrates) and must
    see every step to recalibrate, so there only the loss counts.
    """
    norm = float(accelerator.clip_grad_norm_(params, max_grad_norm if max_grad_norm is not None else math.inf))
    scaled = accelerator.scaler is not None
    taken = math.isfinite(loss) and (scaled or math.isfinite(norm))
    if taken or scaled:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return (norm if max_grad_norm is not None else None), taken


@dataclass
class StepGuard:
    """Counts skipped updates (in the loop state, so a resumed run goes on counting) and watches for spikes."""

    max_bad_steps: int
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=_WINDOW))

    def judge(self, state: LoopState, loss: float, taken: bool) -> str | None:
        """Record the step just done (`state.step`); a warning to show for it, or None. Call `check` after logging."""
        if not taken or not math.isfinite(loss):
            state.bad_steps += 1
            if state.first_bad_step is None:
                state.first_bad_step = state.step
            what = f"loss {loss}" if not math.isfinite(loss) else "gradient norm not finite"
            return (
                f"step {state.step}: {what}; update skipped ({state.bad_steps} of train.max_bad_steps "
                f"{self.max_bad_steps})"
            )
        warning = None
        if len(self.recent) >= _MIN_HISTORY:
            median = statistics.median(self.recent)
            if median > 0 and loss > SPIKE_FACTOR * median:
                warning = (
                    f"step {state.step}: loss spike {loss:.4g}, {loss / median:.1f}x the recent median {median:.4g}"
                )
        self.recent.append(loss)
        return warning

    def check(self, state: LoopState) -> None:
        """Stop the run once more updates were skipped than train.max_bad_steps allows."""
        if state.bad_steps > self.max_bad_steps:
            raise Diverged(state.step, state.first_bad_step or state.step, state.bad_steps)
