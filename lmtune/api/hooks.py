"""The loop's hooks for the `finetune` recipe, built in one place over the run's `Session` (lmtune.api.steps): each
step's metrics logged (and sent to the trackers), each evaluation's figures (per source for a mixture) with the best
evaluation's weights kept, the checkpoints, and the callbacks of the caller (`lmtune tune`'s pruner)."""

from __future__ import annotations

import math
from typing import Any

from lmtune.api.fewshot import reference_answer, render_prompt
from lmtune.api.steps import Session
from lmtune.data.formats import TextExample
from lmtune.errors import LmtuneError
from lmtune.evaluate.generate import generate_texts
from lmtune.evaluate.metrics import compute_metrics
from lmtune.tracking import start_trackers
from lmtune.train.checkpoint import prune_best, save_best, save_checkpoint
from lmtune.train.early_stopping import track_best
from lmtune.train.launch import unwrap
from lmtune.train.loop import Hooks
from lmtune.train.state import LoopState
from lmtune.train.validation import evaluate_loss

GENERATED = "rougeL"  # the validation metric computed from generated answers


def make_hooks(session: Session, after_step: Any, after_eval: Any = ()) -> Hooks:
    """The loop's hooks: log metrics, evaluate (and keep the best evaluation's weights), checkpoint. `after_eval`
    callbacks see each evaluation's figures (`lmtune tune` reports them to its pruner, which may stop the run)."""
    acc, run_dir, metrics, p = session.accelerator, session.run_dir, session.metrics, session.prepared
    assert metrics is not None and p is not None
    watch = session.selection
    # The weights of the best evaluation are kept on disk, and the best the last checkpoint refers to until the
    # next checkpoint (a crash in between resumes from that checkpoint and needs its best).
    committed = {"best": session.state.best_step}

    def on_eval(s: LoopState) -> dict[str, float]:
        result = validate(session)
        if s.best_val_loss is None or result["loss"] < s.best_val_loss:
            s.best_val_loss = result["loss"]
        if acc.is_main_process:
            metrics.append({"split": "validation", "step": s.step, **result})
            session.trackers.log(result, "validation", s.step)
        # The model before training is the baseline, never a candidate for the final weights.
        # The last step's weights need no copy: they are the model's when the run ends.
        if watch is not None and s.step > 0 and track_best(s, result, watch) and s.step < session.steps:
            save_best(run_dir, s.step, unwrap(acc, session.model), keep=[committed["best"]], write=session.main)
            acc.wait_for_everyone()
        for callback in after_eval:
            callback(s, result)
        return result

    def on_checkpoint(s: LoopState) -> None:
        keep = session.cfg.train.keep_checkpoints
        save_checkpoint(
            run_dir, s.step, session.model, session.optimizer, session.scheduler, s.as_dict(), keep, write=session.main
        )
        if session.main:
            prune_best(run_dir, {s.best_step})
        committed["best"] = s.best_step
        acc.wait_for_everyone()

    def on_log(record: dict[str, Any]) -> None:
        if acc.is_main_process:
            metrics.append(record)
            session.trackers.log(record, "train", record["step"])
        if "warning" in record:  # a skipped update or a loss spike (lmtune.train.guard)
            session.say(record["warning"], warning=True)

    return Hooks(
        on_log=on_log,
        on_eval=on_eval if p.val_rows else None,
        on_checkpoint=on_checkpoint,
        after_step=after_step,
    )


def open_trackers(session: Session) -> None:
    """train.report_to: the trackers that get a copy of the run's figures (lmtune.tracking)."""
    cfg = session.cfg
    session.trackers = start_trackers(cfg.train.report_to, cfg.name, cfg.train.report_group, session.run_dir,
                                      cfg.model_dump(mode="json"), session.main)  # fmt: skip


def validate(session: Session) -> dict[str, float]:
    """The validation figures, with rougeL when the run watches it (`generated_rouge`)."""
    result = _validation_losses(session)
    watch = session.selection
    if watch is not None and watch.metric == GENERATED:
        result[GENERATED] = generated_rouge(session)
    return result


def _validation_losses(session: Session) -> dict[str, float]:
    """The validation loss (and the task's scorer); for a mixture whose sources keep their own validation, each
    source's loss too (`loss/NAME`). Without a task scorer the overall loss is the token-weighted mean of theirs."""
    p, cfg = session.prepared, session.cfg
    assert p is not None and session.built is not None and session.tokenizer is not None
    groups = [src for src in p.sources if src.val_rows] if cfg.data.validation is None else []
    if len(groups) < 2:
        return session.evaluate(p.val_rows)
    bs, pad = cfg.train.eval_batch_size or cfg.train.batch_size, session.tokenizer.pad_token_id
    objective = session.built.objective
    per = {
        src.name: evaluate_loss(session.model, src.val_rows, bs, pad, session.accelerator, objective) for src in groups
    }
    if session.task.scorer is not None:
        result = session.evaluate(p.val_rows)
    else:
        tokens = sum(int(r["tokens"]) for r in per.values())
        mean = sum(r["loss"] * r["tokens"] for r in per.values()) / max(tokens, 1)
        result = {"loss": mean, "perplexity": math.exp(min(mean, 50.0)), "tokens": tokens}
    return {**result, **{f"loss/{name}": r["loss"] for name, r in per.items()}}


def generated_rouge(session: Session) -> float:
    """ROUGE-L (rouge-score) of greedy answers to the first train.eval_generate validation examples, against their
    reference answers: the task's own measure where the answer is free text (sft, seq2seq), which the loss only
    approximates. The prompts are rendered as training rendered them (`lmtune eval`'s generation path)."""
    p, cfg = session.prepared, session.cfg
    assert p is not None and session.tokenizer is not None
    if not session.task.renders_text or not p.splits.validation or isinstance(p.splits.validation[0], TextExample):
        raise LmtuneError(
            f"validation rougeL scores generated answers; task {session.task.name} with {p.splits.format} data has "
            "no answers to generate",
            hint="watch loss or perplexity (train.best_metric, train.early_stopping.metric)",
        )
    examples = p.splits.validation[: cfg.train.eval_generate]
    model = unwrap(session.accelerator, session.model)
    prompts = [render_prompt(ex, session.tokenizer, p.chat) for ex in examples]
    answers = generate_texts(model, session.tokenizer, prompts, max_new_tokens=cfg.eval.max_new_tokens,
                             batch_size=cfg.train.eval_batch_size or cfg.train.batch_size, rendered=p.chat,
                             progress=False)  # fmt: skip
    refs = [(reference_answer(ex),) for ex in examples]
    return float(compute_metrics([GENERATED], answers, refs)[GENERATED])


def evaluate_before(session: Session, hooks: Hooks) -> None:
    """The validation figures of the model before training (the first point of every curve)."""
    assert hooks.on_eval is not None
    before = hooks.on_eval(session.state)
    extra = f"accuracy {before['accuracy']:.4f}" if "accuracy" in before else f"perplexity {before['perplexity']:.2f}"
    session.say(f"validation loss before training: {before['loss']:.4f} ({extra})")
