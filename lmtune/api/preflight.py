"""`estimate`: exact parameter counts, peak memory and run time before any compute is spent (optionally probed)."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from lmtune import estimate as est
from lmtune.api.setup import Prepared, Say, build_model, prepare_data, silent
from lmtune.config import ConfigLike, RunConfig, load_config
from lmtune.data.tokenize import setup_chat_template
from lmtune.errors import LmtuneError
from lmtune.estimate import measure
from lmtune.methods import transformer_blocks
from lmtune.rope import context_note
from lmtune.tokenizer import load_tokenizer
from lmtune.train.launch import resolve_mixed_precision
from lmtune.train.linear_ce import output_head
from lmtune.train.loop import Hooks, make_optimizer, total_steps, train_loop
from lmtune.train.state import LoopState


def estimate(
    config: ConfigLike, *, overrides: Sequence[str] = (), probe_steps: int = 0, report: Say | None = None
) -> est.EstimateResult:
    """Pre-flight: exact parameter counts and the run's peak memory and time, before any compute is spent.

    Nothing is written. The analytic estimate (lmtune.estimate) reads the run's own batches (real token lengths,
    padding, packing, in train_loop's order) and the model built on the meta device (shapes without memory). With
    `probe_steps` N it also runs the run's first N optimizer steps for real through `train_loop` (same data, batch,
    precision; no run directory), measures peak memory and step times, and sets the estimate against them.
    """
    say = report or silent
    cfg = load_config(config, overrides)
    if probe_steps < 0:
        raise LmtuneError(f"--probe-steps must be 0 or more, got {probe_steps}")

    # 1. Data: the training rows exactly as finetune builds them (prepare_data), and the run's steps over them.
    tokenizer = load_tokenizer(cfg.model)
    setup_chat_template(tokenizer, cfg.data.chat_template)
    prepared = prepare_data(cfg, tokenizer)
    rows, steps = prepared.rows, cfg.train.max_steps or 0
    if prepared.stream is not None:  # a stream: the plan is made of the rows of its first (up to) 50 steps
        head = min(steps, 50) * cfg.train.batch_size * cfg.train.grad_accum
        rows = prepared.rows = [row for row, _ in itertools.islice(prepared.stream.rows(0), head)]
        say(f"data.streaming: estimated from the stream's first {len(rows)} rows, repeated over {steps} steps")
    else:
        steps = total_steps(len(rows), cfg.train)
    plan = est.plan_steps(
        rows,
        cfg.train.batch_size,
        cfg.train.grad_accum,
        cfg.seed,
        steps,
        grouped=cfg.train.batching == "length_grouped",
        pad_multiple=cfg.train.pad_to_multiple_of,
    )

    # 2. The run's model, head and method (build_model) on the meta device: exact counts and shapes, no weights.
    spec, context = _meta_spec(cfg, prepared, tokenizer.pad_token_id)

    # 3. The analytic estimate: memory at the run's heaviest step, time from FLOPs and a matmul benchmark.
    device = "cuda" if torch.cuda.is_available() else "cpu"
    mixed = resolve_mixed_precision(cfg.train.mixed_precision)
    prec = est.Precision.of(spec.weight_itemsize, mixed)
    memory = est.run_memory(spec, plan, prec, device=device)
    step_tokens = [sum(mb.tokens for mb in step) for step in plan]
    throughput = _throughput(spec, plan, mixed, device)
    flops = sum(est.step_flops(spec, step) for step in plan)

    # 4. The probe: the run's first N steps for real, measured.
    probe = None
    if probe_steps:
        n = min(probe_steps, steps)
        say(f"probe: running {n} real optimizer steps of the run (nothing is saved)")
        probe = _probe(cfg, prepared, tokenizer.pad_token_id, n, steps, plan, spec, prec, mixed, device)

    return est.EstimateResult(
        config=str(config) if isinstance(config, (str, Path)) else cfg.name,
        model=cfg.model.name,
        method=cfg.method.name,
        device=device,
        precision=f"{cfg.model.dtype} weights" + (f", {mixed} autocast" if mixed != "no" else ""),
        total_params=spec.total_params,
        trainable_params=spec.trainable_params,
        lora_params=spec.lora_params,
        steps=steps,
        micro_batch_size=cfg.train.batch_size,
        grad_accum=cfg.train.grad_accum,
        tokens=sum(step_tokens),
        trained_tokens=sum(mb.trained for step in plan for mb in step),
        peak_batch=(memory.rows, memory.width),
        memory=memory,
        flops=flops,
        throughput_flops=throughput,
        time_s=flops / throughput,
        probe=probe,
        notes=est.notes(spec, device, probe) + ((context,) if context else ()),
    )


def _meta_spec(cfg: RunConfig, prepared: Prepared, pad_id: int) -> tuple[est.ModelSpec, str | None]:
    """The spec of the run's model, head and method (build_model) on the meta device: shapes, no weights; and what
    the longest row means for its positions (model.rope_scaling)."""
    built = build_model(cfg, prepared, pad_id, meta=True)
    meta = built.model
    spec = est.describe_model(meta, transformer_blocks(meta), cfg.model.gradient_checkpointing)
    chunked = cfg.train.chunked_loss and built.objective.hidden_loss is not None and output_head(meta) is not None
    longest = max((row.length for row in prepared.rows), default=0)
    context, _ = context_note(meta, cfg.model, longest)
    return dataclasses.replace(spec, chunked_loss=chunked), context


def _throughput(spec: est.ModelSpec, plan: list[list[est.MicroBatch]], mixed: str, device: str) -> float:
    """The FLOP/s this machine reaches on a step-like workload of the model's shape, at the run's median micro-batch."""
    micro_tokens = sorted(mb.tokens for step in plan for mb in step)
    autocast = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed)
    typical = micro_tokens[len(micro_tokens) // 2]
    return measure.matmul_throughput(typical, spec.hidden, spec.intermediate, autocast, device)


def _probe(
    cfg: RunConfig,
    prepared: Prepared,
    pad_id: int,
    n: int,
    steps: int,
    plan: list[list[est.MicroBatch]],
    spec: est.ModelSpec,
    prec: est.Precision,
    mixed: str,
    device: str,
) -> est.ProbeResult:
    """The run's first `n` optimizer steps for real through `train_loop` (no run directory): memory and times."""
    step_tokens = [sum(mb.tokens for mb in step) for step in plan]
    accelerator = Accelerator(mixed_precision=mixed, cpu=device == "cpu")
    set_seed(cfg.seed)
    meter = measure.MemoryMeter(device)
    # On CPU memory is measured over the first steps (one at least with AdamW's states in place) and time over
    # the rest: the memory measurement (the profiler) slows the steps it covers.
    measured = min(3, n - 1) if meter.slows_steps and n > 2 else n
    times: list[float] = []

    def step_time(state: LoopState) -> None:
        times.append(state.elapsed - sum(times))
        if state.step == measured:
            meter.stop()

    with meter:
        built = build_model(cfg, prepared, pad_id)
        model = built.model
        optimizer, scheduler = make_optimizer(model, cfg.train, steps)
        model, optimizer = accelerator.prepare(model, optimizer)
        train_loop(
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            accelerator=accelerator,
            rows=prepared.rows,
            pad_id=pad_id,
            cfg=cfg.train,
            seed=cfg.seed,
            steps=n,
            state=LoopState(),
            hooks=Hooks(after_step=[step_time]),
            objective=built.objective,
        )
        del model, optimizer, scheduler, built
    return est.ProbeResult(
        steps=n,
        memory_steps=measured,
        measures=meter.measures,
        peak=meter.peak,
        rss_peak=meter.rss_peak,
        step_seconds=tuple(times),
        estimate=est.run_memory(spec, plan[:measured], prec, device=device),
        forecast_s=measure.forecast_seconds(step_tokens, times, rate_from=measured if n > measured else 1),
    )
