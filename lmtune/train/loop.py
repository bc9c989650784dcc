"""The training loop: one explicit loop on accelerate (so DDP/FSDP/DeepSpeed are configuration, not rewrites).

Each optimizer step takes `grad_accum` micro-batches per process and normalises the summed loss by the target
tokens of the whole step across processes, so every trained token weighs the same however the micro-batches
are padded or packed (torchtune's recipe does the same). Data order is a seeded shuffle per epoch, so the loop
position (epoch, micro-batch) is all a checkpoint needs to resume on the exact same batches.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from lmtune.config import TrainConfig
from lmtune.data.batching import Row, collate, epoch_batches
from lmtune.data.streaming import RowStream
from lmtune.errors import Interrupted
from lmtune.train import zero
from lmtune.train.checkpoint import is_sharded
from lmtune.train.guard import StepGuard, guarded_update
from lmtune.train.launch import unwrap
from lmtune.train.linear_ce import output_head
from lmtune.train.objectives import OBJECTIVES, Objective, l2sp_penalty
from lmtune.train.schedule import (  # noqa: F401 (the step counts and optimizer, imported from here by the recipes)
    make_optimizer,
    resume_grad_accum,
    steps_per_epoch,
    total_steps,
    warmup_steps,
)
from lmtune.train.state import LoopState


def loss_head(model: torch.nn.Module, accelerator: Accelerator, objective: Objective) -> torch.nn.Linear | None:
    """The output layer for the chunked loss (`lmtune.train.linear_ce`), or None to compute the model's logits: the
    objective has no hidden-state form, the head is not a plain linear layer, or FSDP/ZeRO-3 shard the head's
    weight (it is only gathered inside the wrapped model's forward). ZeRO-1/2 keep it whole on every process."""
    unwrapped = unwrap(accelerator, model)
    if (objective.hidden_loss is None and not objective.uses_head) or is_sharded(unwrapped):
        return None
    return output_head(unwrapped)


def _forward(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    device: torch.device,
    objective: Objective,
    head: torch.nn.Linear | None = None,
) -> tuple[torch.Tensor | None, tuple, dict[str, float]]:
    """The logits of a batch, its (summed loss, count) under the objective, and the objective's summed metrics
    (preference pairs: accuracy, margins). With `head` (see `loss_head`) the model computes no logits (None): the
    loss comes from its last hidden states through the head. An objective with a `step` runs the step itself."""
    if objective.step is not None:
        loss, n, metrics = objective.step(model, batch, device, head)
        return None, (loss, n), metrics
    inputs = {k: v.to(device) for k, v in batch.items() if k != "labels" or objective.model_takes_labels}
    labels = batch["labels"].to(device)
    if head is not None and objective.hidden_loss is not None:
        out = model(**inputs, use_cache=False, output_hidden_states=True, logits_to_keep=1)
        return None, objective.hidden_loss(out.hidden_states[-1], head, labels), {}
    logits = model(**inputs, use_cache=False).logits
    return logits, objective.loss(logits, labels), {}


def step_means(sums: dict[str, float], count: int, accelerator: Accelerator) -> dict[str, float]:
    """The objective's metrics of one optimizer step (summed over micro-batches and processes) per counted unit."""
    if not sums:
        return {}
    names = sorted(sums)
    total = accelerator.reduce(torch.tensor([sums[k] for k in names], device=accelerator.device), reduction="sum")
    return {k: float(v) / count for k, v in zip(names, total.tolist(), strict=True)}


def batcher(objective: Objective) -> Callable[..., dict[str, torch.Tensor]]:
    """The collate function of the objective's rows: its own, or the token rows' `collate`."""
    return objective.collate or collate


@dataclass
class Hooks:
    """What the recipe does around the loop; every callback is optional."""

    on_log: Callable[[dict[str, Any]], None] = lambda record: None
    on_eval: Callable[[LoopState], dict[str, float]] | None = None
    on_checkpoint: Callable[[LoopState], None] = lambda state: None
    after_step: Sequence[Callable[[LoopState], None]] = ()
    stop_requested: Callable[[], bool] = lambda: False


@dataclass
class _Fixed:
    """What every step of a run uses, set up once by `train_loop`."""

    model: torch.nn.Module
    optimizer: Any
    scheduler: Any
    accelerator: Accelerator
    cfg: TrainConfig
    objective: Objective
    head: torch.nn.Linear | None
    engine: Any  # DeepSpeed's engine, or None
    params: list[torch.nn.Parameter]
    anchors: list[torch.Tensor]
    batch_of: Callable[..., dict[str, torch.Tensor]]
    pad_id: int
    longest: int


@dataclass
class _Step:
    """What one optimizer step did."""

    loss: float  # mean over the step's counted units (target tokens, examples or pairs) on all processes
    count: int  # those units
    lr: float
    grad_norm: float | None
    taken: bool  # False: a non-finite loss or gradient norm, the update skipped (lmtune.train.guard)
    penalty: float | None  # the L2-SP term
    sums: dict[str, float]  # the objective's own metrics, summed


def train_loop(
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    accelerator: Accelerator,
    rows: Sequence[Row] | RowStream,
    pad_id: int,
    cfg: TrainConfig,
    seed: int,
    steps: int,
    state: LoopState,
    hooks: Hooks,
    objective: Objective | None = None,
    anchors: Sequence[torch.Tensor] | None = None,
) -> LoopState:
    """Train until `steps` optimizer steps are done (or early stopping ends the run), from `state`.

    `objective` is the task's loss with the run's settings (`lmtune.train.objectives.objective_for`); the causal-LM
    loss by default.

    `anchors` are the values of the trainable parameters before training (in their order), for L2-SP
    (cfg.l2sp > 0): the recipe takes them before a resume loads a checkpoint.
    """
    world = accelerator.num_processes
    stream = rows if isinstance(rows, RowStream) else None
    if stream is None:
        steps_per_epoch(len(rows), cfg, world)  # an epoch without a full step would loop forever
    longest = stream.max_length if stream is not None else max(r.length for r in rows)  # type: ignore[union-attr]
    run = _setup(model, optimizer, scheduler, accelerator, longest, pad_id, cfg, objective, anchors)
    state.processes, state.step_batches = world, cfg.grad_accum * world
    bar = tqdm(total=steps, initial=state.step, desc="train", unit="step", disable=not accelerator.is_main_process)
    model.train()
    go = _Progress(state, hooks, bar, StepGuard(cfg.max_bad_steps), steps)
    try:
        if stream is not None:
            _stream_epochs(run, stream, go)
        else:
            lengths = [r.length for r in rows] if cfg.batching == "length_grouped" else None  # type: ignore[union-attr]
            _epochs(run, rows, seed, go, lengths)  # type: ignore[arg-type]
    finally:
        bar.close()
    return state


@dataclass
class _Progress:
    """Where the run is and what watches it: the state, the hooks, the bar, the guard, the tokens/s window."""

    state: LoopState
    hooks: Hooks
    bar: Any
    guard: StepGuard
    steps: int
    window: tuple[int, float] = (0, 0.0)  # units and seconds since the last logged step (the tokens/s shown)


def _epochs(run: _Fixed, rows: Sequence[Row], seed: int, go: _Progress, lengths: list[int] | None) -> None:
    """The loop proper: epochs of seeded batches, a step per `grad_accum` micro-batches on every process."""
    cfg, state = run.cfg, go.state
    world, rank = run.accelerator.num_processes, run.accelerator.process_index
    per_step = cfg.grad_accum * world
    while state.step < go.steps and not state.stopped_early:
        batches = epoch_batches(len(rows), cfg.batch_size, seed, state.epoch, lengths=lengths)
        chunks = [batches[i : i + per_step] for i in range(state.batches_done, len(batches), per_step)]
        if world > 1:
            chunks = [c for c in chunks if len(c) == per_step]  # every process needs a share of each step
        for chunk in chunks:
            if take_step(run, rows, chunk, chunk[rank::world], go, len(batches)):
                break
        else:
            state.epoch += 1
            state.batches_done = 0


def _stream_epochs(run: _Fixed, stream: RowStream, go: _Progress) -> None:
    """The loop over a stream (data.streaming): each step takes the next rows in stream order, and the state keeps
    the stream position after them, so a resumed run reads on from the exact row (`RowStream.rows`)."""
    cfg, state = run.cfg, go.state
    world, rank = run.accelerator.num_processes, run.accelerator.process_index
    per_step, size = cfg.grad_accum * world, cfg.batch_size
    while state.step < go.steps and not state.stopped_early:
        rows = stream.rows(state.epoch, (state.stream_examples, state.stream_pieces))
        while True:
            taken = list(itertools.islice(rows, per_step * size))
            if not taken or (world > 1 and len(taken) < per_step * size):  # the pass ended (DDP: each needs a share)
                state.epoch, state.batches_done, state.stream_examples, state.stream_pieces = state.epoch + 1, 0, 0, 0
                break
            step_rows = [row for row, _ in taken]
            chunk = [list(range(i, min(i + size, len(taken)))) for i in range(0, len(taken), size)]
            state.stream_examples, state.stream_pieces = taken[-1][1]
            if take_step(run, step_rows, chunk, chunk[rank::world], go, 0):
                return


def take_step(
    run: _Fixed, rows: Sequence[Row], chunk: Sequence[Sequence[int]], mine: Sequence[Sequence[int]], go: _Progress,
    epoch_batches_n: int,
) -> bool:  # fmt: skip
    """One optimizer step over `chunk` (this process's share: `mine`) and what follows it: the state's counts, the
    progress bar, the log, the guard, evaluation and checkpoints. True: the run is done."""
    state, t0 = go.state, time.perf_counter()
    done = _optimizer_step(run, rows, mine)
    dt = time.perf_counter() - t0
    state.step += 1
    state.batches_done += len(chunk)
    state.tokens += done.count
    state.elapsed += dt
    go.window = (go.window[0] + done.count, go.window[1] + dt)
    tok_s = go.window[0] / max(go.window[1], 1e-9)
    warning = go.guard.judge(state, done.loss, done.taken)
    bad = not done.taken or not math.isfinite(done.loss)
    go.bar.update(1)
    mark = {"!": "skipped" if bad else "spike"} if warning else {}
    go.bar.set_postfix(loss=f"{done.loss:.4f}", lr=f"{done.lr:.2e}", tok_s=f"{tok_s:.0f}", **mark)
    if state.step % run.cfg.log_every == 0 or state.step == go.steps or warning:
        epoch = state.epoch + state.batches_done / epoch_batches_n if epoch_batches_n else float(state.epoch)
        go.hooks.on_log(_record(state, done, epoch, tok_s, bad, warning, run.accelerator))
        go.window = (0, 0.0)
    go.guard.check(state)  # too many skipped updates: the recipe keeps the last good weights
    return _after_step(run, state, go.hooks, go.steps, bad)


def _setup(
    model: torch.nn.Module,
    optimizer: Any,
    scheduler: Any,
    accelerator: Accelerator,
    longest: int,
    pad_id: int,
    cfg: TrainConfig,
    objective: Objective | None,
    anchors: Sequence[torch.Tensor] | None,
) -> _Fixed:
    objective = objective or OBJECTIVES["causal_lm"]
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.l2sp > 0 and (anchors is None or len(anchors) != len(params)):
        raise ValueError("train.l2sp needs the pre-training values of the trainable parameters (anchors)")
    return _Fixed(
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        accelerator=accelerator,
        cfg=cfg,
        objective=objective,
        head=loss_head(model, accelerator, objective) if cfg.chunked_loss else None,
        # Under DeepSpeed its engine runs backward and the optimizer step (with the clipping of its config, which
        # `lmtune.train.launch.configure_deepspeed` sets from train.max_grad_norm); lmtune keeps the loss scale.
        engine=zero.engine_of(model),
        params=params,
        anchors=list(anchors or ()),
        batch_of=batcher(objective),
        pad_id=pad_id,
        longest=longest,
    )


def _optimizer_step(run: _Fixed, rows: Sequence[Row], mine: Sequence[Sequence[int]]) -> _Step:
    """One optimizer step over this process's micro-batches (`mine`, row indices each): forward and backward
    each, the loss normalised by the units of the whole step over all processes, then the (guarded) update."""
    acc, cfg, engine = run.accelerator, run.cfg, run.engine
    world = acc.num_processes
    micro = [run.batch_of([rows[i] for i in idx], run.pad_id, cfg.pad_to_multiple_of, run.longest) for idx in mine]
    local_n = sum(rows[i].trained_tokens for idx in mine for i in idx)
    global_n = max(int(acc.reduce(torch.tensor([local_n], device=acc.device), reduction="sum").item()), 1)
    loss_sum, penalty, sums = 0.0, None, {}
    for j, batch in enumerate(micro):
        sync = j == len(micro) - 1
        # DeepSpeed's engine holds its reduction back by the boundary flag set below instead.
        quiet = nullcontext() if sync or engine is not None else acc.no_sync(run.model)
        with quiet, acc.autocast():
            _, (loss, _), metrics = _forward(run.model, batch, acc.device, run.objective, run.head)
        # DDP averages gradients over processes, so scale by world to get the global token mean.
        scaled = loss * (world / global_n)
        if sync and cfg.l2sp > 0:
            # Once per step, on every process: the average over processes leaves it as it is.
            penalty = cfg.l2sp * l2sp_penalty(run.params, run.anchors)
            scaled = scaled + penalty
        if engine is not None:
            engine.set_gradient_accumulation_boundary(sync)
            engine.backward(scaled, scale_wrt_gas=False)  # already the step's mean
        else:
            acc.backward(scaled)
        loss_sum += float(loss.detach())
        sums = {k: sums.get(k, 0.0) + v for k, v in metrics.items()}
    lr = run.scheduler.get_last_lr()[0]
    # Reduced before the update, so that every process judges the same loss (see lmtune.train.guard).
    step_loss = float(acc.reduce(torch.tensor([loss_sum], device=acc.device), reduction="sum").item()) / global_n
    grad_norm, taken = None, True
    if engine is not None:
        engine.step()  # clip, step, zero the gradients
        grad_norm = float(engine.get_global_grad_norm()) if cfg.max_grad_norm is not None else None
        # ZeRO's optimizer skips an update whose gradients are not finite itself (its overflow check): lmtune's
        # guard counts it from there, and a non-finite loss never counts as a taken step.
        taken = engine.was_step_applied() and math.isfinite(step_loss)
    else:
        grad_norm, taken = guarded_update(acc, run.optimizer, run.params, cfg.max_grad_norm, step_loss)
    run.scheduler.step()  # a skipped update still uses up its step of the schedule, as its batch is used up
    kept_penalty = float(penalty.detach()) if penalty is not None else None
    return _Step(step_loss, global_n, lr, grad_norm, taken, kept_penalty, step_means(sums, global_n, acc))


def _record(
    state: LoopState, done: _Step, epoch: float, tok_s: float, bad: bool, warning: str | None, acc: Accelerator
) -> dict[str, Any]:
    """The step's row of metrics.jsonl."""
    return {
        "split": "train",
        "step": state.step,
        "epoch": epoch,
        "loss": done.loss,
        "lr": done.lr,
        "grad_norm": done.grad_norm,
        "tokens": state.tokens,
        "tokens_per_s": tok_s,
        "time": state.elapsed,
        **({"l2sp": done.penalty} if done.penalty is not None else {}),
        **done.sums,
        **({"skipped": True} if bad else {}),
        **({"warning": warning} if warning else {}),
    }


def _after_step(run: _Fixed, state: LoopState, hooks: Hooks, steps: int, bad: bool) -> bool:
    """Evaluate, run the after-step hooks, checkpoint; raise Interrupted on Ctrl-C. True: the run is done."""
    cfg = run.cfg
    last = state.step >= steps
    if hooks.on_eval is not None and (last or (cfg.eval_every and state.step % cfg.eval_every == 0)):
        hooks.on_eval(state)  # (which also tracks the best evaluation, and may set state.stopped_early)
        run.model.train()
        last = last or state.stopped_early
    for hook in hooks.after_step:
        hook(state)
    stop = hooks.stop_requested()
    # A checkpoint is the last good state a diverged run falls back to: none after a skipped update
    # (but Ctrl-C still saves one to resume from: the skipped update left the weights as they were).
    if (last or stop or (cfg.save_every and state.step % cfg.save_every == 0)) and (stop or not bad):
        hooks.on_checkpoint(state)
    if stop:
        raise Interrupted(state.step)
    return last
