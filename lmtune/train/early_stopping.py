"""Which evaluation is best, and early stopping: compare each evaluation with the best so far by the watched
validation metric, keep the best, count evaluations without improvement."""

from __future__ import annotations

from dataclasses import dataclass

from lmtune.config import TrainConfig
from lmtune.config.train import LOWER_IS_BETTER
from lmtune.errors import LmtuneError
from lmtune.train.state import LoopState


@dataclass(frozen=True)
class Selection:
    """What evaluations are compared by: the metric and its direction, the smallest change that counts, and the
    evaluations in a row without one that stop the run (None: the run is never stopped, only its best kept)."""

    metric: str
    mode: str = "min"
    min_delta: float = 0.0
    patience: int | None = None
    keep_best: bool = True  # final/ holds the best evaluation's weights (train.keep: best)


def selection_for(cfg: TrainConfig, task_metric: str) -> Selection | None:
    """The run's selection: early stopping's metric, else train.best_metric, else the task's own ('auto'); None
    when neither the best weights are kept (train.keep: last) nor early stopping is on."""
    early = cfg.early_stopping
    if early is None and cfg.keep == "last":
        return None
    metric = early.metric if early is not None and early.metric != "auto" else cfg.best_metric
    metric = task_metric if metric == "auto" else metric
    mode = early.mode if early is not None and early.mode != "auto" else None
    mode = mode or ("min" if LOWER_IS_BETTER.get(metric, True) else "max")
    if early is None:
        return Selection(metric, mode, keep_best=cfg.keep == "best")
    return Selection(metric, mode, early.min_delta, early.patience, keep_best=cfg.keep == "best")


def track_best(state: LoopState, result: dict[str, float], watch: Selection) -> bool:
    """Count an evaluation; True when it is a new best (the caller keeps its weights).

    An improvement is a change of more than `min_delta` in the better direction (an equal value with a lower
    validation loss also counts: accuracy on a small set ties often); after `patience` evaluations in a row without
    one, `state.stopped_early` is set and the loop ends after this step.
    """
    if watch.metric not in result:
        raise LmtuneError(
            f"the validation metric {watch.metric!r} (train.best_metric or train.early_stopping.metric) is not "
            f"computed for this run (it computes {', '.join(sorted(result))})",
            hint="watch one of those",
        )
    value = float(result[watch.metric])
    sign = 1.0 if watch.mode == "min" else -1.0
    tie = (
        state.best_metric is not None
        and value == state.best_metric
        and watch.metric != "loss"
        and result.get("loss", float("inf")) < (state.best_loss if state.best_loss is not None else float("inf"))
    )
    if state.best_metric is None or sign * (state.best_metric - value) > watch.min_delta or tie:
        state.best_metric, state.best_step, state.bad_evals = value, state.step, 0
        state.best_loss = result.get("loss")
        return True
    state.bad_evals += 1
    state.stopped_early = watch.patience is not None and state.bad_evals >= watch.patience
    return False


def stop_reason(state: LoopState, watch: Selection) -> str:
    by = f" by more than {watch.min_delta:g}" if watch.min_delta else ""
    return (
        f"validation {watch.metric} did not improve{by} in {state.bad_evals} evaluations after its best, "
        f"{state.best_metric:.4f} at step {state.best_step}"
    )
