"""What the recipe does when a run diverges: fall back to the last good weights, say so in the summary and the
diagnosis, and end with the error the CLI turns into exit 3."""

from __future__ import annotations

from typing import Any

from safetensors.torch import load_file

from lmtune.api.steps import Session
from lmtune.errors import Diverged, DivergedError
from lmtune.train.checkpoint import latest_checkpoint, load_trainable
from lmtune.train.guard import ADVICE


def roll_back(session: Session, diverged: Diverged) -> dict[str, Any]:
    """After a divergence, put the last good weights back: the last checkpoint's (one is only written after a good
    update, with finite weights; `keep_best` then prefers the best evaluation's). Returns what summary.json says
    of it; its `final_step` is None when no checkpoint came before the divergence (final/ is then not written)."""
    ckpt = latest_checkpoint(session.run_dir)
    good = int(ckpt.name.removeprefix("step-")) if ckpt is not None else None
    if ckpt is not None:
        weights = ckpt / "trainable.safetensors"
        load_trainable(session.model, load_file(str(weights)), weights)
    watch = session.selection
    if watch is not None and watch.keep_best and session.state.best_step is not None:
        good = session.state.best_step
    return {
        "diverged": True,
        "diverged_at": diverged.first_bad,
        "stopped_at": diverged.step,
        "skipped_updates": diverged.bad_steps,
        "final_step": good,
        "reason": diverged.reason,
        "advice": ADVICE,
    }


def diverged_finding(info: dict[str, Any]) -> dict[str, str]:
    """The divergence as a diagnosis finding (summary.json, the report and the model card show those)."""
    kept = f"final/ holds step {info['final_step']}" if info["final_step"] is not None else "no final/ model"
    what = info["reason"] or f"the loss or gradient norm stopped being finite at step {info['diverged_at']}"
    return {"kind": "diverged", "message": f"{what}; the run stopped at step {info['stopped_at']} ({kept})",
            "advice": ADVICE}  # fmt: skip


def diverged_error(session: Session, info: dict[str, Any]) -> DivergedError:
    """The message a diverged run ends with, once its run directory is written."""
    limit = session.cfg.train.max_bad_steps
    kept = (
        f"final/ holds the weights of step {info['final_step']}, the last good ones"
        if info["final_step"] is not None
        else "no checkpoint was written before it, so final/ was not written (train.save_every keeps some)"
    )
    what = info["reason"] or (
        f"the loss or gradient norm was not finite at {info['skipped_updates']} steps (more than "
        f"train.max_bad_steps {limit}), the first at step {info['diverged_at']}"
    )
    return DivergedError(
        f"training diverged: {what}; stopped at step {info['stopped_at']}. {kept}; "
        f"{session.run_dir / 'summary.json'} is marked diverged",
        hint=ADVICE,
    )
