"""summary.json: what a run did, its losses and task metrics, early stopping, forgetting, and the diagnosis."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmtune.config import EarlyStoppingConfig
from lmtune.evaluate.diagnose import diagnose
from lmtune.rundir import MetricsLog
from lmtune.train.early_stopping import Selection, stop_reason
from lmtune.train.state import LoopState


def summarize(
    run_dir: Path,
    state: LoopState,
    trainable: int,
    total: int,
    *,
    early_stopping: EarlyStoppingConfig | None = None,
    selection: Selection | None = None,
    forgetting: dict[str, Any] | None = None,
    metrics: tuple[str, ...] = (),
) -> dict[str, Any]:
    """summary.json: what the run did, its losses, early stopping, forgetting and the diagnosis of its curves."""
    records = MetricsLog(run_dir / "metrics.jsonl").read()
    train = [r for r in records if r["split"] == "train" and not r.get("skipped")]  # skipped: a non-finite loss
    val = [r for r in records if r["split"] == "validation"]
    out: dict[str, Any] = {
        "steps": state.step,
        "epochs": round(train[-1]["epoch"], 3) if train else 0,
        "trained_tokens": state.tokens,
        "train_time_s": round(state.elapsed, 3),
        "tokens_per_s": round(state.tokens / state.elapsed, 1) if state.elapsed else None,
        "trainable_parameters": trainable,
        "total_parameters": total,
        "first_train_loss": train[0]["loss"] if train else None,
        "last_train_loss": train[-1]["loss"] if train else None,
    }
    if val:
        # A diverged evaluation's loss is null in metrics.jsonl: never the best.
        best = min(val, key=lambda r: r["loss"] if r["loss"] is not None else float("inf"))
        out.update(
            val_loss_before=val[0]["loss"] if val[0]["step"] == 0 else None,
            val_perplexity_before=val[0]["perplexity"] if val[0]["step"] == 0 else None,
            val_loss_after=val[-1]["loss"],
            best_val_loss=best["loss"],
            best_val_step=best["step"],
            val_perplexity_after=val[-1]["perplexity"],
        )
    # Which weights final/ holds: the best evaluation's (train.keep: best), else the last step's.
    keep_best = selection is not None and selection.keep_best and state.best_step is not None
    kept = state.best_step if keep_best else state.step
    out.update(stopped_early=state.stopped_early, stopped_at=state.step, best_step=state.best_step, final_step=kept)
    at_kept = [r for r in val if r["step"] == kept]
    out["val_loss_final"] = at_kept[-1]["loss"] if at_kept else None
    # The task's own validation metrics (a classifier's accuracy and F1, ...): before, after and for the final model.
    for key in metrics:
        if val and key in val[-1]:
            out[f"val_{key}_before"] = val[0][key] if val[0]["step"] == 0 else None
            out[f"val_{key}_after"] = val[-1][key]
            out[f"val_{key}_final"] = at_kept[-1][key] if at_kept else None
    if selection is not None:
        out["final_weights"] = final_weights(state, selection, val, kept)
    elif val:
        out["final_weights"] = {"step": kept, "last_step": state.step, "why": "train.keep: last"}
    if early_stopping is not None and selection is not None:
        out["early_stopping"] = {
            **early_stopping.model_dump(),
            "metric": selection.metric,
            "mode": selection.mode,
            "best": state.best_metric,
            "best_step": state.best_step,
            "reason": stop_reason(state, selection) if state.stopped_early else None,
        }
    if forgetting is not None:
        out["forgetting"] = forgetting
    out["diagnosis"] = [f.as_dict() for f in diagnose(records)]
    return out


def final_weights(state: LoopState, watch: Selection, val: list[dict[str, Any]], kept: int) -> dict[str, Any]:
    """Which step's weights final/ holds, and why: the best validation figure of the watched metric among the
    evaluations after the start, or the last step when the last weights are kept (train.keep: last)."""
    scored = [r for r in val if r["step"] > 0 and r.get(watch.metric) is not None]
    last = scored[-1] if scored else None
    out: dict[str, Any] = {"step": kept, "metric": watch.metric, "mode": watch.mode, "last_step": state.step}
    if not watch.keep_best or state.best_step is None:
        out["why"] = "train.keep: last" if not watch.keep_best else "no evaluation after the start of training"
        return out
    out["value"] = state.best_metric
    out["last_value"] = last[watch.metric] if last else None
    better = "highest" if watch.mode == "max" else "lowest"
    out["why"] = (
        f"the {better} validation {watch.metric} ({state.best_metric:.4f}) of {len(scored)} evaluations during "
        "training"
        + (f"; the last step's ({out['last_value']:.4f}) weights are in last/" if kept != state.step and last else "")
    )
    out["last_weights"] = "last" if kept != state.step else None
    return out
