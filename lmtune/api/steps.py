"""The named steps of the `finetune` recipe (lmtune.api.train), each a plain function over the run's `Session`.

They hold what the recipe does around the loop: start the run directory, describe it, take what training is
measured against (L2-SP anchors, the forgetting baseline), build the loop's hooks, and put the final weights back.
Saving is collective (FSDP and ZeRO gather the shards on every process); only the main process writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from transformers import PreTrainedTokenizerBase

from lmtune.api.setup import Built, Prepared, Say, label_counts
from lmtune.config import RunConfig, dump_config
from lmtune.data.batching import Row
from lmtune.data.prepare import general_text
from lmtune.errors import LmtuneError
from lmtune.evaluate.forgetting import forgetting_advice, forgetting_report, general_rows
from lmtune.export import LAST, check_same_config, final_state, save_final
from lmtune.fileio import atomic_write_text, dumps_json
from lmtune.rundir import (
    MetricsLog,
    check_run_dir,
    environment,
    lock_run_dir,
    prepare_run_dir,
    read_json,
    write_json,
)
from lmtune.tasks import Task
from lmtune.tasks.preference import needs_reference_logps
from lmtune.tracking import Trackers
from lmtune.train.checkpoint import (
    latest_checkpoint,
    load_best,
    load_checkpoint,
    prune_best,
)
from lmtune.train.early_stopping import Selection, selection_for, stop_reason
from lmtune.train.launch import configure_deepspeed, describe_launch, unwrap
from lmtune.train.loop import loss_head, resume_grad_accum
from lmtune.train.objectives import OBJECTIVES, Objective
from lmtune.train.preference_step import with_reference_logps
from lmtune.train.state import LoopState
from lmtune.train.validation import evaluate_loss

SKIPPED_FILE = "skipped_records.jsonl"  # data.on_bad_record: skip: the records left out, by file and line


@dataclass
class Session:
    """What the recipe's steps share: the config, the launch, the run directory and what each step built."""

    cfg: RunConfig
    task: Task
    accelerator: Accelerator
    say: Say  # the caller's reporter on the main process, silent on the others
    resume: bool
    tokenizer: PreTrainedTokenizerBase | None = None
    prepared: Prepared | None = None
    built: Built | None = None
    model: Any = None  # prepared by accelerate
    optimizer: Any = None
    scheduler: Any = None
    steps: int = 0
    state: LoopState = field(default_factory=LoopState)
    metrics: MetricsLog | None = None
    anchors: list[torch.Tensor] | None = None
    general: list[Row] = field(default_factory=list)
    general_file: Path | None = None
    general_before: dict[str, float] | None = None
    diverged: dict[str, Any] | None = None  # what `roll_back` found, when the loop stopped diverged
    trackers: Trackers = field(default_factory=Trackers)  # train.report_to

    @property
    def run_dir(self) -> Path:
        return self.cfg.run_dir

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    def evaluate(self, rows: list[Row], scored: bool = True) -> dict[str, float]:
        """The loss (and with `scored` the task's metrics) of the model on rows."""
        assert self.built is not None and self.tokenizer is not None
        scorer = None
        if scored and self.task.scorer is not None:
            scorer = self.task.scorer(unwrap(self.accelerator, self.model).config.id2label)
        objective = self.built.objective if scored else self.task_free_objective()
        bs = self.cfg.train.eval_batch_size or self.cfg.train.batch_size
        return evaluate_loss(self.model, rows, bs, self.tokenizer.pad_token_id, self.accelerator, objective, scorer)

    @property
    def selection(self) -> Selection | None:
        """How evaluations are compared (train.best_metric, early stopping): None when nothing is selected."""
        return selection_for(self.cfg.train, self.task.best_metric)

    def task_free_objective(self) -> Objective:
        return OBJECTIVES["causal_lm"]  # general text: next-token loss on every token


def start_run(session: Session, overwrite: bool) -> Session:
    """Refuse to clobber an existing run (checked on every process, changed by the main one only); on resume,
    check the config is the run's and keep the global batch on another number of processes."""
    cfg, acc = session.cfg, session.accelerator
    lock_run_dir(cfg.run_dir)  # first: nothing may look at (or delete) a directory another run is writing
    check_run_dir(cfg.run_dir, resume=session.resume, overwrite=overwrite)
    if session.resume:
        check_same_config(cfg.run_dir, cfg)
        session.cfg = cfg = keep_global_batch(cfg.run_dir, cfg, acc.num_processes, session.say)
    configure_deepspeed(acc, cfg.train)
    acc.wait_for_everyone()
    if acc.is_main_process:
        prepare_run_dir(cfg.run_dir, resume=session.resume, overwrite=overwrite)
    acc.wait_for_everyone()
    set_seed(cfg.seed)
    session.metrics = MetricsLog(cfg.run_dir / "metrics.jsonl")
    return session


def keep_global_batch(run_dir: Path, cfg: RunConfig, processes: int, say: Say) -> RunConfig:
    """On another number of processes than the checkpoint's, the grad_accum that keeps the global batch."""
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        return cfg  # refused later, with the reason
    saved = read_json(ckpt, "loop_state.json")
    accum = resume_grad_accum(saved, cfg.train, processes)
    if accum == cfg.train.grad_accum:
        return cfg
    say(
        f"resuming on {processes} process(es) instead of {saved.get('processes', 1)}: train.grad_accum "
        f"{cfg.train.grad_accum} -> {accum} keeps {accum * processes} micro-batches per optimizer step"
    )
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={"grad_accum": accum})})


def report_data(session: Session) -> None:
    """What the data became: the record shape, examples, trained tokens, and what max_length cut."""
    p, cfg, say = session.prepared, session.cfg, session.say
    assert p is not None
    tr, va = p.train_stats, p.val_stats
    if p.stream is not None:
        say(
            f"data: streaming {p.stream.source} ({p.splits.format} records, shuffle buffer {cfg.data.shuffle_buffer}"
            f"{', packed' if cfg.data.packing else ''}) for {cfg.train.max_steps} steps; validation {va.kept}"
            + ("" if cfg.data.validation else " (a stream is not carved: set data.validation to validate)")
        )
    else:
        say(
            f"data: {p.splits.format} records rendered {'through the chat template' if p.chat else 'as raw text'}; "
            f"train {tr.kept} examples ({tr.trained_tokens:,} trained of {tr.tokens:,} tokens)"
            + (f" in {len(p.rows)} packed rows" if cfg.data.packing else "")
            + f", validation {va.kept}"
        )
    for name, st in (("train", tr), ("validation", va)):
        if st.chunked:
            say(f"{name}: {st.chunked} documents longer than max_length {cfg.data.max_length} cut into chunks")
        if st.truncated or st.dropped:
            say(
                f"{name}: {st.truncated} examples truncated and {st.dropped} dropped at "
                f"max_length {cfg.data.max_length} (data.overlong={cfg.data.overlong})",
                warning=True,
            )
    for src in p.sources:
        sizes = p.splits.info["train"]["sources"][src.name]
        say(
            f"source {src.name}: {src.train_stats.kept} training examples ({src.train_stats.trained_tokens:,} trained "
            f"tokens" + (f", weight {sizes['weight']:.2f}, {sizes['passes']:.2f} passes" if "weight" in sizes else "")
            + f"), validation {src.val_stats.kept}"
        )  # fmt: skip
    if p.replay:
        say(
            f"replay: {len(p.replay)} paragraphs of general text ({cfg.data.replay.source}) mixed into training "
            f"({100 * len(p.replay) / (len(p.train) + len(p.replay)):.0f}% of the examples, "
            f"{p.replay_stats.trained_tokens:,} tokens)"
        )
    if cfg.train.early_stopping is not None and not p.val_rows:
        raise LmtuneError(
            "train.early_stopping: the validation split is empty, so there is nothing to watch",
            hint="set data.validation, or a data.val_fraction that leaves some examples",
        )


def report_model(session: Session) -> None:
    b, p, cfg = session.built, session.prepared, session.cfg
    assert b is not None and p is not None
    if "name" not in cfg.model.model_fields_set:
        session.say(
            f"the config names no model, so this run trains lmtune's built-in demo model {cfg.model.name!r} (2 "
            "layers, random weights), not a pretrained one: set model.name to a hub id or a local model directory",
            warning=True,
        )
    session.say(
        f"model {cfg.model.name} · method {cfg.method.name}: {b.trainable:,} trainable of {b.total:,} parameters "
        f"({100 * b.trainable / b.total:.2f}%)"
    )
    if p.labels:
        counts = label_counts(p)
        weights = b.class_weights
        session.say(
            f"labels: {', '.join(f'{name} ({counts[i]})' for i, name in enumerate(p.labels))} in the training data"
            + (f"; class weights {', '.join(f'{w:.3g}' for w in weights)}" if weights else "")
        )


def measure_start(session: Session) -> None:
    """What training is measured against, taken before a resume loads its checkpoint so that both belong to the
    weights training started from (recomputed, not stored): the trainable weights (L2-SP pulls toward them) and
    the loss on a general text (the forgetting measurement compares the end with it)."""
    cfg, model = session.cfg, session.model
    precompute_reference(session)
    if cfg.train.l2sp > 0:
        session.anchors = [p.detach().clone() for p in model.parameters() if p.requires_grad]
    if not cfg.forgetting.measure or session.task.forgetting_note is not None:
        return
    assert session.tokenizer is not None
    source, session.general_file = general_text(cfg.forgetting.text)
    session.general = general_rows(
        session.tokenizer,
        source,
        max_length=cfg.forgetting.max_length or cfg.data.max_length,
        max_tokens=cfg.forgetting.max_tokens,
    )
    if not session.general:
        return
    before = session.general_before = session.evaluate(session.general, scored=False)
    session.say(
        f"general-text loss before training: {before['loss']:.4f} (perplexity {before['perplexity']:.2f}, "
        f"{before['tokens']:,} tokens of {cfg.forgetting.text})"
    )


def precompute_reference(session: Session) -> None:
    """Full and freeze DPO runs: the reference's log-probs of every pair, from the weights before training (also
    on resume: recomputed from the base, before the checkpoint loads)."""
    p, b = session.prepared, session.built
    assert p is not None and b is not None and session.tokenizer is not None
    if not needs_reference_logps(b.objective):
        return
    bs, pad = session.cfg.train.eval_batch_size or session.cfg.train.batch_size, session.tokenizer.pad_token_id
    acc = session.accelerator
    model, autocast = unwrap(acc, session.model), acc.autocast
    head = loss_head(session.model, acc, b.objective) if session.cfg.train.chunked_loss else None
    p.rows = with_reference_logps(model, p.rows, bs, pad, autocast, head)
    p.val_rows = with_reference_logps(model, p.val_rows, bs, pad, autocast, head)
    session.say(f"reference log-probs of {len(p.rows) + len(p.val_rows)} pairs computed from the model before training")


def resume_or_describe(session: Session) -> None:
    """Load the state to resume from, or write the run directory's description (config, data, environment)."""
    run_dir, p = session.run_dir, session.prepared
    assert p is not None and session.metrics is not None
    if session.resume:
        ckpt = latest_checkpoint(run_dir)
        if ckpt is None:
            raise LmtuneError(f"--resume: {run_dir} has no checkpoint yet", hint="start again with --overwrite")
        session.state = LoopState(**load_checkpoint(ckpt, session.model, session.optimizer, session.scheduler))
        if session.main:
            session.metrics.truncate_after(session.state.step)
            prune_best(run_dir, {session.state.best_step})  # bests a crashed run kept after this checkpoint are stale
        session.say(f"resuming from {ckpt} (step {session.state.step} of {session.steps})")
        return
    if not session.main:
        return
    atomic_write_text(run_dir / "config.yaml", dump_config(session.cfg))
    info = {**p.splits.info}
    if p.stream is None:
        info["train"].update(tokens=p.train_stats.as_dict(), rows=len(p.rows))
    info.setdefault("validation", {}).update(tokens=p.val_stats.as_dict())
    if "replay" in info:
        info["replay"].update(tokens=p.replay_stats.as_dict())
    for src in p.sources:
        info["train"]["sources"][src.name]["tokens"] = src.train_stats.as_dict()
        if "sources" in info["validation"]:
            info["validation"]["sources"][src.name]["tokens"] = src.val_stats.as_dict()
    data = {"format": p.splits.format, "chat": p.chat, "splits": info, "leakage": p.leakage}
    write_json(run_dir, "data.json", data)
    if p.splits.skipped:  # data.on_bad_record: skip: which records were left out, and why
        lines = [
            dumps_json({"source": e.source, "line": e.line, "field": e.field, "problem": e.problem})
            for e in p.splits.skipped
        ]
        atomic_write_text(run_dir / SKIPPED_FILE, "\n".join(lines) + "\n")
    write_json(run_dir, "env.json", {**environment(), "launch": describe_launch(session.accelerator)})


def keep_best(session: Session) -> None:
    """final/ holds the best evaluation's weights (train.keep: best): put them back into the model, after saving
    the last weights beside as last/ when they differ (not after a divergence: those are not good weights)."""
    watch, state, acc = session.selection, session.state, session.accelerator
    if watch is not None and state.stopped_early:
        session.say(f"early stopping at step {state.step} of {session.steps}: {stop_reason(state, watch)}")
    if watch is None or not watch.keep_best or state.best_step is None:
        return
    if state.best_step != state.step or session.diverged is not None:
        model = unwrap(acc, session.model)
        if session.diverged is None:
            whole = final_state(model)  # collective under FSDP and ZeRO
            if session.main:
                save_final(session.run_dir, model, session.tokenizer, whole, name=LAST)
            acc.wait_for_everyone()
        load_best(session.run_dir, state.best_step, model)
    session.say(
        f"the final model is the one of step {state.best_step}, the best validation {watch.metric} "
        f"({state.best_metric:.4f})"
        + (f"; the last step's weights are in {LAST}/" if state.best_step != state.step else "")
    )


def measure_forgetting(session: Session) -> dict[str, Any] | None:
    """How much general ability the final model lost (None when not measured, or when a diverged run kept no
    good weights to measure)."""
    if session.general_before is None or (session.diverged is not None and session.diverged["final_step"] is None):
        return None
    cfg = session.cfg
    after = session.evaluate(session.general, scored=False)
    assert session.tokenizer is not None
    forgetting = forgetting_report(
        session.general_before,
        after,
        cfg.forgetting.threshold,
        vocab_size=len(session.tokenizer),
        text=cfg.forgetting.text,
        file=str(session.general_file),
    )
    session.say(forgetting_advice(forgetting, cfg.method.name), warning=forgetting["warning"])
    return forgetting
