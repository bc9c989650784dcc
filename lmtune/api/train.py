"""`finetune`: the recipe every loop-trained task runs, in named steps that read top to bottom:
seed and run directory -> data -> model and method -> optimizer -> measure the start -> loop -> final weights ->
forgetting -> save, summarise, evaluate, report. Each step is a plain function in `lmtune.api.steps`; what
differs per task comes from its entry in `lmtune.tasks`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmtune.api import diverged, steps
from lmtune.api.evaluate import evaluate_run
from lmtune.api.hooks import evaluate_before, make_hooks, open_trackers
from lmtune.api.setup import Say, build_model, prepare_data, silent, task_of
from lmtune.api.summary import summarize
from lmtune.config import ConfigLike, load_config
from lmtune.data.tokenize import setup_chat_template
from lmtune.errors import Diverged
from lmtune.export import final_state, needs_base_copy, save_base, save_final
from lmtune.report import write_report
from lmtune.rope import context_note
from lmtune.rundir import check_same_data, disk_errors, release_run_dir, write_json
from lmtune.tokenizer import load_tokenizer
from lmtune.train.hostmem import keep_freed_memory
from lmtune.train.launch import (
    check_launch,
    graceful_interrupt,
    make_accelerator,
    resolve_mixed_precision,
    unwrap,
    whole_model_loading,
)
from lmtune.train.loop import make_optimizer, total_steps, train_loop
from lmtune.train.state import LoopState


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    summary: dict[str, Any]


def finetune(
    config: ConfigLike,
    *,
    overrides: Sequence[str] = (),
    output_dir: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    after_step: Sequence[Callable[[LoopState], None]] = (),
    after_eval: Sequence[Callable[[LoopState, dict[str, float]], None]] = (),
    report: Say | None = None,
) -> RunResult:
    """Fine-tune a model as the config says and write the run directory. Returns its path and summary.

    `config`: a YAML path, a dict or a RunConfig; `overrides`: `key.path=value` strings; `report` receives the
    run's messages (`report(text, warning=False)`; the CLI prints them). `after_step` callbacks see the loop state
    after every step, `after_eval` ones each validation's figures too."""
    cfg = load_config(config, overrides, output_dir)
    task = task_of(cfg)
    if not task.loop_trained():
        from lmtune.align import run_alignment  # RL samples answers: trl's GRPO/RLOO trainers

        return RunResult(cfg.run_dir, run_alignment(cfg, resume=resume, overwrite=overwrite, say=report or silent))

    # 1. Launch, seed and run directory.
    accelerator = make_accelerator(resolve_mixed_precision(cfg.train.mixed_precision))
    say = (report or silent) if accelerator.is_main_process else silent
    check_launch(accelerator, cfg)
    s = steps.start_run(steps.Session(cfg, task, accelerator, say, resume), overwrite)
    cfg = s.cfg

    # 2. Data: load, validate, split, render, tokenize (and pack), as the task trains it.
    s.tokenizer = load_tokenizer(cfg.model)
    setup_chat_template(s.tokenizer, cfg.data.chat_template)
    s.prepared = prepare_data(cfg, s.tokenizer, say)
    if resume:
        check_same_data(s.run_dir, s.prepared.splits.info)
    steps.report_data(s)

    # 3. Model and method (a copy of the base kept where the final model needs it).
    keep_base = needs_base_copy(cfg) and not resume and accelerator.is_main_process
    with whole_model_loading(accelerator):
        s.built = build_model(cfg, s.prepared, s.tokenizer.pad_token_id,
                              before_method=(lambda base: save_base(s.run_dir, base)) if keep_base else None)  # fmt: skip
    steps.report_model(s)
    _report_context(s)

    # 4. Optimizer, schedule, accelerate.
    _prepare_optimizer(s)

    # 5. What training is measured against; then the state to resume from, or the run's description.
    steps.measure_start(s)
    steps.resume_or_describe(s)
    open_trackers(s)
    hooks = make_hooks(s, after_step, after_eval)
    if hooks.on_eval is not None and not resume:
        evaluate_before(s, hooks)

    # 6. Train.
    if cfg.train.keep_host_memory and accelerator.device.type == "cpu":
        keep_freed_memory()
    with graceful_interrupt() as stop_requested:
        hooks.stop_requested = stop_requested
        try:
            train_loop(model=s.model, optimizer=s.optimizer, scheduler=s.scheduler, accelerator=accelerator,
                       rows=s.prepared.stream or s.prepared.rows, pad_id=s.tokenizer.pad_token_id, cfg=cfg.train, seed=cfg.seed,
                       steps=s.steps, state=s.state, hooks=hooks, objective=s.built.objective,
                       anchors=s.anchors)  # fmt: skip
        except Diverged as e:
            s.diverged = diverged.roll_back(s, e)  # the last good weights, written as final/ below

    # 7. The final weights (the best evaluation's with early stopping) and the general ability they lost.
    steps.keep_best(s)
    forgetting = steps.measure_forgetting(s)

    # 8. Save the tuned model, summarise, evaluate as configured, and report.
    summary = finish(s, forgetting, report or silent)
    release_run_dir(s.run_dir)  # (after an error, the process keeps it until it exits or trains there again)
    if s.diverged is not None:
        raise diverged.diverged_error(s, s.diverged)
    return RunResult(s.run_dir, summary)


def _report_context(s: steps.Session) -> None:
    """What the longest row means for the model's positions (and its rope_scaling), when it is worth saying."""
    assert s.built is not None and s.prepared is not None
    longest = max((r.length for r in s.prepared.rows), default=0)
    context, past = context_note(s.built.model, s.cfg.model, longest)
    if context:
        s.say(context, warning=past)


def _prepare_optimizer(s: steps.Session) -> None:
    """The run's steps (a stream's: train.max_steps), its optimizer and schedule, and accelerate's wrapping."""
    assert s.built is not None and s.prepared is not None
    cfg = s.cfg
    if s.prepared.stream is None:
        s.steps = total_steps(len(s.prepared.rows), cfg.train, s.accelerator.num_processes)
    else:
        s.steps = cfg.train.max_steps or 0
    s.optimizer, s.scheduler = make_optimizer(s.built.model, cfg.train, s.steps)
    s.model, s.optimizer = s.accelerator.prepare(s.built.model, s.optimizer)


def finish(s: steps.Session, forgetting: dict[str, Any] | None, report: Say) -> dict[str, Any]:
    """final/, summary.json with the diagnosis of the curves, the configured evaluation and the report."""
    acc, cfg, say = s.accelerator, s.cfg, s.say
    assert s.built is not None and s.prepared is not None
    summary: dict[str, Any] = {}
    whole = final_state(unwrap(acc, s.model))  # collective under FSDP and ZeRO, None otherwise
    good = s.diverged is None or s.diverged["final_step"] is not None  # a diverged run without good weights
    if acc.is_main_process:
        if good:
            with disk_errors(s.run_dir / "final", "final model", s.built.total * 4):  # fp32 weights at most
                save_final(s.run_dir, unwrap(acc, s.model), s.tokenizer, whole)
        summary = summarize(
            s.run_dir, s.state, s.built.trainable, s.built.total, early_stopping=cfg.train.early_stopping,
            selection=s.selection,
            forgetting=forgetting, metrics=s.task.summary_metrics,
        )  # fmt: skip
        summary.update(s.diverged or {"diverged": False}, trained_unit=s.task.unit)
        if s.diverged is not None:  # first in the diagnosis, so the report and the model card lead with it
            summary["diagnosis"].insert(0, diverged.diverged_finding(s.diverged))
        if s.task.forgetting_note is not None and cfg.forgetting.measure:
            summary["forgetting_skipped"] = s.task.forgetting_note
        if s.prepared.labels:
            summary["labels"] = s.prepared.labels
        if s.task.summary_extra is not None:
            extra, line = s.task.summary_extra(cfg, unwrap(acc, s.model), summary)
            summary.update(extra)
            if line:
                say(line)
        write_json(s.run_dir, "summary.json", summary)
        for finding in summary["diagnosis"]:
            advice = finding["advice"][:1].upper() + finding["advice"][1:]
            say(f"{finding['kind']}: {finding['message']}. {advice}.", warning=True)
    acc.wait_for_everyone()
    if acc.is_main_process:
        if cfg.eval.enabled and good:
            e = cfg.eval
            result = evaluate_run(s.run_dir, data=e.data, references=e.references, metrics=e.metrics,
                                  baselines=e.baselines, limit=e.limit, max_new_tokens=e.max_new_tokens,
                                  seed=cfg.seed, report=report)  # fmt: skip
            scores = ", ".join(f"{k} {v:.4g}" for k, v in result.metrics["tuned"].items() if isinstance(v, float))
            say(f"evaluation on {result.data['examples']} examples: {scores}")
            if result.verdict:
                say(result.verdict)
        paths = write_report(s.run_dir)
        say(f"report: {paths.html} · model card: {paths.model_card}")
        s.trackers.finish(s.run_dir)
    acc.wait_for_everyone()
    return summary
