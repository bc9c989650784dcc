"""Early stopping: count evaluations without improvement of the watched validation metric, keep the best."""

from __future__ import annotations

from lmtune.config import EarlyStoppingConfig
from lmtune.errors import LmtuneError
from lmtune.train.state import LoopState


def track_best(state: LoopState, result: dict[str, float], cfg: EarlyStoppingConfig) -> bool:
    """Count an evaluation towards early stopping; True when it is a new best (the caller keeps its weights).

    An improvement is a change of more than `min_delta` in the better direction; after `patience` evaluations in
    a row without one, `state.stopped_early` is set and the loop ends after this step.
    """
    if cfg.metric not in result:
        raise LmtuneError(
            f"train.early_stopping.metric: the evaluation does not compute {cfg.metric!r} "
            f"(it computes {', '.join(sorted(result))})",
            hint="watch one of those",
        )
    value = float(result[cfg.metric])
    sign = 1.0 if cfg.mode == "min" else -1.0
    if state.best_metric is None or sign * (state.best_metric - value) > cfg.min_delta:
        state.best_metric, state.best_step, state.bad_evals = value, state.step, 0
        return True
    state.bad_evals += 1
    state.stopped_early = state.bad_evals >= cfg.patience
    return False


def stop_reason(state: LoopState, cfg: EarlyStoppingConfig) -> str:
    by = f" by more than {cfg.min_delta:g}" if cfg.min_delta else ""
    return (
        f"validation {cfg.metric} did not improve{by} in {state.bad_evals} evaluations after its best, "
        f"{state.best_metric:.4f} at step {state.best_step}"
    )
